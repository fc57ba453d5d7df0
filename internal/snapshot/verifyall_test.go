package snapshot

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/repository"
)

// TestVerifyAllLockedTarget: a target another run holds exclusively is waited for once, not once
// per copy it holds (a week of hourly backups would wait a week of minutes), and every copy it
// holds is reported as kept out by the lock.
func TestVerifyAllLockedTarget(t *testing.T) {
	dir := t.TempDir()
	repo := openLocal(t, dir)
	ids := []string{"20261201T030000Z-0a1b2c3d", "20261201T040000Z-0a1b2c3e", "20261201T050000Z-0a1b2c3f"}
	for _, id := range ids {
		require.NoError(t, repo.SaveManifest(t.Context(), repository.Manifest{Format: repository.FormatVersion, Kind: repository.KindFull, ID: id, DataObject: repository.DataObject{Data: "snapshots/" + id + "/snapshot.db"}}))
	}
	held, err := json.Marshal(map[string]any{"kind": "exclusive", "host": "other-node", "pid": 1, "command": "snapshot prune", "created": time.Now()})
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "locks"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "locks", "20261201T020000Z-1-00000000.json"), held, 0o600))

	ctx, cancel := context.WithTimeout(t.Context(), repository.DefaultLockWait+30*time.Second)
	defer cancel()
	rep, err := VerifyAll(ctx, []repository.Target{{Name: "local", URL: "file://" + dir}}, VerifyOptions{WorkDir: t.TempDir()})
	require.NoError(t, err)
	require.Len(t, rep.Failures, len(ids), "%+v", rep)
	for _, f := range rep.Failures {
		require.ErrorIs(t, f, repository.ErrLocked)
	}
	require.ErrorIs(t, rep.Err(), repository.ErrLocked)
}
