package restore

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"go.etcd.io/bbolt"
	clientv3 "go.etcd.io/etcd/client/v3"
	clientsnapshot "go.etcd.io/etcd/client/v3/snapshot"
	etcdutlsnapshot "go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"

	"github.com/etcdguard/etcdguard/internal/datadir"
	"github.com/etcdguard/etcdguard/internal/snapshot"
	"github.com/etcdguard/etcdguard/internal/testcluster"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

// realSnapshot saves a snapshot of a real one-member cluster of the given etcd version that has
// seen puts, overwrites, deletes and a compaction, and returns its path and revision.
func realSnapshot(t *testing.T, version string) (string, int64) {
	t.Helper()
	c, err := testcluster.Start(t.Context(), testcluster.Options{Command: []string{testenv.Etcd(t, version, "etcd")}, Dir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	cli, err := c.Client(t.Context())
	require.NoError(t, err)
	defer cli.Close()
	for i := range 300 {
		_, err := cli.Put(t.Context(), fmt.Sprintf("/registry/k%03d", i%120), fmt.Sprintf("v%d", i))
		require.NoError(t, err)
	}
	_, err = cli.Delete(t.Context(), "/registry/k01", clientv3.WithPrefix())
	require.NoError(t, err)
	resp, err := cli.Put(t.Context(), "/registry/last", "x")
	require.NoError(t, err)
	_, err = cli.Compact(t.Context(), resp.Header.Revision-50, clientv3.WithCompactPhysical())
	require.NoError(t, err)
	path := filepath.Join(t.TempDir(), "snapshot.db")
	_, err = clientsnapshot.SaveWithVersion(t.Context(), zap.NewNop(), clientv3.Config{Endpoints: []string{c.Members()[0].ClientURL}}, path)
	require.NoError(t, err)
	return path, resp.Header.Revision
}

// buckets reads every bucket of a bbolt database: name -> key -> value.
func buckets(t *testing.T, path string) map[string]map[string]string {
	t.Helper()
	db, err := bbolt.Open(path, 0o400, &bbolt.Options{ReadOnly: true})
	require.NoError(t, err)
	defer db.Close()
	out := map[string]map[string]string{}
	require.NoError(t, db.View(func(tx *bbolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bbolt.Bucket) error {
			kv := map[string]string{}
			out[string(name)] = kv
			return b.ForEach(func(k, v []byte) error { kv[string(k)] = string(v); return nil })
		})
	}))
	return out
}

