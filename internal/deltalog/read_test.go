package deltalog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/etcdguard/etcdguard/internal/backend"
	"github.com/etcdguard/etcdguard/internal/delta"
	"github.com/etcdguard/etcdguard/internal/repository"
)

// localRepo is a repository on a fresh local folder.
func localRepo(t *testing.T, name string) (*repository.Repository, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	tg := repository.Target{Name: name, URL: "file://" + dir}
	require.NoError(t, tg.Normalize())
	r, err := repository.Open(t.Context(), tg)
	require.NoError(t, err)
	t.Cleanup(func() { r.Close() })
	return r, dir
}

// testBase is a full backup's manifest at revision 100 (no data: chains are read by name and
// manifest, the base's data is not read here).
func testBase() repository.Manifest {
	m := repository.Manifest{Format: repository.FormatVersion, ID: "20261202T050000Z-0a0b0c0d", ClusterID: "00000000000000aa"}
	m.SHA256 = "base-sha"
	m.Status.Revision = 100
	return m
}

// revisions returns the plain bytes of a sealed segment of revisions first..last, one put each.
func revisions(t *testing.T, first, last int64, at time.Time) []byte {
	t.Helper()
	var b bytes.Buffer
	w := delta.NewWriter(&b)
	for rev := first; rev <= last; rev++ {
		require.NoError(t, w.Append(delta.Revision{Revision: rev, Received: at.Add(time.Duration(rev) * time.Millisecond), Events: []*mvccpb.Event{{
			Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte(fmt.Sprintf("/registry/k%d", rev%7)), Value: []byte("v"), CreateRevision: rev, ModRevision: rev, Version: 1},
		}}}))
	}
	require.NoError(t, w.Close())
	return b.Bytes()
}

// storeChain stores segments of the given revision ranges as one linked chain of base.
func storeChain(t *testing.T, repo *repository.Repository, base repository.Manifest, ranges ...[2]int64) []repository.SegmentManifest {
	t.Helper()
	at := time.Date(2026, 12, 2, 5, 0, 0, 0, time.UTC)
	prev, prevSHA := repository.ManifestName(base.ID), base.SHA256
	var out []repository.SegmentManifest
	for _, rg := range ranges {
		m := repository.SegmentManifest{Format: repository.FormatVersion, Kind: repository.KindDelta, Base: base.ID, ClusterID: base.ClusterID,
			First: rg[0], Last: rg[1], Prev: prev, PrevSHA256: prevSHA, Events: int(rg[1] - rg[0] + 1)}
		stored, err := storeSegment(t.Context(), repo, repository.Codec{Compression: repository.CompressionZstd}, bytes.NewReader(revisions(t, rg[0], rg[1], at)), m)
		require.NoError(t, err)
		prev, prevSHA = stored.Ref().ManifestName(), stored.SHA256
		out = append(out, stored)
	}
	return out
}

func readAllRevisions(t *testing.T, c Chain, opts ReadOptions) ([]int64, error) {
	t.Helper()
	r := c.NewReader(t.Context(), opts)
	defer r.Close()
	var revs []int64
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			return revs, nil
		}
		if err != nil {
			return revs, err
		}
		if rv, ok := rec.(delta.Revision); ok {
			revs = append(revs, rv.Revision)
		}
	}
}

func seq(from, to int64) []int64 {
	var out []int64
	for r := from; r <= to; r++ {
		out = append(out, r)
	}
	return out
}

