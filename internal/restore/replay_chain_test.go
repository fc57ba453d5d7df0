package restore

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/lease/leasepb"

	"github.com/etcdguard/etcdguard/internal/deltalog"
	"github.com/etcdguard/etcdguard/internal/etcdx"
	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/snapshot"
	"github.com/etcdguard/etcdguard/internal/testcluster"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

// chainRun is a real 3-member TLS cluster, a verified full backup of it in a local target, and
// the delta log its writer streamed after it while the cluster took a mix of writes. Points are
// revisions whose live keyspace was read when they were the head (before any compaction).
type chainRun struct {
	cli    *clientv3.Client
	repo   *repository.Repository
	base   repository.Manifest
	snap   string // the base, fetched and checked
	points map[string]int64
	live   map[int64]map[string]*mvccpb.KeyValue
	// leaseID is a lease granted after the base and alive at the end; doomedID one revoked.
	leaseID, doomedID int64
	last              int64
}

func streamedChain(t *testing.T, version string) *chainRun {
	t.Helper()
	ctx := t.Context()
	c, err := testcluster.Start(ctx, testcluster.Options{Size: 3, TLS: true, Command: []string{testenv.Etcd(t, version, "etcd")}, Dir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	cli, err := c.Client(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { cli.Close() })
	r := &chainRun{cli: cli, points: map[string]int64{}, live: map[int64]map[string]*mvccpb.KeyValue{}}
	put := func(k, v string, opts ...clientv3.OpOption) int64 {
		resp, err := cli.Put(ctx, k, v, opts...)
		require.NoError(t, err)
		return resp.Header.Revision
	}
	point := func(name string, rev int64) {
		r.points[name] = rev
		r.live[rev] = liveAt(t, cli, rev)
	}
	for i := range 50 {
		put(fmt.Sprintf("/registry/pods/ns/p%02d", i%30), fmt.Sprintf("v%d", i))
	}
	old, err := cli.Grant(ctx, 3600)
	require.NoError(t, err)
	put("/registry/leases/old", "a", clientv3.WithLease(old.ID))

	ecfg := etcdx.Config{Endpoints: c.Endpoints(), CACert: c.PKI.CAFile, Cert: c.ClientCertFile, Key: c.ClientKeyFile}
	r.repo, r.base = backupTo(t, ecfg)

	wcli, err := ecfg.ClusterClient(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { wcli.Close() })
	logs := &testenv.Logs{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("delta writer's log:\n%s", logs)
		}
	})
	var durable atomic.Int64
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := deltalog.Stream(sctx, deltalog.StreamOptions{
			Client: wcli, Local: r.repo, SealInterval: 300 * time.Millisecond,
			Logger:    slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
			OnDurable: func(p deltalog.Progress) { durable.Store(p.Revision) },
		}, r.base, nil)
		done <- err
	}()

	point("right-after-the-base", put("/registry/pods/ns/p00", "first-after"))
	for i := range 120 {
		switch i % 6 {
		case 0, 1:
			put(fmt.Sprintf("/registry/pods/ns/p%02d", (i*7)%40), fmt.Sprintf("after-%d", i))
		case 2:
			_, err := cli.Delete(ctx, fmt.Sprintf("/registry/pods/ns/p%02d", (i*3)%30))
			require.NoError(t, err)
		case 3: // one revision, several events
			resp, err := cli.Txn(ctx).Then(
				clientv3.OpPut(fmt.Sprintf("/registry/txn/a%03d", i), "a"),
				clientv3.OpDelete(fmt.Sprintf("/registry/pods/ns/p%02d", (i*5)%30)),
				clientv3.OpPut(fmt.Sprintf("/registry/txn/b%03d", i), "b"),
			).Commit()
			require.NoError(t, err)
			if i == 63 {
				point("a-txn", resp.Header.Revision)
			}
		case 4:
			if r.leaseID == 0 {
				l, err := cli.Grant(ctx, 600)
				require.NoError(t, err)
				r.leaseID = int64(l.ID)
			}
			put(fmt.Sprintf("/registry/events/e%03d", i), "event", clientv3.WithLease(clientv3.LeaseID(r.leaseID)))
		case 5:
			if i == 59 {
				// A compaction the watch is past: the chain goes on, and a restore to the
				// revision right after it replays across it.
				head := put("/registry/pods/ns/compact", "c")
				_, err := cli.Compact(ctx, head-5)
				require.NoError(t, err)
				point("right-after-a-compaction", put("/registry/pods/ns/after-compact", "x"))
			}
			put("/registry/leases/old", fmt.Sprintf("a%d", i), clientv3.WithLease(old.ID))
		}
		if i == 30 {
			time.Sleep(400 * time.Millisecond) // a seal between segments
		}
	}
	doomed, err := cli.Grant(ctx, 600)
	require.NoError(t, err)
	r.doomedID = int64(doomed.ID)
	put("/registry/doomed/x", "x", clientv3.WithLease(doomed.ID))
	_, err = cli.Revoke(ctx, doomed.ID)
	require.NoError(t, err)
	time.Sleep(2 * deltalog.DefaultLeasePoll) // the writer lists leases and sees it gone
	r.last = put("/registry/pods/ns/last", "last")
	point("the-last", r.last)

	require.Eventually(t, func() bool { return durable.Load() >= r.last }, 30*time.Second, 20*time.Millisecond, "the writer makes the last revision durable")
	stop()
	require.NoError(t, <-done)

	r.snap = fetchBase(t, r.repo, r.base)
	return r
}

