// Package testrepo stores what the agent's delta writer would store (a linked delta chain) without
// running it, for the tests of the packages that read or remove chains. It is a test helper beside
// the layers, as testenv is, and apart from it because it imports the repository and delta
// packages, whose own tests import testenv.
package testrepo

import (
	"bytes"
	"fmt"
	"io"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/etcdguard/etcdguard/internal/delta"
	"github.com/etcdguard/etcdguard/internal/repository"
)

// SegmentRevisions is how many revisions each segment WriteChain stores holds.
const SegmentRevisions = 5

// WriteChain stores a linked delta chain of n segments after base in repo, as the delta writer
// does (data through the codec, read back, then the manifest), each of SegmentRevisions revisions
// of one put, and the chain's end record if ended. It returns the revision the chain reaches. The
// events are made up: the chain loads and reads back, it is not the cluster's history.
func WriteChain(tb testing.TB, repo *repository.Repository, base repository.Manifest, n int, ended bool) int64 {
	tb.Helper()
	ctx := tb.Context()
	fail := func(err error) {
		if err != nil {
			tb.Fatalf("write the delta chain of %s: %v", base.ID, err)
		}
	}
	codec := repository.Codec{Compression: repository.CompressionZstd}
	prev, prevSHA := repository.ManifestName(base.ID), base.SHA256
	rev := base.Status.Revision
	for range n {
		first, last := rev+1, rev+SegmentRevisions
		var plain bytes.Buffer
		w := delta.NewWriter(&plain)
		for r := first; r <= last; r++ {
			fail(w.Append(delta.Revision{Revision: r, Received: base.Started.Add(time.Duration(r) * time.Second), Events: []*mvccpb.Event{{
				Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte(fmt.Sprintf("/registry/pods/p%d", r%4)), Value: []byte("v"), CreateRevision: r, ModRevision: r, Version: 1},
			}}}))
		}
		fail(w.Close())
		ref := repository.SegmentRef{Base: base.ID, First: first, Last: last}
		var stored bytes.Buffer
		storedDigest, raw := repository.NewDigest(), repository.NewDigest()
		enc, err := codec.NewEncoder(io.MultiWriter(&stored, storedDigest))
		fail(err)
		_, err = enc.Write(plain.Bytes())
		fail(err)
		fail(enc.Close())
		_, _ = raw.Write(plain.Bytes())
		m := repository.SegmentManifest{
			Format: repository.FormatVersion, Kind: repository.KindDelta, Base: base.ID, ClusterID: base.ClusterID,
			First: first, Last: last, FirstTime: base.Started.Add(time.Duration(first) * time.Second), LastTime: base.Started.Add(time.Duration(last) * time.Second),
			Events: SegmentRevisions, Prev: prev, PrevSHA256: prevSHA, Created: base.Started,
			DataObject: repository.DataObject{RawSize: raw.Size(), SHA256: raw.Sum(), StoredSize: storedDigest.Size(), StoredSHA256: storedDigest.Sum(), Data: ref.DataName(codec), Compression: codec.Compression},
		}
		_, err = repo.SaveNew(ctx, m.Data, bytes.NewReader(stored.Bytes()))
		fail(err)
		fail(repo.ReadBack(ctx, m.DataObject))
		fail(repo.SaveNewSegmentManifest(ctx, m))
		prev, prevSHA, rev = ref.ManifestName(), m.SHA256, last
	}
	if ended {
		fail(repo.SaveNewChainEnd(ctx, repository.ChainEnd{Format: repository.FormatVersion, Base: base.ID, Last: rev, Reason: repository.EndNewBase, Created: base.Started}))
	}
	return rev
}