// TestStagedRestoreMatchesEtcdutl: a restore done in steps (RestoreStaging, Bump, Install, and
// RestoreDataDir composing them) gives the data dir etcdutl's one-call restore with
// --bump-revision and --mark-compacted gives: the same buckets, keys and values (the bump's
// empty entry among them), revision, compaction marks, consistent index and status, and the same
// WAL and raft snapshot files. Without a bump, the same as etcdutl's restore without one.
func TestStagedRestoreMatchesEtcdutl(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			snap, rev := realSnapshot(t, version)
			for _, bump := range []uint64{0, 1_000_000} {
				t.Run(fmt.Sprintf("bump-%d", bump), func(t *testing.T) {
					opts := DataDirOptions{Snapshot: snap, Name: "m1", InitialCluster: "m1=https://10.0.0.1:2380",
						InitialClusterToken: "etcdguard-test", PeerURLs: []string{"https://10.0.0.1:2380"}}
					ref := filepath.Join(t.TempDir(), "ref")
					require.NoError(t, etcdutlRestore(etcdutlsnapshot.RestoreConfig{SnapshotPath: snap, Name: opts.Name, OutputDataDir: ref,
						PeerURLs: opts.PeerURLs, InitialCluster: opts.InitialCluster, InitialClusterToken: opts.InitialClusterToken,
						RevisionBump: bump, MarkCompacted: bump > 0}))

					stepped := filepath.Join(t.TempDir(), "member")
					o := opts
					o.DataDir = stepped
					s, err := RestoreStaging(t.Context(), o)
					require.NoError(t, err)
					require.DirExists(t, s.Dir)
					require.NoDirExists(t, stepped, "nothing is in place before Install")
					require.NoError(t, s.Bump(t.Context(), bump))
					res, err := s.Install(t.Context())
					require.NoError(t, err)
					require.Equal(t, bump, res.Bump)
					require.NoDirExists(t, s.Dir)

					composed := filepath.Join(t.TempDir(), "member")
					o.DataDir, o.Bump = composed, bump
					res, err = RestoreDataDir(t.Context(), o)
					require.NoError(t, err)
					require.Equal(t, composed, res.DataDir)
					require.Equal(t, bump, res.Bump)

					refDB := filepath.Join(ref, "member", "snap", "db")
					want, err := datadir.InspectDB(t.Context(), refDB)
					require.NoError(t, err)
					require.True(t, want.OK, want.Err)
					wantStatus, err := snapshot.ReadStatus(t.Context(), refDB)
					require.NoError(t, err)
					if bump > 0 {
						require.Equal(t, rev+int64(bump), want.Revision, "etcdutl bumped the revision")
						require.Equal(t, rev+int64(bump), want.ScheduledCompactRevision, "and marked it compacted")
						require.Equal(t, 1, wantStatus.BumpKeys)
					}
					for _, dir := range []string{stepped, composed} {
						db := filepath.Join(dir, "member", "snap", "db")
						got, err := datadir.InspectDB(t.Context(), db)
						require.NoError(t, err)
						require.True(t, got.OK, got.Err)
						require.Equal(t, want.Revision, got.Revision)
						require.Equal(t, want.CompactRevision, got.CompactRevision)
						require.Equal(t, want.ScheduledCompactRevision, got.ScheduledCompactRevision)
						require.Equal(t, want.ConsistentIndex, got.ConsistentIndex)
						require.Equal(t, want.Term, got.Term)
						require.Equal(t, want.Voters, got.Voters)
						gotStatus, err := snapshot.ReadStatus(t.Context(), db)
						require.NoError(t, err)
						gotStatus.TotalSize, wantStatus.TotalSize = 0, 0 // page layout may differ
						require.Equal(t, wantStatus, gotStatus)
						require.Equal(t, buckets(t, refDB), buckets(t, db), "every bucket, key and value")
						for _, sub := range []string{"wal", "snap"} {
							entries, err := os.ReadDir(filepath.Join(ref, "member", sub))
							require.NoError(t, err)
							for _, e := range entries {
								if e.Name() == "db" {
									continue
								}
								a, err := os.ReadFile(filepath.Join(ref, "member", sub, e.Name()))
								require.NoError(t, err)
								b, err := os.ReadFile(filepath.Join(dir, "member", sub, e.Name()))
								require.NoError(t, err)
								require.True(t, bytes.Equal(a, b), "%s/%s is etcdutl's", sub, e.Name())
							}
						}
						rep, err := datadir.Inspect(t.Context(), dir)
						require.NoError(t, err)
						require.True(t, rep.Intact(), "%v", rep.Problems)
					}
				})
			}
		})
	}
}

// TestRestoreHonoursContext: a restore whose context is cancelled stops before it moves the old
// data dir, leaves it as it was, and leaves no staging folder behind.
func TestRestoreHonoursContext(t *testing.T) {
	snap, _ := realSnapshot(t, "3.6")
	parent := t.TempDir()
	dataDir := filepath.Join(parent, "member")
	require.NoError(t, os.MkdirAll(dataDir, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(dataDir, "old"), []byte("old data"), 0o600))
	opts := DataDirOptions{Snapshot: snap, Name: "m1", InitialCluster: "m1=http://127.0.0.1:1", PeerURLs: []string{"http://127.0.0.1:1"},
		DataDir: dataDir, Bump: MinBump, Quarantine: true}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := RestoreDataDir(ctx, opts)
	require.ErrorIs(t, err, context.Canceled)

	// Cancelled between the steps: after staging, before the bump and before the install.
	for _, at := range []string{"bump", "install"} {
		ctx, cancel := context.WithCancel(t.Context())
		s, err := RestoreStaging(ctx, opts)
		require.NoError(t, err)
		if at == "bump" {
			cancel()
			require.ErrorIs(t, s.Bump(ctx, MinBump), context.Canceled)
			s.Discard()
		} else {
			require.NoError(t, s.Bump(ctx, MinBump))
			cancel()
			_, err = s.Install(ctx)
			require.ErrorIs(t, err, context.Canceled)
		}
	}
	entries, err := os.ReadDir(parent)
	require.NoError(t, err)
	require.Len(t, entries, 1, "no staging folder, nothing quarantined")
	b, err := os.ReadFile(filepath.Join(dataDir, "old"))
	require.NoError(t, err)
	require.Equal(t, "old data", string(b))
}

