package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	clientsnapshot "go.etcd.io/etcd/client/v3/snapshot"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.uber.org/zap"

	"github.com/etcdguard/etcdguard/internal/datadir"
	"github.com/etcdguard/etcdguard/internal/snapshot"
	"github.com/etcdguard/etcdguard/internal/testcluster"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

// history is a real cluster's snapshot and every revision after it, as a watch delivered them.
type history struct {
	cli     *clientv3.Client
	snap    string // the snapshot file
	snapRev int64  // its revision, read from the snapshot itself
	// revs are the revisions from a few before snapRev (to overlap the snapshot) to the last.
	revs []Revision
	// txnRev is a revision of one txn with puts and deletes; leaseRev one that attached keys
	// to a lease granted after the snapshot (leaseID).
	txnRev, leaseRev, last int64
	leaseID                int64
}

// after returns the revisions after rev.
func (h *history) after(rev int64) []Revision {
	for i, r := range h.revs {
		if r.Rev > rev {
			return h.revs[i:]
		}
	}
	return nil
}

// liveHistory starts a one-member cluster of the given etcd version, writes keys (some on a
// lease), compacts, saves a snapshot, then writes a mix of puts, overwrites, deletes, multi-key txns of
// puts and deletes, keys on a new lease and a revoked lease, and collects every event of a watch
// started a few revisions before the snapshot's.
func liveHistory(t *testing.T, version string) *history {
	t.Helper()
	ctx := t.Context()
	c, err := testcluster.Start(ctx, testcluster.Options{Command: []string{testenv.Etcd(t, version, "etcd")}, Dir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	cli, err := c.Client(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { cli.Close() })
	h := &history{cli: cli}

	put := func(k, v string, opts ...clientv3.OpOption) int64 {
		resp, err := cli.Put(ctx, k, v, opts...)
		require.NoError(t, err)
		return resp.Header.Revision
	}
	old, err := cli.Grant(ctx, 3600)
	require.NoError(t, err)
	for i := range 60 {
		put(fmt.Sprintf("/registry/pods/ns/p%02d", i%40), fmt.Sprintf("v%d", i))
	}
	put("/registry/leases/old-a", "a", clientv3.WithLease(old.ID))
	compactAt := put("/registry/leases/old-b", "b", clientv3.WithLease(old.ID))
	for i := range 10 {
		put(fmt.Sprintf("/registry/pods/ns/p%02d", i), "before-the-snapshot")
	}
	// The snapshot's history is compacted below the revisions the watch starts from, as a
	// live cluster's is.
	_, err = cli.Compact(ctx, compactAt, clientv3.WithCompactPhysical())
	require.NoError(t, err)

	h.snap = filepath.Join(t.TempDir(), "snapshot.db")
	_, err = clientsnapshot.SaveWithVersion(ctx, zap.NewNop(), clientv3.Config{Endpoints: []string{c.Members()[0].ClientURL}}, h.snap)
	require.NoError(t, err)
	st, err := snapshot.ReadStatus(ctx, h.snap)
	require.NoError(t, err)
	h.snapRev = st.Revision

	for i := range 80 {
		switch i % 8 {
		case 0, 1, 2: // overwrites of keys of the snapshot, and new keys
			put(fmt.Sprintf("/registry/pods/ns/p%02d", (i*7)%50), fmt.Sprintf("after-%d", i))
		case 3: // a delete of one key
			_, err := cli.Delete(ctx, fmt.Sprintf("/registry/pods/ns/p%02d", (i*3)%40))
			require.NoError(t, err)
		case 4: // a txn of puts and deletes: one revision, several events
			resp, err := cli.Txn(ctx).Then(
				clientv3.OpPut(fmt.Sprintf("/registry/txn/a%02d", i), "a"),
				clientv3.OpDelete(fmt.Sprintf("/registry/pods/ns/p%02d", (i*5)%40)),
				clientv3.OpPut(fmt.Sprintf("/registry/txn/b%02d", i), "b"),
				clientv3.OpPut(fmt.Sprintf("/registry/pods/ns/p%02d", (i*11)%40+1), "in-txn"),
			).Commit()
			require.NoError(t, err)
			h.txnRev = resp.Header.Revision
		case 5: // a delete of a range of keys: one revision, several events
			_, err := cli.Delete(ctx, fmt.Sprintf("/registry/txn/a%d", i/10), clientv3.WithPrefix())
			require.NoError(t, err)
		case 6: // keys on a lease granted after the snapshot
			if h.leaseID == 0 {
				l, err := cli.Grant(ctx, 3600)
				require.NoError(t, err)
				h.leaseID = int64(l.ID)
			}
			h.leaseRev = put(fmt.Sprintf("/registry/events/e%02d", i), "event", clientv3.WithLease(clientv3.LeaseID(h.leaseID)))
		case 7: // a key of the old lease overwritten without it, the other kept
			put("/registry/leases/old-a", fmt.Sprintf("a%d", i))
		}
	}
	// A lease revoked: its keys are deleted in one revision.
	doomed, err := cli.Grant(ctx, 3600)
	require.NoError(t, err)
	put("/registry/doomed/x", "x", clientv3.WithLease(doomed.ID))
	put("/registry/doomed/y", "y", clientv3.WithLease(doomed.ID))
	_, err = cli.Revoke(ctx, doomed.ID)
	require.NoError(t, err)
	h.last = put("/registry/pods/ns/last", "last")

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var events []*mvccpb.Event
	for resp := range cli.Watch(wctx, "", clientv3.WithPrefix(), clientv3.WithRev(h.snapRev-4)) {
		require.NoError(t, resp.Err())
		for _, ev := range resp.Events {
			events = append(events, (*mvccpb.Event)(ev))
		}
		if len(events) > 0 && events[len(events)-1].Kv.ModRevision == h.last {
			break
		}
	}
	for _, ev := range events {
		if n := len(h.revs); n > 0 && h.revs[n-1].Rev == ev.Kv.ModRevision {
			h.revs[n-1].Events = append(h.revs[n-1].Events, ev)
			continue
		}
		h.revs = append(h.revs, Revision{Rev: ev.Kv.ModRevision, Events: []*mvccpb.Event{ev}})
	}
	require.Equal(t, h.last-h.snapRev+5, int64(len(h.revs)), "one entry per revision, contiguous")
	require.Greater(t, len(h.revRecord(h.txnRev).Events), 2, "the txn is one revision of several events")
	return h
}

func (h *history) revRecord(rev int64) Revision {
	for _, r := range h.revs {
		if r.Rev == rev {
			return r
		}
	}
	return Revision{}
}

// revisionSlice is a RevisionSource over revisions in memory; it calls onNext, if set, with
// each revision it returns.
type revisionSlice struct {
	revs   []Revision
	onNext func(Revision)
}

func (s *revisionSlice) Next() (Revision, error) {
	if len(s.revs) == 0 {
		return Revision{}, io.EOF
	}
	r := s.revs[0]
	s.revs = s.revs[1:]
	if s.onNext != nil {
		s.onNext(r)
	}
	return r, nil
}

func source(parts ...[]Revision) *revisionSlice {
	var all []Revision
	for _, p := range parts {
		all = append(all, p...)
	}
	return &revisionSlice{revs: all}
}

// keyspaceAt reads the database at path as it was at revision rev, straight from bbolt: the
// newest entry of each key at or below rev, and none for a key whose newest is a tombstone.
func keyspaceAt(t *testing.T, path string, rev int64) map[string]*mvccpb.KeyValue {
	t.Helper()
	db, err := bbolt.Open(path, 0o400, &bbolt.Options{ReadOnly: true})
	require.NoError(t, err)
	defer db.Close()
	out := map[string]*mvccpb.KeyValue{}
	require.NoError(t, db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket([]byte("key")).ForEach(func(k, v []byte) error {
			if mvcc.BytesToRev(k).Main > rev {
				return nil
			}
			kv := &mvccpb.KeyValue{}
			require.NoError(t, kv.Unmarshal(v))
			if mvcc.IsTombstone(k) {
				delete(out, string(kv.Key))
			} else {
				out[string(kv.Key)] = kv
			}
			return nil
		})
	}))
	return out
}

