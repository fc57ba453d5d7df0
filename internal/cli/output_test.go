package cli

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestProgress(t *testing.T) {
	now := time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	var out bytes.Buffer
	p := newProgress(&out, clock)
	now = now.Add(2 * time.Second)
	p.update(200<<20, 1000<<20)
	require.Contains(t, out.String(), "200.0 MiB  20% of ~1000.0 MiB, 100.0 MiB/s, 8s left")
	out.Reset()
	now = now.Add(100 * time.Millisecond)
	p.update(210<<20, 1000<<20)
	require.Empty(t, out.String(), "updates are throttled")
}

func TestHumanBytesAndAge(t *testing.T) {
	require.Equal(t, "512 B", humanBytes(512))
	require.Equal(t, "1.5 KiB", humanBytes(1536))
	require.Equal(t, "2.1 GiB", humanBytes(2254857830))
	now := time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC)
	require.Equal(t, "5h00m", humanAge(now, now.Add(-5*time.Hour)))
	require.Equal(t, "3d", humanAge(now, now.Add(-75*time.Hour)))
	require.Equal(t, "30m", humanAge(now, now.Add(-30*time.Minute)))
}