// backupTo takes a verified full backup of the cluster into a new local target and returns the
// target's repository and the backup.
func backupTo(t *testing.T, ecfg etcdx.Config) (*repository.Repository, repository.Manifest) {
	t.Helper()
	target := repository.Target{Name: "local", URL: "file://" + filepath.Join(t.TempDir(), "repo")}
	require.NoError(t, target.Normalize())
	saved, err := snapshot.Save(t.Context(), snapshot.SaveOptions{Etcd: ecfg, Targets: []repository.Target{target}, WorkDir: t.TempDir()})
	require.NoError(t, err)
	repo, err := repository.Open(t.Context(), target)
	require.NoError(t, err)
	t.Cleanup(func() { repo.Close() })
	return repo, saved.Manifest
}

// fetchBase fetches and checks a backup from repo into a plain snapshot file.
func fetchBase(t *testing.T, repo *repository.Repository, base repository.Manifest) string {
	t.Helper()
	cat, err := snapshot.Load(t.Context(), []repository.Target{repo.Target})
	require.NoError(t, err)
	defer cat.Close()
	e, err := cat.Find(base.ID)
	require.NoError(t, err)
	snap := filepath.Join(t.TempDir(), "base.db")
	_, _, err = snapshot.FetchBest(t.Context(), nil, e, nil, snap)
	require.NoError(t, err)
	return snap
}

// TestChainReplayIsExact: the delta log a real writer streamed from a 3-member TLS cluster of
// etcd 3.5 and 3.6 during puts, deletes, multi-key txns, keys on leases, a compaction and a
// revocation, replayed onto its base up to revision N, holds key by key what the live cluster
// held at N, for N right after the base, a txn's revision, the revision right after a compaction
// and the last; at the last, the lease granted after the base is restored with at most its TTL
// left, and the revoked one is not there.
func TestChainReplayIsExact(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			r := streamedChain(t, version)
			chain, err := deltalog.LoadChain(t.Context(), r.repo, r.base)
			require.NoError(t, err)
			require.Empty(t, chain.Problem)
			require.Nil(t, chain.End, "the writer stopped: the chain stays open for the next one")
			require.Zero(t, chain.Open, "the writer sealed its open segment when it stopped")
			require.Equal(t, r.last, chain.Reach)
			require.GreaterOrEqual(t, len(chain.Segments), 2, "sealed more than once")

			for name, n := range r.points {
				t.Run(name, func(t *testing.T) {
					o, _ := restoreOpts(t, r.snap, "pitr-"+name)
					s, err := RestoreStaging(t.Context(), o)
					require.NoError(t, err)
					rd := chain.NewReader(t.Context(), deltalog.ReadOptions{UpTo: n})
					defer rd.Close()
					res, err := s.Replay(t.Context(), NewChainSource(rd, time.Time{}), n)
					require.NoError(t, err)
					require.Equal(t, n, res.To)
					db := filepath.Join(s.Dir, "member", "snap", "db")
					requireSameKeyspace(t, r.live[n], keyspaceAt(t, db, n), "replayed to "+name)
					if n == r.last {
						require.Empty(t, res.LeasesNotRestored, "every lease the keys use is restored")
						leases := leaseBucket(t, db)
						require.Contains(t, leases, r.leaseID)
						require.Equal(t, int64(600), leases[r.leaseID].TTL)
						require.LessOrEqual(t, leases[r.leaseID].RemainingTTL, int64(600))
						require.Positive(t, leases[r.leaseID].RemainingTTL)
						require.NotContains(t, leases, r.doomedID, "the revoked lease")
					}
				})
			}
		})
	}
}

// leaseBucket reads the leases of the database at path.
func leaseBucket(t *testing.T, path string) map[int64]*leasepb.Lease {
	t.Helper()
	db, err := bbolt.Open(path, 0o400, &bbolt.Options{ReadOnly: true})
	require.NoError(t, err)
	defer db.Close()
	out := map[int64]*leasepb.Lease{}
	require.NoError(t, db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket([]byte("lease")).ForEach(func(k, v []byte) error {
			l := &leasepb.Lease{}
			require.NoError(t, l.Unmarshal(v))
			out[int64(binary.BigEndian.Uint64(k))] = l
			return nil
		})
	}))
	return out
}
