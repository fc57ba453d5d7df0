package prune

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/backend"
	"github.com/etcdguard/etcdguard/internal/failpoint"
	"github.com/etcdguard/etcdguard/internal/repository"
)

// storeBackups writes n backups of a day each, ending the day before now, as manifests and data
// objects (the lock and the report are what is tested here, not the snapshots: TestPruneLocal
// prunes real ones). It returns their ids, oldest first.
func storeBackups(t *testing.T, repo *repository.Repository, now time.Time, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		at := now.Add(-time.Duration(n-i) * day)
		id := at.Format("20060102T150405Z") + "-0000000" + string(rune('a'+i))
		m := repository.Manifest{Format: repository.FormatVersion, Kind: repository.KindFull, ID: id, Started: at, Created: at,
			Verification: repository.Verification{At: at, Checks: []string{"etcd-sha256-trailer", "bbolt-check", "status"}},
			DataObject:   repository.DataObject{Data: "snapshots/" + id + "/snapshot.db", Compression: repository.CompressionNone}}
		_, err := repo.Save(t.Context(), m.Data, strings.NewReader("snapshot "+id))
		require.NoError(t, err)
		require.NoError(t, repo.SaveManifest(t.Context(), m))
		ids = append(ids, id)
	}
	return ids
}

// TestPruneLocks: prune takes the exclusive lock, so a run holding any lock on the target (a save,
// a verify: shared) keeps it out, and it fails with repository.ErrLocked (exit code 6) having
// removed nothing; a lock taken over while it prunes (judged stale by another run) stops it before
// the next backup, the rest reported as not removed, with ErrLockLost.
func TestPruneLocks(t *testing.T) {
	now := time.Date(2026, 12, 2, 5, 0, 0, 0, time.UTC)
	keep := &repository.Keep{Last: 1}
	timing := &repository.LockTiming{Wait: 300 * time.Millisecond}

	t.Run("another run holds a shared lock", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "repo")
		tg := localTarget(t, dir, keep)
		repo := openRepo(t, tg)
		storeBackups(t, repo, now, 3)
		other := openRepo(t, tg)
		lk, err := other.Lock(t.Context(), nil, repository.LockShared, "snapshot save", now)
		require.NoError(t, err)
		defer lk.Unlock(t.Context())
		before := tree(t, filepath.Join(dir, "snapshots"))

		rep, err := Run(t.Context(), Options{Targets: []repository.Target{tg}, Now: func() time.Time { return now }, LockTiming: timing})
		require.ErrorIs(t, err, repository.ErrLocked)
		require.Equal(t, before, tree(t, filepath.Join(dir, "snapshots")))
		tr := rep.Targets[0]
		require.Equal(t, StateFailed, tr.State)
		require.Len(t, tr.Errors, 1)
		require.Equal(t, KindLocked, tr.Errors[0].Kind)
	})

	t.Run("the lock is taken over meanwhile", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "repo")
		tg := localTarget(t, dir, keep)
		repo := openRepo(t, tg)
		ids := storeBackups(t, repo, now, 4)
		// After the first backup is removed, the lock's file goes, as when another run judges
		// it stale and takes it over.
		failpoint.Arm(func(name string) {
			if name == stepBaseData {
				locks, _ := filepath.Glob(filepath.Join(dir, "locks", "*"))
				for _, l := range locks {
					require.NoError(t, os.Remove(l))
				}
			}
		})
		defer failpoint.Arm(func(string) {})
		rep, err := Run(t.Context(), Options{Targets: []repository.Target{tg}, Now: func() time.Time { return now }, LockTiming: timing})
		require.ErrorIs(t, err, ErrLockLost)
		require.ErrorIs(t, err, repository.ErrLocked)
		tr := rep.Targets[0]
		require.Equal(t, StateFailed, tr.State)
		require.Equal(t, 1, tr.Removed)
		require.Len(t, tr.Errors, 1)
		require.Equal(t, KindLockLost, tr.Errors[0].Kind)
		actions := map[string]string{}
		for _, br := range tr.Backups {
			actions[br.ID] = br.Action
		}
		require.Equal(t, map[string]string{ids[0]: ActionRemoved, ids[1]: ActionNotRemoved, ids[2]: ActionNotRemoved, ids[3]: ActionKeep}, actions)
		ms, _, err := repo.Manifests(t.Context())
		require.NoError(t, err)
		require.Len(t, ms, 3, "nothing removed after the lock was lost")
	})
}