// liveAt is the live cluster's keyspace at revision rev.
func liveAt(t *testing.T, cli *clientv3.Client, rev int64) map[string]*mvccpb.KeyValue {
	t.Helper()
	resp, err := cli.Get(t.Context(), "", clientv3.WithPrefix(), clientv3.WithRev(rev))
	require.NoError(t, err)
	out := map[string]*mvccpb.KeyValue{}
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = kv
	}
	return out
}

// requireSameKeyspace compares two keyspaces key by key: value, create and mod revision,
// version and lease.
func requireSameKeyspace(t *testing.T, want, got map[string]*mvccpb.KeyValue, what string) {
	t.Helper()
	require.Len(t, got, len(want), what)
	for k, w := range want {
		g, ok := got[k]
		require.True(t, ok, "%s: key %s missing", what, k)
		require.Equal(t, string(w.Value), string(g.Value), "%s: value of %s", what, k)
		require.Equal(t, w.CreateRevision, g.CreateRevision, "%s: create_revision of %s", what, k)
		require.Equal(t, w.ModRevision, g.ModRevision, "%s: mod_revision of %s", what, k)
		require.Equal(t, w.Version, g.Version, "%s: version of %s", what, k)
		require.Equal(t, w.Lease, g.Lease, "%s: lease of %s", what, k)
	}
}

