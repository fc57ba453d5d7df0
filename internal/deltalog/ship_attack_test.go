package deltalog

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/etcdguard/etcdguard/internal/delta"
	"github.com/etcdguard/etcdguard/internal/repository"
)

func localTarget(t *testing.T, name string) (repository.Target, *repository.Repository) {
	t.Helper()
	target := repository.Target{Name: name, URL: "file://" + filepath.Join(t.TempDir(), name)}
	require.NoError(t, target.Normalize())
	r, err := repository.Open(t.Context(), target)
	require.NoError(t, err)
	t.Cleanup(func() { r.Close() })
	return target, r
}

func fakeBase(started time.Time, rev int64) repository.Manifest {
	m := repository.Manifest{Format: repository.FormatVersion, ID: repository.NewID(started), Kind: "full", ClusterID: "00000000000000aa", Revision: rev, Started: started}
	m.SHA256 = hex.EncodeToString(make([]byte, 32))
	m.Status.Revision = rev
	return m
}

// sealFake stores a sealed segment of revisions first..last of base's chain in repo (the
// first of its chain), each revision one put of /k.
func sealFake(t *testing.T, repo *repository.Repository, base repository.Manifest, first, last int64) repository.SegmentManifest {
	t.Helper()
	var buf bytes.Buffer
	w := delta.NewWriter(&buf)
	for rev := first; rev <= last; rev++ {
		ev := &mvccpb.Event{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte("/k"), Value: []byte("v"), CreateRevision: first, ModRevision: rev, Version: rev - first + 1}}
		require.NoError(t, w.Append(delta.Revision{Revision: rev, Received: base.Started.Add(time.Duration(rev) * time.Millisecond), Events: []*mvccpb.Event{ev}}))
	}
	require.NoError(t, w.Close())
	st := w.Stats()
	m, err := storeSegment(t.Context(), repo, repository.Codec{Compression: repository.CompressionZstd}, &buf, repository.SegmentManifest{
		Format: repository.FormatVersion, Kind: repository.KindDelta, Base: base.ID, ClusterID: base.ClusterID,
		First: first, Last: last, FirstTime: st.FirstTime, LastTime: st.LastTime, Events: int(st.Events),
		Prev: repository.ManifestName(base.ID), PrevSHA256: base.SHA256, Created: st.LastTime,
	})
	require.NoError(t, err)
	return m
}

// TestShipperIsNotStoppedByOneBadChain: a segment of an old chain that cannot be copied (its data
// on the local disk rotted, or was replaced) must not keep every newer chain from reaching the
// other target. The shipper ships chains oldest first and gave up the whole round at the first
// failure, so one bad old segment stopped all off-site shipping for good, behind a warning
// logged once.
func TestShipperIsNotStoppedByOneBadChain(t *testing.T) {
	_, local := localTarget(t, "local")
	remoteTarget, remote := localTarget(t, "remote")
	t0 := time.Date(2026, 12, 2, 14, 0, 0, 0, time.UTC)
	old, cur := fakeBase(t0, 100), fakeBase(t0.Add(time.Hour), 200)
	bad := sealFake(t, local, old, 101, 110)
	good := sealFake(t, local, cur, 201, 210)
	_, err := local.Save(t.Context(), bad.Data, bytes.NewReader([]byte("rotted")))
	require.NoError(t, err)

	sh := NewShipper(local, remoteTarget, nil, nil)
	defer sh.Close()
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(t.Context())
	go func() { done <- sh.Run(ctx) }()
	defer func() { cancel(); <-done }()

	require.Eventually(t, func() bool {
		l, err := remote.ListChain(t.Context(), cur.ID)
		return err == nil && len(l.Segments) == 1 && l.Segments[0] == good.Ref()
	}, 10*time.Second, 50*time.Millisecond, "the newer chain is shipped though the older one cannot be")
	l, err := remote.ListChain(t.Context(), old.ID)
	require.NoError(t, err)
	require.Empty(t, l.Segments, "the bad segment is not shipped")
}

