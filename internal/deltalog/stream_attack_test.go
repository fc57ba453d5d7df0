package deltalog

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdguard/etcdguard/internal/backend"
	"github.com/etcdguard/etcdguard/internal/backend/local"
	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/testcluster"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

// oneMember starts a single-member etcd 3.6 without TLS and returns a client of it.
func oneMember(t *testing.T) *clientv3.Client {
	t.Helper()
	c, err := testcluster.Start(t.Context(), testcluster.Options{Size: 1, Command: []string{testenv.Etcd(t, "3.6", "etcd")}, Dir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	cli, err := c.Client(t.Context())
	require.NoError(t, err)
	t.Cleanup(func() { cli.Close() })
	return cli
}

func put(t *testing.T, cli *clientv3.Client, n int, tag string) int64 {
	t.Helper()
	var rev int64
	for i := range n {
		resp, err := cli.Put(t.Context(), fmt.Sprintf("/registry/pods/%s/%d", tag, i), "v")
		require.NoError(t, err)
		rev = resp.Header.Revision
	}
	return rev
}

// TestStreamEndsTheChainOfAnotherCluster: the writer must follow only the cluster its base is a
// snapshot of. Once the endpoints answer for another cluster (it was restored, which gives it a
// new cluster id, with its revisions kept: --no-bump, or a bump that leaves them below the
// chain's), the chain ends with "cluster-changed", and none of the other cluster's events go into
// it. The writer never compared the cluster id: it went on appending the other cluster's history
// to the chain as if it were the base's, a chain a restore replays into a database that never
// existed (or refuses half-way).
func TestStreamEndsTheChainOfAnotherCluster(t *testing.T) {
	cli := oneMember(t)
	rev := put(t, cli, 5, "before")
	_, local := localTarget(t, "local")
	base := fakeBase(time.Now().UTC(), rev)
	base.ClusterID = "00000000000bad00" // the cluster the base was taken of; the endpoints answer for another

	logs := &testenv.Logs{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("writer's log:\n%s", logs)
		}
	})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := Stream(ctx, StreamOptions{Client: cli, Local: local, SealInterval: 200 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}, base, nil)
		done <- err
	}()
	put(t, cli, 5, "after")
	select {
	case err := <-done:
		require.ErrorIs(t, err, ErrClusterChanged)
	case <-time.After(10 * time.Second):
		cancel()
		<-done
		l, err := local.ListChain(t.Context(), base.ID)
		require.NoError(t, err)
		t.Fatalf("the writer streams another cluster into the chain of %s (segments %v, ended %t)", base.ID, l.Segments, l.Ended)
	}
	l, err := local.ListChain(t.Context(), base.ID)
	require.NoError(t, err)
	require.Empty(t, l.Segments, "no event of the other cluster is in the chain")
	require.Empty(t, l.Open)
	e, err := local.ChainEnd(t.Context(), base.ID)
	require.NoError(t, err)
	require.Equal(t, repository.EndClusterChanged, e.Reason)
	require.Equal(t, rev, e.Last)
}

// fullDisk is a local target whose disk fills up: once full, appends and saves fail as a full
// disk fails them (backend.ErrNoSpace). It counts the open segments' files left open.
type fullDisk struct {
	*local.Local
	mu    sync.Mutex
	room  int64 // bytes appends may still write
	full  bool
	open  int
	files int
}

func (d *fullDisk) nospace(doing string) error {
	return fmt.Errorf("%s: write: no space left on device: %w", doing, backend.ErrNoSpace)
}

func (d *fullDisk) setRoom(n int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.room, d.full = n, n <= 0
}

func (d *fullDisk) Create(ctx context.Context, name string) (backend.AppendFile, error) {
	f, err := d.Local.Create(ctx, name)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.open++
	d.files++
	d.mu.Unlock()
	return &fullFile{AppendFile: f, d: d}, nil
}

func (d *fullDisk) Save(ctx context.Context, name string, rd io.Reader) (int64, error) {
	d.mu.Lock()
	full := d.full
	d.mu.Unlock()
	if full {
		return 0, d.nospace("save " + name)
	}
	return d.Local.Save(ctx, name, rd)
}

func (d *fullDisk) SaveNew(ctx context.Context, name string, rd io.Reader) (int64, error) {
	d.mu.Lock()
	full := d.full
	d.mu.Unlock()
	if full {
		return 0, d.nospace("save " + name)
	}
	return d.Local.SaveNew(ctx, name, rd)
}

