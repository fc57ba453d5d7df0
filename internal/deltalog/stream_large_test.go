package deltalog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdguard/etcdguard/internal/delta"
)

// TestStreamCatchesUpLargeResponses: a writer behind the cluster by megabytes (it starts after
// 8 MiB of 16 KiB values were written) gets etcd's catch-up responses of up to 1,000 revisions,
// far above gRPC's default receive limit of 4 MiB (which stalled the writer for good, retrying
// the same revision), and a range delete of 20,000 keys, one revision that etcd cuts across the
// pieces of a fragmented response: the writer catches up, and the delete is one record with every
// event.
func TestStreamCatchesUpLargeResponses(t *testing.T) {
	cli := oneMember(t)
	_, repo := localTarget(t, "local")
	resp, err := cli.Get(t.Context(), "x")
	require.NoError(t, err)
	base := fakeBase(time.Now().UTC(), resp.Header.Revision)
	base.ClusterID = fmt.Sprintf("%016x", resp.Header.ClusterId)

	val := strings.Repeat("v", 16<<10)
	for i := range 512 {
		_, err := cli.Put(t.Context(), fmt.Sprintf("/registry/configmaps/big/%04d", i), val)
		require.NoError(t, err)
	}
	for lo := 0; lo < 20000; lo += 100 {
		var ops []clientv3.Op
		for i := lo; i < lo+100; i++ {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("/registry/events/many/%05d", i), "e"))
		}
		_, err := cli.Txn(t.Context()).Then(ops...).Commit()
		require.NoError(t, err)
	}
	del, err := cli.Delete(t.Context(), "/registry/events/many/", clientv3.WithPrefix())
	require.NoError(t, err)
	require.Equal(t, int64(20000), del.Deleted)
	last := del.Header.Revision

	var durable atomic.Int64
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := Stream(ctx, StreamOptions{Client: cli, Local: repo, OnDurable: func(p Progress) { durable.Store(p.Revision) }}, base, nil)
		done <- err
	}()
	require.Eventually(t, func() bool { return durable.Load() >= last }, 60*time.Second, 20*time.Millisecond, "the writer catches up")
	cancel()
	require.NoError(t, <-done)

	c, err := LoadChain(t.Context(), repo, base)
	require.NoError(t, err)
	require.Empty(t, c.Problem)
	require.Equal(t, last, c.Reach)
	r := c.NewReader(t.Context(), ReadOptions{UpTo: last})
	defer r.Close()
	var deleteEvents int
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		if rv, ok := rec.(delta.Revision); ok && rv.Revision == last {
			deleteEvents = len(rv.Events)
		}
	}
	require.Equal(t, 20000, deleteEvents, "the range delete is one record with all its events")
}