// sealAfter stores a sealed segment of revisions first..last that continues prev (a manifest of
// the same chain) in repo.
func sealAfter(t *testing.T, repo *repository.Repository, base repository.Manifest, prev *repository.SegmentManifest, first, last int64, writer string) repository.SegmentManifest {
	t.Helper()
	var buf bytes.Buffer
	w := delta.NewWriter(&buf)
	for rev := first; rev <= last; rev++ {
		ev := &mvccpb.Event{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte("/k"), Value: []byte(writer), CreateRevision: first, ModRevision: rev, Version: rev - first + 1}}
		require.NoError(t, w.Append(delta.Revision{Revision: rev, Received: base.Started.Add(time.Duration(rev) * time.Millisecond), Events: []*mvccpb.Event{ev}}))
	}
	require.NoError(t, w.Close())
	st := w.Stats()
	m := repository.SegmentManifest{
		Format: repository.FormatVersion, Kind: repository.KindDelta, Base: base.ID, ClusterID: base.ClusterID,
		First: first, Last: last, FirstTime: st.FirstTime, LastTime: st.LastTime, Events: int(st.Events),
		Prev: repository.ManifestName(base.ID), PrevSHA256: base.SHA256, Created: st.LastTime, Writer: writer,
	}
	if prev != nil {
		m.Prev, m.PrevSHA256 = prev.Ref().ManifestName(), prev.SHA256
	}
	m, err := storeSegment(t.Context(), repo, repository.Codec{Compression: repository.CompressionZstd}, &buf, m)
	require.NoError(t, err)
	return m
}

// TestTakeBackAfterAHandoverKeepsTheRemoteChain: writer A seals 11-20 and 21-30 on its local
// disk while the remote is down; it loses the election, and B (another host) continues the chain
// from the remote, which reached 10: B's 11-25 reaches the remote. A is elected again: it goes on
// from its own local reach, 31, linked to its own 21-30, and its shipper leaves its 11-20 and
// 21-30 out (they overlap B's) and sends 31-… after B's 11-25: the remote chain has a hole at
// 26-30 for good and stops at 25, while A writes on. When A's disk is lost, so is everything
// after 25.
func TestTakeBackAfterAHandoverKeepsTheRemoteChain(t *testing.T) {
	t.Skip("known: a writer that takes the role back continues its local chain even where the remote's diverged (another writer's segments); mending that (re-cutting the overlap to link to the remote's) is a design change, see the attack report")
	cli := oneMember(t)
	put(t, cli, 45, "history") // revisions 2..46
	_, local := localTarget(t, "local")
	remoteTarget, remote := localTarget(t, "remote")
	base := fakeBase(time.Now().UTC(), 10)
	resp, err := cli.Get(t.Context(), "x")
	require.NoError(t, err)
	base.ClusterID = fmt.Sprintf("%016x", resp.Header.ClusterId)
	a1 := sealAfter(t, local, base, nil, 11, 20, "A")
	sealAfter(t, local, base, &a1, 21, 30, "A")
	sealAfter(t, remote, base, nil, 11, 25, "B")

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := Stream(ctx, StreamOptions{Client: cli, Local: local, Remotes: []*repository.Repository{remote}, SealInterval: 200 * time.Millisecond}, base, nil)
		done <- err
	}()
	require.Eventually(t, func() bool {
		l, err := local.ListChain(t.Context(), base.ID)
		return err == nil && len(l.Segments) > 0 && l.Segments[len(l.Segments)-1].Last >= 46
	}, 10*time.Second, 20*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
	sh := NewShipper(local, remoteTarget, nil, nil)
	defer sh.Close()
	require.NoError(t, sh.discover(t.Context()))
	require.NoError(t, sh.round(t.Context()))

	c, err := LoadChain(t.Context(), remote, base)
	require.NoError(t, err)
	require.Empty(t, c.Problem, "the remote's chain is unbroken")
	require.GreaterOrEqual(t, c.Reach, int64(46), "the remote's chain reaches what the writer wrote")
}
