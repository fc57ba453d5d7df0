package agent

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/drill"
)

// TestLastDrillSkipsInterrupted: a drill the agent's stop (or a Ctrl-C of `etcdguard drill`)
// interrupted is in the history, but says nothing of the backup: the metrics keep the newest
// drill that passed or failed, so EtcdguardDrillFailed does not fire after a restart mid-drill.
func TestLastDrillSkipsInterrupted(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	passed := drill.Result{Started: now.Add(-2 * time.Hour), Finished: now.Add(-2*time.Hour + time.Minute), Target: "s3", OK: true, Revision: 42}
	stopped := drill.Result{Started: now.Add(-time.Hour), Finished: now.Add(-time.Hour + time.Second), Target: "s3", Reason: drill.ReasonInterrupted}
	for _, r := range []drill.Result{passed, stopped} {
		_, err := drill.Record(dir, r, 0)
		require.NoError(t, err)
	}
	a := &Agent{opts: Options{Now: func() time.Time { return now }}}
	got := a.lastDrillResult(DrillSettings{Enabled: true, Options: drill.Options{StateDir: dir}})
	require.NotNil(t, got)
	require.True(t, got.OK, "the newest drill with a verdict passed; got %+v", *got)
	require.Equal(t, int64(42), got.Revision)

	dir = t.TempDir() // only an interrupted drill: no verdict yet
	_, err := drill.Record(dir, stopped, 0)
	require.NoError(t, err)
	require.Nil(t, a.lastDrillResult(DrillSettings{Enabled: true, Options: drill.Options{StateDir: dir}}))
}
