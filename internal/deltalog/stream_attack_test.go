package deltalog

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

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