func (d *fullDisk) openFiles() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.open
}

type fullFile struct {
	backend.AppendFile
	d      *fullDisk
	closed bool
}

func (f *fullFile) Write(p []byte) (int, error) {
	f.d.mu.Lock()
	defer f.d.mu.Unlock()
	if int64(len(p)) > f.d.room {
		n := max(f.d.room, 0)
		f.d.room, f.d.full = 0, true
		if n > 0 {
			if _, err := f.AppendFile.Write(p[:n]); err != nil {
				return 0, err
			}
		}
		return int(n), f.d.nospace("append")
	}
	f.d.room -= int64(len(p))
	return f.AppendFile.Write(p)
}

func (f *fullFile) Close() error {
	f.d.mu.Lock()
	if !f.closed {
		f.closed = true
		f.d.open--
	}
	f.d.mu.Unlock()
	return f.AppendFile.Close()
}

// TestStreamOnAFullDisk: when the local target's disk fills up under the open segment, the
// writer stops with an error that says so (backend.ErrNoSpace) and closes the open segment's
// file; once there is room again, the next Stream seals the complete prefix the full disk left
// and carries the chain on, unbroken. The writer returned with the file still open: every failed
// Stream leaked a descriptor, and one to a file that the next Stream seals and removes, whose
// blocks the full disk cannot get back while the agent runs.
func TestStreamOnAFullDisk(t *testing.T) {
	cli := oneMember(t)
	rev := put(t, cli, 3, "before")
	target, plainRepo := localTarget(t, "local")
	lb, ok := backend.As[*local.Local](plainRepo.Backend())
	require.True(t, ok)
	disk := &fullDisk{Local: lb, room: 4 << 10}
	repo := repository.New(target, disk)
	base := fakeBase(time.Now().UTC(), rev)
	resp, err := cli.Get(t.Context(), "x")
	require.NoError(t, err)
	base.ClusterID = fmt.Sprintf("%016x", resp.Header.ClusterId)

	logs := &testenv.Logs{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("writer's log:\n%s", logs)
		}
	})
	opts := StreamOptions{Client: cli, Local: repo, SealInterval: time.Hour,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	done := make(chan error, 1)
	go func() { _, err := Stream(t.Context(), opts, base, nil); done <- err }()
	for i := 0; ; i++ {
		put(t, cli, 1, fmt.Sprintf("filling-%d", i))
		select {
		case err = <-done:
		case <-time.After(20 * time.Millisecond):
			require.Less(t, i, 2000, "the disk never fills")
			continue
		}
		break
	}
	require.ErrorIs(t, err, backend.ErrNoSpace, "the writer says the disk is full")
	require.Zero(t, disk.openFiles(), "the open segment's file is closed when the writer stops")

	disk.setRoom(1 << 30) // room again
	last := put(t, cli, 5, "after")
	ctx, cancel := context.WithCancel(t.Context())
	go func() { _, err := Stream(ctx, opts, base, nil); done <- err }()
	require.Eventually(t, func() bool {
		c, err := LoadChain(t.Context(), repo, base)
		if err != nil || c.Open == 0 {
			return false
		}
		tip, err := c.Tip(t.Context())
		n := tip.Revision
		return err == nil && n >= last
	}, 10*time.Second, 20*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
	c, err := LoadChain(t.Context(), repo, base)
	require.NoError(t, err)
	require.Empty(t, c.Problem)
	require.Equal(t, last, c.Reach, "the chain runs unbroken to the last revision")
	require.Zero(t, disk.openFiles())
}

// TestStreamIgnoresAnOfferOfItsOwnBase: the agent hands each new full backup to the writer
// through a channel that keeps the last one not taken. A backup stored while no Stream ran (the
// writer in its backoff after a failure of the local target) stays there, and is also what the
// agent then picks as the newest base to stream; the Stream of it took the offer of itself for a
// newer base and ended its own chain at once, "new-base" naming itself, which sent the agent for
// yet another full snapshot and left the revisions until it in no chain.
func TestStreamIgnoresAnOfferOfItsOwnBase(t *testing.T) {
	cli := oneMember(t)
	rev := put(t, cli, 3, "before")
	_, repo := localTarget(t, "local")
	base := fakeBase(time.Now().UTC(), rev)
	resp, err := cli.Get(t.Context(), "x")
	require.NoError(t, err)
	base.ClusterID = fmt.Sprintf("%016x", resp.Header.ClusterId)
	offers := make(chan repository.Manifest, 1)
	offers <- base // stored while no Stream ran: the same backup the agent now streams

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	type result struct {
		next *repository.Manifest
		err  error
	}
	done := make(chan result, 1)
	go func() {
		next, err := Stream(ctx, StreamOptions{Client: cli, Local: repo, SealInterval: 200 * time.Millisecond}, base, offers)
		done <- result{next, err}
	}()
	last := put(t, cli, 5, "after")
	select {
	case r := <-done:
		e, _ := repo.ChainEnd(t.Context(), base.ID)
		t.Fatalf("the Stream ended (next %v, error %v); the chain's end record: %+v", r.next != nil, r.err, e)
	case <-time.After(2 * time.Second):
	}
	cancel()
	r := <-done
	require.NoError(t, r.err)
	require.Nil(t, r.next)
	c, err := LoadChain(t.Context(), repo, base)
	require.NoError(t, err)
	require.Nil(t, c.End, "the chain stays open")
	require.Equal(t, last, c.Reach)
}

// TestNewChainKeepsReceiptTimes: when a newer base arrives, the writer ends the old chain where
// it is and starts the new one at the new base's revision + 1, watching those revisions again
// from etcd's history; it records them as received at that second watch, which comes after the
// new snapshot was taken, verified and stored (a minute for a large cluster). A restore to a
// moment T inside that window picks the new base (taken before T) and stops its replay at the
// first revision "received" after T, that is at once: the cluster as it was when the new
// snapshot started, not at T; the writes between are lost to --to-time although the writer had
// received them before T (the old chain holds them, with their real times).
func TestNewChainKeepsReceiptTimes(t *testing.T) {
	cli := oneMember(t)
	_, repo := localTarget(t, "local")
	resp, err := cli.Get(t.Context(), "x")
	require.NoError(t, err)
	cluster := fmt.Sprintf("%016x", resp.Header.ClusterId)
	base1 := fakeBase(time.Now().UTC(), put(t, cli, 3, "first"))
	base1.ClusterID = cluster
	var durable atomic.Int64
	opts := StreamOptions{Client: cli, Local: repo, SealInterval: 200 * time.Millisecond, OnDurable: func(p Progress) { durable.Store(p.Revision) },
		Times: NewReceiptTimes(1024)}
	offers := make(chan repository.Manifest, 1)
	type result struct {
		next *repository.Manifest
		err  error
	}
	done := make(chan result, 1)
	go func() { next, err := Stream(t.Context(), opts, base1, offers); done <- result{next, err} }()

	r2 := put(t, cli, 1, "at-the-new-base")
	base2 := fakeBase(time.Now().UTC(), r2) // its snapshot starts now...
	base2.ClusterID = cluster
	put(t, cli, 3, "while-it-is-taken")
	time.Sleep(300 * time.Millisecond)
	moment := time.Now().UTC()
	time.Sleep(300 * time.Millisecond)
	last := put(t, cli, 2, "later")
	require.Eventually(t, func() bool { return durable.Load() >= last }, 10*time.Second, 10*time.Millisecond)
	time.Sleep(time.Second) // ...and is verified and stored a while later
	offers <- base2
	r := <-done
	require.NoError(t, r.err)
	require.NotNil(t, r.next)

	ctx, cancel := context.WithCancel(t.Context())
	go func() { next, err := Stream(ctx, opts, base2, offers); done <- result{next, err} }()
	require.Eventually(t, func() bool { return durable.Load() >= last }, 10*time.Second, 10*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	cancel()
	require.NoError(t, (<-done).err)

	c, err := LoadChain(t.Context(), repo, base2)
	require.NoError(t, err)
	at, _, err := c.RevisionAt(t.Context(), nil, moment)
	require.NoError(t, err)
	require.Equal(t, r2+3, at, "the revisions received before the moment are in the new chain's replay to it")
}

// TestNewChainSurvivesACompactionDuringTheSnapshot: the new chain starts by watching again, from
// etcd's history, the revisions after the new base that the old chain already holds. When etcd
// compacted past them while the new snapshot was taken and verified (Kubernetes' apiserver
// compacts every 5 minutes; a large cluster's snapshot can take longer), the new chain ends at
// once with a gap and the agent takes another snapshot, which meets the same fate: the
// revisions from each new base on are in no chain, though the writer had received every one.
func TestNewChainSurvivesACompactionDuringTheSnapshot(t *testing.T) {
	t.Skip("known: the new chain is filled by watching again instead of from the records the writer already holds; a compaction during the snapshot ends it with a gap (see the attack report)")
	cli := oneMember(t)
	_, repo := localTarget(t, "local")
	resp, err := cli.Get(t.Context(), "x")
	require.NoError(t, err)
	cluster := fmt.Sprintf("%016x", resp.Header.ClusterId)
	base1 := fakeBase(time.Now().UTC(), put(t, cli, 3, "first"))
	base1.ClusterID = cluster
	var durable atomic.Int64
	opts := StreamOptions{Client: cli, Local: repo, SealInterval: 200 * time.Millisecond, OnDurable: func(p Progress) { durable.Store(p.Revision) }}
	offers := make(chan repository.Manifest, 1)
	done := make(chan error, 1)
	var next *repository.Manifest
	go func() { n, err := Stream(t.Context(), opts, base1, offers); next = n; done <- err }()
	r2 := put(t, cli, 1, "at-the-new-base")
	base2 := fakeBase(time.Now().UTC(), r2)
	base2.ClusterID = cluster
	last := put(t, cli, 5, "while-it-is-taken")
	require.Eventually(t, func() bool { return durable.Load() >= last }, 10*time.Second, 10*time.Millisecond)
	_, err = cli.Compact(t.Context(), last)
	require.NoError(t, err)
	offers <- base2
	require.NoError(t, <-done)
	require.NotNil(t, next)

	ctx, cancel := context.WithCancel(t.Context())
	go func() { _, err := Stream(ctx, opts, base2, offers); done <- err }()
	time.Sleep(time.Second)
	cancel()
	require.NoError(t, <-done, "the new chain carries on from what the writer holds")
	c, err := LoadChain(t.Context(), repo, base2)
	require.NoError(t, err)
	require.Nil(t, c.End)
	require.Equal(t, last, c.Reach)
}

// cancelling is a local target that cancels the writer's context as the first sealed segment's
// data is stored: the agent stops (SIGTERM) or loses the election in the middle of a seal.
type cancelling struct {
	*local.Local
	cancel context.CancelFunc
	once   sync.Once
}

func (c *cancelling) SaveNew(ctx context.Context, name string, rd io.Reader) (int64, error) {
	if strings.Contains(name, ".delta") {
		c.once.Do(c.cancel)
	}
	return c.Local.SaveNew(ctx, name, rd)
}

// TestStreamStoppedDuringASeal: a writer stopped while it seals a segment (the agent's SIGTERM,
// or its election lease lost) finishes that seal as it finishes the open segment at a stop, and
// returns nil. The seal ran on the cancelled context and failed half-way, so the Stream returned
// the cancellation as a failure (the agent logged "the delta log stopped" as an error and
// showed it in /-/status), leaving the segment for the next start to seal again.
func TestStreamStoppedDuringASeal(t *testing.T) {
	cli := oneMember(t)
	rev := put(t, cli, 3, "before")
	target, plainRepo := localTarget(t, "local")
	lb, ok := backend.As[*local.Local](plainRepo.Backend())
	require.True(t, ok)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	repo := repository.New(target, &cancelling{Local: lb, cancel: cancel})
	base := fakeBase(time.Now().UTC(), rev)
	resp, err := cli.Get(t.Context(), "x")
	require.NoError(t, err)
	base.ClusterID = fmt.Sprintf("%016x", resp.Header.ClusterId)

	done := make(chan error, 1)
	go func() {
		_, err := Stream(ctx, StreamOptions{Client: cli, Local: repo, SealInterval: 300 * time.Millisecond}, base, nil)
		done <- err
	}()
	last := put(t, cli, 5, "after")
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the writer did not stop")
	}
	require.NoError(t, err, "a stop is no failure")
	l, err := repo.ListChain(t.Context(), base.ID)
	require.NoError(t, err)
	require.Empty(t, l.Open, "the open segment is sealed and removed")
	c, err := LoadChain(t.Context(), repo, base)
	require.NoError(t, err)
	require.Empty(t, c.Problem)
	require.Equal(t, last, c.Reach)
}
