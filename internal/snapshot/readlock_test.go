package snapshot

import (
	"bytes"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/repository"
)

func openLocal(t *testing.T, dir string) *repository.Repository {
	t.Helper()
	r, err := repository.Open(t.Context(), repository.Target{Name: "local", URL: "file://" + dir})
	require.NoError(t, err)
	t.Cleanup(func() { r.Close() })
	r.SetLockTiming(repository.LockTiming{Wait: 500 * time.Millisecond})
	return r
}

func lockFiles(t *testing.T, dir string) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "locks", "*.json"))
	require.NoError(t, err)
	return names
}

// TestReadersLock: a read holds a shared lock, so a deletion (exclusive) waits for it, and a read
// waits for a deletion; a target that refuses the lock file is read without one, with a warning.
func TestReadersLock(t *testing.T) {
	lg := slog.New(slog.DiscardHandler)
	dir := t.TempDir()
	reader, pruner := openLocal(t, dir), openLocal(t, dir)

	release, err := lockForRead(t.Context(), lg, reader, "20261201T030000Z-0a1b2c3d")
	require.NoError(t, err)
	require.Len(t, lockFiles(t, dir), 1, "the read holds a lock")
	_, err = pruner.Lock(t.Context(), lg, repository.LockExclusive, "snapshot prune", time.Now())
	require.ErrorIs(t, err, repository.ErrLocked, "a deletion waits for the read")
	// A second reader (or a save) does not wait.
	release2, err := lockForRead(t.Context(), lg, openLocal(t, dir), "20261201T030000Z-0a1b2c3d")
	require.NoError(t, err)
	release2()
	release()
	require.Empty(t, lockFiles(t, dir), "the read released its lock")

	lk, err := pruner.Lock(t.Context(), lg, repository.LockExclusive, "snapshot prune", time.Now())
	require.NoError(t, err)
	_, err = lockForRead(t.Context(), lg, reader, "20261201T030000Z-0a1b2c3d")
	require.ErrorIs(t, err, repository.ErrLocked, "a read waits for a deletion, then gives up")
	require.NoError(t, lk.Unlock(t.Context()))

	t.Run("read-only target", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("mounting a read-only tmpfs needs root; CI runs as root")
		}
		ro := t.TempDir()
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", ro).CombinedOutput(); err != nil {
			t.Skipf("this machine refuses to mount a tmpfs: %v: %s", err, out)
		}
		t.Cleanup(func() { _ = exec.Command("umount", ro).Run() })
		require.NoError(t, os.MkdirAll(filepath.Join(ro, "snapshots"), 0o700))
		if out, err := exec.Command("mount", "-o", "remount,ro", ro).CombinedOutput(); err != nil {
			t.Skipf("this machine refuses to remount a tmpfs read-only: %v: %s", err, out)
		}
		var logs bytes.Buffer
		release, err := lockForRead(t.Context(), slog.New(slog.NewTextHandler(&logs, nil)), openLocal(t, ro), "20261201T030000Z-0a1b2c3d")
		require.NoError(t, err)
		release()
		require.Contains(t, logs.String(), "reading without a lock")
		require.Empty(t, lockFiles(t, ro))
	})
}