// TestPruneTargets: a target without keep: is reported and never touched (not even opened), an
// offline target whose medium is absent is reported absent; neither is an error. A target that
// cannot be reached is an error of the storage's kind (exit code 8), and the others are still
// pruned.
func TestPruneTargets(t *testing.T) {
	now := time.Date(2026, 12, 2, 5, 0, 0, 0, time.UTC)
	dir := filepath.Join(t.TempDir(), "repo")
	pruned := localTarget(t, dir, &repository.Keep{Last: 1})
	storeBackups(t, openRepo(t, pruned), now, 2)
	never := localTarget(t, "/nonexistent/never-opened", nil)
	never.Name = "never"
	absent := repository.Target{Name: "tape", URL: "file://" + filepath.Join(t.TempDir(), "not-mounted"), Offline: true, Media: "tape", Keep: &repository.Keep{Monthly: 60}}
	require.NoError(t, absent.Normalize())

	rep, err := Run(t.Context(), Options{Targets: []repository.Target{never, absent, pruned}, Now: func() time.Time { return now }})
	require.NoError(t, err)
	require.Equal(t, StateNoPolicy, rep.Targets[0].State)
	require.Contains(t, rep.Targets[0].Notes[0], "never pruned")
	require.Equal(t, StateAbsent, rep.Targets[1].State)
	require.Equal(t, "monthly 60", rep.Targets[1].Policy)
	require.Equal(t, StatePruned, rep.Targets[2].State)
	require.Equal(t, 1, rep.Targets[2].Removed)

	// An S3 endpoint that does not answer.
	down := repository.Target{Name: "s3", URL: "s3://etcd-backups/prod?endpoint=http://127.0.0.1:1", Keep: &repository.Keep{Within: "30d"}}
	require.NoError(t, down.Normalize())
	t.Setenv("AWS_ACCESS_KEY_ID", "test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test")
	rep, err = Run(t.Context(), Options{Targets: []repository.Target{down, pruned}, Now: func() time.Time { return now }})
	require.ErrorIs(t, err, backend.ErrUnreachable)
	require.Equal(t, StateFailed, rep.Targets[0].State)
	require.Equal(t, backend.KindUnreachable, rep.Targets[0].Errors[0].Kind)
	require.Equal(t, StatePruned, rep.Targets[1].State, "the other target is still pruned")
}

// TestReportJSON: the JSON of a report has the same keys whatever happened, lists empty rather
// than null, for monitoring to read.
func TestReportJSON(t *testing.T) {
	rep := Report{Targets: []TargetReport{{Name: "tape", State: StateNoPolicy}, {Name: "ssd", State: StatePruned, Backups: []BackupReport{{ID: "x", Action: ActionKeep}}}}}.filled()
	data, err := json.Marshal(rep)
	require.NoError(t, err)
	var got struct {
		Targets []map[string]json.RawMessage `json:"targets"`
	}
	require.NoError(t, json.Unmarshal(data, &got))
	want := []string{"backups", "bytes_removed", "delete_markers", "errors", "kept", "locked_skipped", "name", "notes", "policy", "removed", "state", "swept", "url"}
	for _, tr := range got.Targets {
		var keys []string
		for k, v := range tr {
			keys = append(keys, k)
			require.NotEqual(t, "null", string(v), "%s is never null", k)
		}
		require.ElementsMatch(t, want, keys)
	}
	require.Contains(t, string(data), `"reasons":[]`)
	require.Contains(t, string(data), `"locked_until":null`)
	require.False(t, errors.Is(Error{Kind: KindOther, err: errors.New("x")}, backend.ErrDenied))
}
