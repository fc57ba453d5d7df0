package drill

import (
	"bytes"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/repository"
)

// TestFetchRate: objects read through a throttled repository come at most at its rate (after a
// burst of at most a second's worth), byte for byte; locks and listings go to the same backend.
func TestFetchRate(t *testing.T) {
	target := repository.Target{Name: "local", URL: "file://" + filepath.Join(t.TempDir(), "repo")}
	require.NoError(t, target.Normalize())
	repo, err := repository.Open(t.Context(), target)
	require.NoError(t, err)
	defer repo.Close()
	data := bytes.Repeat([]byte("etcdguard"), 3<<20/9) // 3 MiB
	_, err = repo.Save(t.Context(), "snapshots/x/snapshot.db", bytes.NewReader(data))
	require.NoError(t, err)

	require.Same(t, repo, throttledRepo(repo, 0), "no rate: the repository itself")
	slow := throttledRepo(repo, 1<<20)
	start := time.Now()
	rc, err := slow.Backend().Open(t.Context(), "snapshots/x/snapshot.db")
	require.NoError(t, err)
	got, err := io.ReadAll(rc)
	require.NoError(t, err)
	require.NoError(t, rc.Close())
	took := time.Since(start)
	require.Equal(t, data, got)
	require.GreaterOrEqual(t, took, 1900*time.Millisecond, "3 MiB at 1 MiB/s, the first MiB a burst")
	require.NoError(t, slow.Close(), "closing the throttled view leaves the repository open")
	_, err = repo.Backend().Stat(t.Context(), "snapshots/x/snapshot.db")
	require.NoError(t, err)
}