// TestRestoreMemberReportsLeftovers: a restore killed before it could clean up (SIGKILL, a
// crash) leaves its staging folder and its scratch copy of the snapshot beside the data dir,
// both holding the cluster's data in clear. The next restore there names them, for the operator
// to remove: it does not remove them itself, since they may be a restore running now.
func TestRestoreMemberReportsLeftovers(t *testing.T) {
	snap, _ := realSnapshot(t, "3.6")
	parent := t.TempDir()
	dataDir := filepath.Join(parent, "member")
	staging := filepath.Join(parent, ".member.etcdguard-restore-0badf00d")
	scratch := filepath.Join(parent, ".etcdguard-restore-snapshot-123456")
	for _, dir := range []string{staging, scratch} {
		require.NoError(t, os.MkdirAll(dir, 0o700))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "db"), []byte("secrets"), 0o600))
	}
	rep, err := RestoreMember(t.Context(), MemberOptions{From: snap, DataDir: dataDir, Name: "m1",
		InitialCluster: "m1=http://127.0.0.1:1", PeerURLs: []string{"http://127.0.0.1:1"}, NoBump: true})
	require.NoError(t, err)
	notes := fmt.Sprint(rep.Notes)
	require.Contains(t, notes, staging)
	require.Contains(t, notes, scratch)
	for _, dir := range []string{staging, scratch} {
		require.DirExists(t, dir, "reported, not removed")
	}
}

// TestRestoreIntoFileIsBadInput: a data dir that is a file, not a folder, is bad input (exit
// code 2) with a message that says so, and the file is left as it was.
func TestRestoreIntoFileIsBadInput(t *testing.T) {
	snap, _ := realSnapshot(t, "3.6")
	dataDir := filepath.Join(t.TempDir(), "member")
	require.NoError(t, os.WriteFile(dataDir, []byte("not a data dir"), 0o600))
	_, err := RestoreDataDir(t.Context(), DataDirOptions{Snapshot: snap, Name: "m1", InitialCluster: "m1=http://127.0.0.1:1",
		PeerURLs: []string{"http://127.0.0.1:1"}, DataDir: dataDir, Quarantine: true})
	require.ErrorIs(t, err, ErrInput)
	require.ErrorContains(t, err, "not a folder")
	b, err := os.ReadFile(dataDir)
	require.NoError(t, err)
	require.Equal(t, "not a data dir", string(b))
	entries, err := os.ReadDir(filepath.Dir(dataDir))
	require.NoError(t, err)
	require.Len(t, entries, 1, "no staging folder")
}

// TestRestoreIntoMountPointIsRefused: a data dir that is a mount point (a disk mounted at
// /var/lib/etcd) cannot be moved aside or replaced by a rename; it is refused as bad input
// before anything is built, with what to do instead, and left as it was. Needs root to mount.
func TestRestoreIntoMountPointIsRefused(t *testing.T) {
	snap, _ := realSnapshot(t, "3.6")
	dataDir := filepath.Join(t.TempDir(), "member")
	require.NoError(t, os.Mkdir(dataDir, 0o700))
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", dataDir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (not root?): %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", dataDir).Run() })
	for _, quarantine := range []bool{false, true} {
		if quarantine {
			require.NoError(t, os.WriteFile(filepath.Join(dataDir, "old"), []byte("old data"), 0o600))
		}
		_, err := RestoreDataDir(t.Context(), DataDirOptions{Snapshot: snap, Name: "m1", InitialCluster: "m1=http://127.0.0.1:1",
			PeerURLs: []string{"http://127.0.0.1:1"}, DataDir: dataDir, Quarantine: quarantine})
		require.ErrorIs(t, err, ErrInput)
		require.ErrorContains(t, err, "mount point")
		entries, err := os.ReadDir(filepath.Dir(dataDir))
		require.NoError(t, err)
		require.Len(t, entries, 1, "no staging folder, nothing quarantined")
	}
	b, err := os.ReadFile(filepath.Join(dataDir, "old"))
	require.NoError(t, err)
	require.Equal(t, "old data", string(b))
}