// TestLoadChain: a chain is cut where its names leave a gap or its hash links break, with the
// reason; what comes before is usable and reads back in order, up to a bound when one is given.
func TestLoadChain(t *testing.T) {
	base := testBase()
	t.Run("intact", func(t *testing.T) {
		repo, _ := localRepo(t, "local")
		storeChain(t, repo, base, [2]int64{101, 110}, [2]int64{111, 111}, [2]int64{112, 130})
		c, err := LoadChain(t.Context(), repo, base)
		require.NoError(t, err)
		require.Empty(t, c.Problem)
		require.Equal(t, int64(130), c.Reach)
		require.Len(t, c.Segments, 3)
		revs, err := readAllRevisions(t, c, ReadOptions{})
		require.NoError(t, err)
		require.Equal(t, seq(101, 130), revs)
		revs, err = readAllRevisions(t, c, ReadOptions{UpTo: 115})
		require.NoError(t, err)
		require.Equal(t, seq(101, 115), revs)
	})
	t.Run("a segment missing", func(t *testing.T) {
		repo, _ := localRepo(t, "local")
		segs := storeChain(t, repo, base, [2]int64{101, 110}, [2]int64{111, 120}, [2]int64{121, 130})
		require.NoError(t, repo.Backend().Remove(t.Context(), segs[1].Ref().ManifestName()))
		c, err := LoadChain(t.Context(), repo, base)
		require.NoError(t, err)
		require.Equal(t, int64(110), c.Reach)
		require.Contains(t, c.Problem, "revisions 111-120 are in no segment")
	})
	t.Run("a link broken", func(t *testing.T) {
		repo, dir := localRepo(t, "local")
		segs := storeChain(t, repo, base, [2]int64{101, 110}, [2]int64{111, 120})
		// The second segment's manifest rewritten to continue another predecessor.
		m := segs[1]
		m.PrevSHA256 = "0000"
		path := filepath.Join(dir, filepath.FromSlash(m.Ref().ManifestName()))
		require.NoError(t, os.Chmod(path, 0o600))
		require.NoError(t, repo.Backend().Remove(t.Context(), m.Ref().ManifestName()))
		require.NoError(t, repo.SaveNewSegmentManifest(t.Context(), m))
		c, err := LoadChain(t.Context(), repo, base)
		require.NoError(t, err)
		require.Equal(t, int64(110), c.Reach)
		require.Contains(t, c.Problem, "does not continue")
	})
}

// TestReaderChecksBytes: one byte changed in a stored segment is found as corruption when the
// segment is read, never replayed.
func TestReaderChecksBytes(t *testing.T) {
	repo, dir := localRepo(t, "local")
	base := testBase()
	segs := storeChain(t, repo, base, [2]int64{101, 110}, [2]int64{111, 120})
	path := filepath.Join(dir, filepath.FromSlash(segs[1].Data))
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	data[len(data)/2] ^= 0x01
	require.NoError(t, os.Chmod(path, 0o600))
	require.NoError(t, os.WriteFile(path, data, 0o600))
	c, err := LoadChain(t.Context(), repo, base)
	require.NoError(t, err)
	revs, err := readAllRevisions(t, c, ReadOptions{})
	require.Error(t, err)
	require.True(t, errors.Is(err, ErrCorrupt) || errors.Is(err, delta.ErrCorrupt) || errors.Is(err, repository.ErrCorrupt), "%v", err)
	require.Equal(t, seq(101, 110), revs[:10], "the segment before is read")
	require.Less(t, len(revs), 20)
}

// TestReaderOpenSegment: after the sealed segments, a reader reads the complete prefix of the
// open segment a killed writer left (its cut-off end is its end), and Newest says how far it
// reaches.
func TestReaderOpenSegment(t *testing.T) {
	repo, _ := localRepo(t, "local")
	base := testBase()
	storeChain(t, repo, base, [2]int64{101, 110})
	plain := revisions(t, 111, 125, time.Date(2026, 12, 2, 5, 0, 0, 0, time.UTC))
	cut := plain[:len(plain)-60] // the trailer and part of the last records: a kill mid-write
	ap, ok := backend.As[backend.Appender](repo.Backend())
	require.True(t, ok)
	f, err := ap.Create(t.Context(), repository.OpenSegmentName(base.ID, 111))
	require.NoError(t, err)
	_, err = f.Write(cut)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	c, err := LoadChain(t.Context(), repo, base)
	require.NoError(t, err)
	require.Equal(t, int64(111), c.Open)
	revs, err := readAllRevisions(t, c, ReadOptions{})
	require.NoError(t, err)
	require.Greater(t, len(revs), 10)
	require.Equal(t, seq(101, revs[len(revs)-1]), revs)
	tip, err := c.Tip(context.Background())
	newest, at := tip.Revision, tip.At
	require.NoError(t, err)
	require.Equal(t, revs[len(revs)-1], newest)
	require.False(t, at.IsZero())
	sealedOnly, err := readAllRevisions(t, c, ReadOptions{SkipOpen: true})
	require.NoError(t, err)
	require.Equal(t, seq(101, 110), sealedOnly)
}

