package deltalog

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestReceiptTimes: a revision seen again keeps the time it was first received while the ring
// holds it; once it has been pushed out (the ring is full of newer ones), and for a revision
// never seen, the time given is used.
func TestReceiptTimes(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 5, 0, 0, 0, time.UTC)
	r := NewReceiptTimes(4)
	for rev := int64(10); rev < 16; rev++ {
		require.Equal(t, t0.Add(time.Duration(rev)*time.Second), r.observe(rev, t0.Add(time.Duration(rev)*time.Second)))
	}
	later := t0.Add(time.Hour)
	for rev := int64(12); rev < 16; rev++ {
		require.Equal(t, t0.Add(time.Duration(rev)*time.Second), r.observe(rev, later), "revision %d is in the ring", rev)
	}
	require.Equal(t, later, r.observe(11, later), "pushed out")
	require.Equal(t, later, r.observe(16, later), "new")
	require.Equal(t, later, r.observe(16, later.Add(time.Minute)), "remembered now")
	var none *ReceiptTimes
	require.Equal(t, later, none.observe(3, later))
}
