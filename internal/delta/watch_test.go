package delta

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdguard/etcdguard/internal/testcluster"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

// TestWatchRoundTrip watches the whole keyspace of a real three-member TLS cluster from a revision
// while puts, deletes, txns and leases are written, encodes what the watch delivers as revisions
// (events grouped by their revision: a response may carry several), decodes the segment and
// finds exactly what the watch delivered.
func TestWatchRoundTrip(t *testing.T) {
	versions := testenv.EtcdVersions()
	c, err := testcluster.Start(t.Context(), testcluster.Options{
		Size: 3, TLS: true, Command: []string{testenv.Etcd(t, versions[len(versions)-1], "etcd")}, Dir: t.TempDir(),
	})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	cli, err := c.Client(t.Context())
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, cli.Close()) })
	ctx := t.Context()

	start, err := cli.Get(ctx, "x")
	require.NoError(t, err)
	from := start.Header.Revision + 1
	wch := cli.Watch(ctx, "", clientv3.WithPrefix(), clientv3.WithRev(from))

	var leases []Record // lease records, in the order they happened
	var last int64
	for i := 0; i < 60; i++ {
		k := fmt.Sprintf("/registry/configmaps/ns/c%d", i%17)
		switch i % 6 {
		case 0, 1:
			r, err := cli.Put(ctx, k, string(bytes.Repeat([]byte{byte(i)}, 1+i*37)))
			require.NoError(t, err)
			last = r.Header.Revision
		case 2:
			r, err := cli.Delete(ctx, k)
			require.NoError(t, err)
			last = r.Header.Revision
		case 3: // a txn: three puts and a delete in one revision
			r, err := cli.Txn(ctx).Then(
				clientv3.OpPut(k+"-a", "1"), clientv3.OpPut(k+"-b", "2"), clientv3.OpDelete(k), clientv3.OpPut(k+"-c", "3"),
			).Commit()
			require.NoError(t, err)
			last = r.Header.Revision
		case 4: // a lease with two keys on it
			g, err := cli.Grant(ctx, 30)
			require.NoError(t, err)
			leases = append(leases, LeaseGrant{ID: int64(g.ID), TTL: g.TTL, At: g.ResponseHeader.Revision, Received: time.Now().UTC().Round(0)})
			r, err := cli.Txn(ctx).Then(clientv3.OpPut(k+"-l1", "v", clientv3.WithLease(g.ID)), clientv3.OpPut(k+"-l2", "v", clientv3.WithLease(g.ID))).Commit()
			require.NoError(t, err)
			last = r.Header.Revision
		case 5: // revoking it deletes both keys in one revision
			id := leases[len(leases)-1].(LeaseGrant).ID
			r, err := cli.Revoke(ctx, clientv3.LeaseID(id))
			require.NoError(t, err)
			leases = append(leases, LeaseRevoke{ID: id, At: r.Header.Revision, Received: time.Now().UTC().Round(0)})
			last = r.Header.Revision
		}
	}

	// What the watch delivered, as revisions; lease records placed after the revision they were
	// seen at, as a writer that asks etcd for leases places them.
	var want []Record
	for got := int64(0); got < last; {
		resp, ok := <-wch
		require.True(t, ok, "the watch ended")
		require.NoError(t, resp.Err())
		for _, ev := range resp.Events {
			rev := ev.Kv.ModRevision // a delete's kv carries the deletion's revision too
			require.Greater(t, rev, got-1)
			if n := len(want); n == 0 || want[n-1].(Revision).Revision != rev {
				want = append(want, Revision{Revision: rev, Received: time.Now().UTC().Round(0), Events: nil})
			}
			r := want[len(want)-1].(Revision)
			r.Events = append(r.Events, (*mvccpb.Event)(ev))
			want[len(want)-1] = r
			got = rev
		}
	}
	require.Equal(t, from, want[0].(Revision).Revision)
	var buf bytes.Buffer
	w := NewWriter(&buf)
	li := 0
	var all []Record
	for _, r := range want {
		for li < len(leases) && atOf(leases[li]) < r.(Revision).Revision {
			require.NoError(t, w.Append(leases[li]))
			all = append(all, leases[li])
			li++
		}
		require.NoError(t, w.Append(r))
		all = append(all, r)
	}
	for ; li < len(leases); li++ {
		require.NoError(t, w.Append(leases[li]))
		all = append(all, leases[li])
	}
	require.NoError(t, w.Close())
	require.Equal(t, last, w.Stats().Last)

	got, err := decode(buf.Bytes())
	require.NoError(t, err)
	require.Equal(t, len(all), len(got))
	for i := range all {
		require.Equal(t, normal(all[i]), normal(got[i]), "record %d", i)
	}
}

func atOf(r Record) int64 {
	if g, ok := r.(LeaseGrant); ok {
		return g.At
	}
	return r.(LeaseRevoke).At
}

// normal is r with its events' fields copied, so that records compare by what etcd defines and not
// by the caches protobuf keeps in them.
func normal(r Record) Record {
	rev, ok := r.(Revision)
	if !ok {
		return r
	}
	out := rev
	out.Events = nil
	for _, ev := range rev.Events {
		kv := ev.Kv
		out.Events = append(out.Events, &mvccpb.Event{Type: ev.Type, Kv: &mvccpb.KeyValue{
			Key: kv.Key, Value: kv.Value, CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision, Version: kv.Version, Lease: kv.Lease,
		}})
	}
	return out
}