// restoreOpts are the options of a one-member restore into a new folder, with free ports.
func restoreOpts(t *testing.T, snap, token string) (DataDirOptions, string) {
	t.Helper()
	ports, err := testcluster.FreePorts(2)
	require.NoError(t, err)
	peer := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	return DataDirOptions{Snapshot: snap, Name: "m1", DataDir: filepath.Join(t.TempDir(), "m1"), InitialCluster: "m1=" + peer,
		InitialClusterToken: token, PeerURLs: []string{peer}}, fmt.Sprintf("http://127.0.0.1:%d", ports[1])
}

// startRestored starts an etcd of the given version on a restored data dir, as a new
// one-member cluster with the restore's token, and returns a client of it.
func startRestored(t *testing.T, version string, o DataDirOptions, clientURL string) *clientv3.Client {
	t.Helper()
	logf, err := os.Create(filepath.Join(t.TempDir(), "etcd.log"))
	require.NoError(t, err)
	defer logf.Close()
	cmd := exec.Command(testenv.Etcd(t, version, "etcd"), "--name="+o.Name, "--data-dir="+o.DataDir,
		"--listen-client-urls="+clientURL, "--advertise-client-urls="+clientURL,
		"--listen-peer-urls="+o.PeerURLs[0], "--initial-advertise-peer-urls="+o.PeerURLs[0],
		"--initial-cluster="+o.InitialCluster, "--initial-cluster-state=new", "--initial-cluster-token="+o.InitialClusterToken)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	runtime.LockOSThread() // Pdeathsig follows the thread that started the child
	require.NoError(t, cmd.Start())
	runtime.UnlockOSThread()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{clientURL}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	require.NoError(t, err)
	t.Cleanup(func() { cli.Close() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		_, err := cli.Get(ctx, "health")
		cancel()
		if err == nil {
			return cli
		}
		select {
		case err := <-done:
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("the restored member exited: %v\n%s", err, log)
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("the restored member did not answer: %v\n%s", err, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestReplayIsExact: a snapshot of a real cluster restored and replayed up to revision N
// holds, key by key, what the live cluster held at N (value, create and mod revision, version,
// lease), for N right after the snapshot, inside the run, a revision that is a txn of several
// events and the last revision; the consistent index and term are etcd's restore's; after the
// bump and install, a real etcd of the same version starts on it as a new cluster and serves
// those keys. Revisions of the source already in the snapshot are skipped after a check.
func TestReplayIsExact(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			h := liveHistory(t, version)
			for _, tc := range []struct {
				name string
				n    int64
			}{
				{"right-after-the-snapshot", h.snapRev + 1},
				{"inside-the-run", h.snapRev + 30},
				{"a-txn", h.txnRev},
				{"keys-on-a-new-lease", h.leaseRev},
				{"the-last", h.last},
			} {
				t.Run(tc.name, func(t *testing.T) {
					o, clientURL := restoreOpts(t, h.snap, fmt.Sprintf("restored-%s-%d", version, tc.n))
					s, err := RestoreStaging(t.Context(), o)
					require.NoError(t, err)
					db := filepath.Join(s.Dir, "member", "snap", "db")
					before, err := datadir.InspectDB(t.Context(), db)
					require.NoError(t, err)

					res, err := s.Replay(t.Context(), source(h.revs), tc.n)
					require.NoError(t, err)
					require.Equal(t, h.snapRev, res.From)
					require.Equal(t, tc.n, res.To)
					require.Equal(t, tc.n-h.snapRev, res.Revisions)
					require.Equal(t, int64(5), res.Skipped, "the revisions of the source the snapshot holds")
					if tc.n >= h.leaseRev {
						require.Equal(t, []int64{h.leaseID}, res.LeasesNotRestored, "the lease granted after the snapshot")
						require.Positive(t, res.LeaseKeys)
					}

					want := liveAt(t, h.cli, tc.n)
					requireSameKeyspace(t, want, keyspaceAt(t, db, tc.n), "staged db")
					after, err := datadir.InspectDB(t.Context(), db)
					require.NoError(t, err)
					require.True(t, after.OK, after.Err)
					require.Equal(t, tc.n, after.Revision)
					require.Equal(t, before.ConsistentIndex, after.ConsistentIndex, "etcd's restore's consistent index")
					require.Equal(t, before.Term, after.Term)

					require.NoError(t, s.Bump(t.Context(), MinBump))
					_, err = s.Install(t.Context())
					require.NoError(t, err)
					cli := startRestored(t, version, o, clientURL)
					resp, err := cli.Get(t.Context(), "", clientv3.WithPrefix())
					require.NoError(t, err)
					got := map[string]*mvccpb.KeyValue{}
					for _, kv := range resp.Kvs {
						got[string(kv.Key)] = kv
					}
					requireSameKeyspace(t, want, got, "restored member")
					require.Greater(t, resp.Header.Revision, tc.n+int64(MinBump)-1, "bumped")
				})
			}
		})
	}
}

// TestReplayRefusesBadSources: a source that skips a revision, that ends before the target,
// that disagrees with the database on a revision it already holds, or that records what etcd's
// store does not compute, fails with an error that says which (naming the revisions) and leaves
// nothing installed; a source that overlaps itself (a writer handover) is skipped where it
// repeats; a cancelled replay stops between revisions.
func TestReplayRefusesBadSources(t *testing.T) {
	h := liveHistory(t, "3.6")
	fresh := h.after(h.snapRev)
	tampered := func(r Revision, f func(kv *mvccpb.KeyValue)) Revision {
		out := Revision{Rev: r.Rev}
		for _, ev := range r.Events {
			kv := *ev.Kv
			c := &mvccpb.Event{Type: ev.Type, Kv: &kv}
			out.Events = append(out.Events, c)
		}
		f(out.Events[0].Kv)
		return out
	}
	gapAt := 10
	firstPut := 3 // a revision whose first event is a put, a few into the run
	for fresh[firstPut].Events[0].Type != mvccpb.PUT {
		firstPut++
	}
	for _, tc := range []struct {
		name    string
		src     func(ctx context.CancelFunc) RevisionSource
		upTo    int64
		wantErr error
		msg     string
	}{
		{"a-gap", func(context.CancelFunc) RevisionSource { return source(fresh[:gapAt], fresh[gapAt+1:]) }, h.last, ErrRevisionGap,
			fmt.Sprintf("revision %d follows revision %d", fresh[gapAt+1].Rev, fresh[gapAt-1].Rev)},
		{"a-gap-after-the-snapshot", func(context.CancelFunc) RevisionSource { return source(fresh[1:]) }, h.last, ErrRevisionGap,
			fmt.Sprintf("revision %d follows revision %d", h.snapRev+2, h.snapRev)},
		{"too-short", func(context.CancelFunc) RevisionSource { return source(fresh[:20]) }, h.last, ErrReplayShort,
			fmt.Sprintf("ends at revision %d, before %d", h.snapRev+20, h.last)},
		{"an-overlap-that-differs", func(context.CancelFunc) RevisionSource {
			bad := tampered(fresh[firstPut], func(kv *mvccpb.KeyValue) { kv.Value = []byte("not what was written") })
			return source(fresh[:firstPut+5], []Revision{bad}, fresh[firstPut+5:])
		}, h.last, ErrReplayMismatch, fmt.Sprintf("revision %d, event 0: another value", fresh[firstPut].Rev)},
		{"a-record-etcd-does-not-compute", func(context.CancelFunc) RevisionSource {
			bad := tampered(fresh[firstPut], func(kv *mvccpb.KeyValue) { kv.Version++ })
			return source(fresh[:firstPut], []Revision{bad}, fresh[firstPut+1:])
		}, h.last, ErrReplayMismatch, fmt.Sprintf("revision %d, event 0: the event records version", fresh[firstPut].Rev)},
		{"cancelled", func(cancel context.CancelFunc) RevisionSource {
			src := source(fresh)
			src.onNext = func(r Revision) {
				if r.Rev == h.snapRev+15 {
					cancel()
				}
			}
			return src
		}, h.last, context.Canceled, fmt.Sprintf("at revision %d after 15 revisions", h.snapRev+15)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, _ := restoreOpts(t, h.snap, "t")
			s, err := RestoreStaging(t.Context(), o)
			require.NoError(t, err)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			_, err = s.Replay(ctx, tc.src(cancel), tc.upTo)
			require.ErrorIs(t, err, tc.wantErr)
			require.ErrorContains(t, err, tc.msg)
			require.Error(t, s.Bump(t.Context(), MinBump), "a failed replay is not bumped")
			_, err = s.Install(t.Context())
			require.ErrorContains(t, err, "its replay failed")
			require.NoDirExists(t, o.DataDir, "nothing installed")
			require.NoDirExists(t, s.Dir, "the staging folder removed")
		})
	}

	t.Run("an-overlap-is-skipped", func(t *testing.T) {
		o, _ := restoreOpts(t, h.snap, "t")
		s, err := RestoreStaging(t.Context(), o)
		require.NoError(t, err)
		// Two segments of a handover: the second repeats the first's last five revisions.
		res, err := s.Replay(t.Context(), source(fresh[:30], fresh[25:]), 0)
		require.NoError(t, err)
		require.Equal(t, h.last, res.To)
		require.Equal(t, int64(5), res.Skipped)
		require.Equal(t, int64(len(fresh)), res.Revisions)
		// A second replay on the same staged member continues it; what it repeats is skipped.
		res, err = s.Replay(t.Context(), source(fresh[len(fresh)-3:]), 0)
		require.NoError(t, err)
		require.Equal(t, ReplayResult{From: h.last, To: h.last, Skipped: 3, LeasesNotRestored: []int64{h.leaseID}, LeaseKeys: res.LeaseKeys}, res)
		requireSameKeyspace(t, liveAt(t, h.cli, h.last), keyspaceAt(t, filepath.Join(s.Dir, "member", "snap", "db"), h.last), "staged db")
		s.Discard()
	})

	t.Run("a-target-below-the-snapshot", func(t *testing.T) {
		o, _ := restoreOpts(t, h.snap, "t")
		s, err := RestoreStaging(t.Context(), o)
		require.NoError(t, err)
		defer s.Discard()
		_, err = s.Replay(t.Context(), source(h.revs), h.snapRev-1)
		require.ErrorIs(t, err, ErrInput)
		require.True(t, errors.Is(err, ErrInput))
	})
}
