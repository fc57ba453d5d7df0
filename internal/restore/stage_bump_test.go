package restore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.etcd.io/etcd/server/v3/storage/schema"
	"go.uber.org/zap"
)

// bumpHelperEnv names the database TestBumpHelperProcess bumps, in a child process whose files
// cannot be written past their first pages (a full disk, as far as the database can tell).
const bumpHelperEnv = "ETCDGUARD_TEST_BUMP_DB"

// TestBumpHelperProcess is the child of TestBumpWriteFailureIsAnError.
func TestBumpHelperProcess(t *testing.T) {
	path := os.Getenv(bumpHelperEnv)
	if path == "" {
		t.Skip("a helper process")
	}
	// Only the first pages (bbolt's meta pages) can be written.
	require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: 8192, Max: 8192}))
	err := bumpDB(context.Background(), path, MinBump)
	fmt.Printf("bump returned: %v\n", err)
	require.Error(t, err)
}

// TestBumpWriteFailureIsAnError: a bump whose write fails (a full disk) is an error returned to
// the caller, who then removes the staging folder and exits with a documented code; etcd's
// backend reports it through its logger's Fatal, which exits the process unless told otherwise.
func TestBumpWriteFailureIsAnError(t *testing.T) {
	path := writeKeysDB(t, 2000)
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestBumpHelperProcess$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), bumpHelperEnv+"="+path)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		t.Fatalf("the bump ended the process (exit %d) instead of returning an error:\n%s", exit.ExitCode(), out)
	}
	require.NoError(t, err, string(out))
	require.Contains(t, string(out), "bump returned: etcd's backend failed")
}

// writeKeysDB writes a database with etcd's key and meta buckets and the revisions 1 to latest,
// and returns its path.
func writeKeysDB(t *testing.T, latest int64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "db")
	be := backend.NewDefaultBackend(zap.NewNop(), path)
	tx := be.BatchTx()
	tx.LockOutsideApply()
	tx.UnsafeCreateBucket(schema.Key)
	tx.UnsafeCreateBucket(schema.Meta)
	for i := int64(1); i <= latest; i++ {
		tx.UnsafePut(schema.Key, mvcc.RevToBytes(mvcc.Revision{Main: i}, mvcc.NewRevBytes()), make([]byte, 200))
	}
	tx.Unlock()
	be.ForceCommit()
	require.NoError(t, be.Close())
	return path
}

// TestBumpStaysWithinMaxRevision: a bump is checked against the revision it is added to, the
// staged database's latest: one that would raise it past MaxBumpedRevision is refused and
// leaves the database as it was, one that reaches it exactly is applied.
func TestBumpStaysWithinMaxRevision(t *testing.T) {
	path := writeKeysDB(t, 100)
	err := bumpDB(t.Context(), path, MaxBumpedRevision-99)
	require.ErrorIs(t, err, ErrBumpTooLarge)
	require.Equal(t, int64(100), latestRevision(t, path), "nothing written")
	require.NoError(t, bumpDB(t.Context(), path, MaxBumpedRevision-100))
	require.Equal(t, MaxBumpedRevision, latestRevision(t, path))
}

func latestRevision(t *testing.T, path string) int64 {
	t.Helper()
	be := backend.NewDefaultBackend(zap.NewNop(), path)
	defer be.Close()
	var latest mvcc.Revision
	tx := be.ReadTx()
	tx.RLock()
	defer tx.RUnlock()
	require.NoError(t, tx.UnsafeForEach(schema.Key, func(k, _ []byte) error {
		if rev := mvcc.BytesToRev(k); rev.GreaterThan(latest) {
			latest = rev
		}
		return nil
	}))
	return latest.Main
}