// TestShipper: sealed segments go to the other target in order, with their records, and never
// one that overlaps a segment the target holds (another writer's); the end record follows.
func TestShipper(t *testing.T) {
	base := testBase()
	local, _ := localRepo(t, "local")
	remote, _ := localRepo(t, "remote")
	storeChain(t, local, base, [2]int64{101, 110}, [2]int64{111, 120}, [2]int64{121, 130})
	// The remote holds another writer's segment of 111-125, continuing the first one.
	storeChain(t, remote, base, [2]int64{101, 110}, [2]int64{111, 125})
	sh := NewShipper(local, remote.Target, nil, nil)
	defer sh.Close()
	done, err := sh.ship(t.Context(), base.ID)
	require.NoError(t, err)
	require.False(t, done, "the chain is open")
	l, err := remote.ListChain(t.Context(), base.ID)
	require.NoError(t, err)
	var names []string
	for _, s := range l.Segments {
		names = append(names, s.String())
	}
	require.Equal(t, []string{base.ID + ":101-110", base.ID + ":111-125"}, names, "111-120 and 121-130 overlap 111-125 and are not sent")

	// A remote with nothing gets all of it, and the end record.
	empty, _ := localRepo(t, "empty")
	require.NoError(t, local.SaveNewChainEnd(t.Context(), repository.ChainEnd{Format: 1, Base: base.ID, Last: 130, Reason: repository.EndNewBase}))
	sh2 := NewShipper(local, empty.Target, nil, nil)
	defer sh2.Close()
	done, err = sh2.ship(t.Context(), base.ID)
	require.NoError(t, err)
	require.True(t, done)
	c, err := LoadChain(t.Context(), empty, base)
	require.NoError(t, err)
	require.Empty(t, c.Problem)
	require.Equal(t, int64(130), c.Reach)
	require.NotNil(t, c.End)
	require.Equal(t, int64(130), sh2.Shipped(base.ID))
	revs, err := readAllRevisions(t, c, ReadOptions{})
	require.NoError(t, err)
	require.Equal(t, seq(101, 130), revs)
}

// TestLoadChainHandover: two writers' segments of the same chain overlap where one took over
// from the other (each continuing its own predecessor); the chain is every segment that reaches
// further, its links checked back to the base, and a reader returns the overlapping revisions
// again (a replay skips them after checking them). A segment that continues nothing on the path
// ends it.
func TestLoadChainHandover(t *testing.T) {
	base := testBase()
	repo, _ := localRepo(t, "local")
	at := time.Date(2026, 12, 2, 5, 0, 0, 0, time.UTC)
	store := func(first, last int64, prev repository.SegmentManifest, prevIsBase bool) repository.SegmentManifest {
		m := repository.SegmentManifest{Format: repository.FormatVersion, Kind: repository.KindDelta, Base: base.ID, ClusterID: base.ClusterID, First: first, Last: last}
		m.Prev, m.PrevSHA256 = prev.Ref().ManifestName(), prev.SHA256
		if prevIsBase {
			m.Prev, m.PrevSHA256 = repository.ManifestName(base.ID), base.SHA256
		}
		stored, err := storeSegment(t.Context(), repo, repository.Codec{}, bytes.NewReader(revisions(t, first, last, at)), m)
		require.NoError(t, err)
		return stored
	}
	a1 := store(101, 110, repository.SegmentManifest{}, true)
	a2 := store(111, 120, a1, false)
	b1 := store(111, 125, a1, false) // the new writer continued from a1: a2 had not reached it
	store(121, 128, a2, false)       // the old writer's last, shipped late
	store(126, 130, b1, false)
	c, err := LoadChain(t.Context(), repo, base)
	require.NoError(t, err)
	require.Empty(t, c.Problem)
	require.Equal(t, int64(130), c.Reach)
	revs, err := readAllRevisions(t, c, ReadOptions{})
	require.NoError(t, err)
	want := append(append(append(seq(101, 110), seq(111, 125)...), seq(121, 128)...), seq(126, 130)...)
	require.Equal(t, want, revs)

	// A segment whose predecessor is not on the path (forged, or of a broken chain).
	store(131, 140, repository.SegmentManifest{Base: base.ID, First: 1, Last: 1}, false)
	c, err = LoadChain(t.Context(), repo, base)
	require.NoError(t, err)
	require.Equal(t, int64(130), c.Reach)
	require.Contains(t, c.Problem, "does not continue the chain")
}
