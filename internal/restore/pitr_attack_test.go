package restore

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/etcdguard/etcdguard/internal/backend"
	"github.com/etcdguard/etcdguard/internal/delta"
	"github.com/etcdguard/etcdguard/internal/deltalog"
	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/snapshot"
)

// fakeChain is a backup's manifest in a local target (without its snapshot: planning a chain
// and reading it back look at the manifest and the delta log only) and a delta log of it that
// the test writes by hand, segment by segment, as a hostile or careless operator might leave
// it. Revision r holds one put of /k, received r seconds after the backup started.
type fakeChain struct {
	t             *testing.T
	repo          *repository.Repository
	base          repository.Manifest
	prev, prevSHA string
}

func newFakeChain(t *testing.T, baseRev int64, started time.Time) *fakeChain {
	t.Helper()
	target := repository.Target{Name: "local", URL: "file://" + filepath.Join(t.TempDir(), "repo")}
	require.NoError(t, target.Normalize())
	repo, err := repository.Open(t.Context(), target)
	require.NoError(t, err)
	t.Cleanup(func() { repo.Close() })
	base := repository.Manifest{Format: repository.FormatVersion, ID: repository.NewID(started), Kind: "full", ClusterID: "00000000000000aa",
		Revision: baseRev, Started: started, Created: started.Add(time.Second)}
	base.SHA256 = hex.EncodeToString(make([]byte, 32))
	base.Status.Revision = baseRev
	return &fakeChain{t: t, repo: repo, base: base, prev: repository.ManifestName(base.ID), prevSHA: base.SHA256}
}

func (f *fakeChain) received(rev int64) time.Time {
	return f.base.Started.Add(time.Duration(rev-f.base.Revision) * time.Second).UTC()
}

// plain returns the plain bytes of a segment of revisions first..last; sealed adds its trailer.
func (f *fakeChain) plain(first, last int64, sealed bool, value func(rev int64) string) ([]byte, delta.Stats) {
	var buf bytes.Buffer
	w := delta.NewWriter(&buf)
	for rev := first; rev <= last; rev++ {
		ev := &mvccpb.Event{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte("/k"), Value: []byte(value(rev)), CreateRevision: f.base.Revision + 1, ModRevision: rev, Version: rev - f.base.Revision}}
		require.NoError(f.t, w.Append(delta.Revision{Revision: rev, Received: f.received(rev), Events: []*mvccpb.Event{ev}}))
	}
	if sealed {
		require.NoError(f.t, w.Close())
	} else {
		require.NoError(f.t, w.Flush())
	}
	return buf.Bytes(), w.Stats()
}

func defaultValue(rev int64) string { return fmt.Sprintf("v%d", rev) }

// seal stores a sealed segment of revisions first..last (plain, uncompressed) and its manifest,
// linked to the previous one.
func (f *fakeChain) seal(first, last int64) repository.SegmentManifest {
	f.t.Helper()
	data, st := f.plain(first, last, true, defaultValue)
	ref := repository.SegmentRef{Base: f.base.ID, First: first, Last: last}
	sum := sha256.Sum256(data)
	m := repository.SegmentManifest{
		Format: repository.FormatVersion, Kind: repository.KindDelta, Base: f.base.ID, ClusterID: f.base.ClusterID,
		First: first, Last: last, FirstTime: st.FirstTime, LastTime: st.LastTime, Events: int(st.Events),
		Prev: f.prev, PrevSHA256: f.prevSHA, Created: f.received(last),
	}
	m.Data = ref.DataName(repository.Codec{Compression: repository.CompressionNone})
	m.Compression = repository.CompressionNone
	m.RawSize, m.SHA256 = int64(len(data)), hex.EncodeToString(sum[:])
	m.StoredSize, m.StoredSHA256 = m.RawSize, m.SHA256
	_, err := f.repo.SaveNew(f.t.Context(), m.Data, bytes.NewReader(data))
	require.NoError(f.t, err)
	require.NoError(f.t, f.repo.SaveNewSegmentManifest(f.t.Context(), m))
	f.prev, f.prevSHA = ref.ManifestName(), m.SHA256
	return m
}

// open writes the open segment of revisions first..last, as a writer that syncs it leaves it.
func (f *fakeChain) open(first, last int64) {
	f.t.Helper()
	data, _ := f.plain(first, last, false, defaultValue)
	ap, ok := backend.As[backend.Appender](f.repo.Backend())
	require.True(f.t, ok)
	af, err := ap.Create(f.t.Context(), repository.OpenSegmentName(f.base.ID, first))
	require.NoError(f.t, err)
	_, err = af.Write(data)
	require.NoError(f.t, err)
	require.NoError(f.t, af.Sync())
	require.NoError(f.t, af.Close())
}

func (f *fakeChain) entry() snapshot.Entry {
	return snapshot.Entry{Manifest: f.base, Copies: []snapshot.Copy{{Repo: f.repo, Manifest: f.base}}}
}

// TestPlanChainRefusesAPointBeforeItsBackup: `restore ID --to-revision R` with R below the
// backup's revision, or `--to-time T` with T before the backup was taken, asks for a moment the
// backup is already past: no replay can go back, so the restore must be refused before anything
// is restored, not carried out at the backup's (later) revision. Without a delta log the
// revision case was restored at the backup's revision, and the time case always was (with a
// delta log, the replay stopped before its first revision); the revision case with a delta log
// failed only in the replay, after the snapshot was fetched and restored into the staging dir.
func TestPlanChainRefusesAPointBeforeItsBackup(t *testing.T) {
	started := time.Date(2026, 12, 2, 14, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name  string
		chain bool
		p     Point
	}{
		{"revision below the backup's, no delta log", false, Point{Revision: 90}},
		{"revision below the backup's, with a delta log", true, Point{Revision: 90}},
		{"moment before the backup, no delta log", false, Point{Time: started.Add(-time.Minute)}},
		{"moment before the backup, with a delta log", true, Point{Time: started.Add(-time.Minute)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeChain(t, 100, started)
			if tc.chain {
				f.seal(101, 110)
			}
			cp, _, err := PlanChain(t.Context(), f.entry(), tc.p)
			require.ErrorIs(t, err, ErrInput, "a point before the backup is refused (planned a replay: %t)", cp != nil)
		})
	}
	t.Run("the backup's own revision and moment are fine", func(t *testing.T) {
		f := newFakeChain(t, 100, started)
		f.seal(101, 110)
		_, _, err := PlanChain(t.Context(), f.entry(), Point{Revision: 100})
		require.NoError(t, err)
		_, _, err = PlanChain(t.Context(), f.entry(), Point{Time: started})
		require.NoError(t, err)
	})
}

// TestPlanChainChecksTheOpenSegmentReaches: --to-revision R past the sealed segments is accepted
// when an open segment continues them, but only if that open segment holds R. Otherwise the plan
// promised R: `recover` stopped every member and only then found, in the replay, that the log
// ends before R (ErrReplayShort), and `restore` fetched and restored the snapshot first.
func TestPlanChainChecksTheOpenSegmentReaches(t *testing.T) {
	f := newFakeChain(t, 100, time.Date(2026, 12, 2, 14, 0, 0, 0, time.UTC))
	f.seal(101, 110)
	f.open(111, 115)

	cp, _, err := PlanChain(t.Context(), f.entry(), Point{Revision: 115})
	require.NoError(t, err, "the open segment holds revision 115")
	require.Equal(t, int64(115), cp.UpTo)

	cp, _, err = PlanChain(t.Context(), f.entry(), Point{Revision: 116})
	require.ErrorIs(t, err, ErrInput, "the open segment ends at 115 (planned a replay to %d)", upTo(cp))
	require.ErrorContains(t, err, "115")
}

func upTo(cp *ChainPlan) int64 {
	if cp == nil {
		return 0
	}
	return cp.UpTo
}

// TestChainReaderChecksASegmentItStopsInside: a sealed segment whose data was replaced by another
// well-formed segment (every record's CRC right, its own trailer right, but not the bytes its
// manifest's SHA-256 names) is corrupt, also when the replay's revision is inside it: the reader
// stopped there and never compared the segment with its manifest, so the altered revisions
// before the bound were replayed as if verified.
func TestChainReaderChecksASegmentItStopsInside(t *testing.T) {
	f := newFakeChain(t, 100, time.Date(2026, 12, 2, 14, 0, 0, 0, time.UTC))
	m := f.seal(101, 110)
	forged, _ := f.plain(101, 110, true, func(rev int64) string {
		if rev == 105 {
			return "forged"
		}
		return defaultValue(rev)
	})
	_, err := f.repo.Save(t.Context(), m.Data, bytes.NewReader(forged))
	require.NoError(t, err)

	cp, _, err := PlanChain(t.Context(), f.entry(), Point{})
	require.NoError(t, err)
	for _, tc := range []struct {
		name  string
		upTo  int64
		until time.Time
	}{
		{"to its end", 0, time.Time{}},
		{"up to a revision inside it", 107, time.Time{}},
		{"up to a moment inside it", 0, f.received(107)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := cp.Chain.NewReader(t.Context(), deltalog.ReadOptions{UpTo: tc.upTo})
			defer r.Close()
			src := NewChainSource(r, tc.until)
			var err error
			for err == nil {
				_, err = src.Next()
			}
			require.ErrorIs(t, err, deltalog.ErrCorrupt, "the segment is not the one its manifest describes")
		})
	}
}

// TestPlanChainWarnsOfADamagedOpenSegment: a changed byte in the open segment is damage, not the
// cut-off end of a killed writer; the replay can use only the records before it, and the
// operator must be told the restore stops there (the agent reported later revisions durable).
// The reader ended the replay at the damage as if at the segment's end, and nothing said so.
func TestPlanChainWarnsOfADamagedOpenSegment(t *testing.T) {
	f := newFakeChain(t, 100, time.Date(2026, 12, 2, 14, 0, 0, 0, time.UTC))
	f.seal(101, 110)
	f.open(111, 120)
	name := repository.OpenSegmentName(f.base.ID, 111)
	lb, ok := backend.As[interface{ Location() string }](f.repo.Backend())
	require.True(t, ok)
	path := filepath.Join(lb.Location(), filepath.FromSlash(name))
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	data[len(data)*2/3] ^= 0x40 // a byte in the middle of the records
	require.NoError(t, os.WriteFile(path, data, 0o600))

	cp, notes, err := PlanChain(t.Context(), f.entry(), Point{})
	require.NoError(t, err, "the complete records before the damage are still the best there is")
	require.NotNil(t, cp)
	require.True(t, slices.ContainsFunc(notes, func(n string) bool { return strings.Contains(n, "damaged") }), "a note says the open segment is damaged: %q", notes)
}

// TestPlanChainWarnsOfAMomentPastTheLog: --to-time T after the newest revision the delta log
// holds restores that revision, silently: whatever the cluster wrote between it and T (the
// writer stopped, its disk filled, it was cut off) is not there, while --to-revision past the
// log is refused. The log cannot say whether the cluster wrote anything then (an idle cluster
// writes nothing), so the restore goes on, but says how far before T the log ends.
func TestPlanChainWarnsOfAMomentPastTheLog(t *testing.T) {
	f := newFakeChain(t, 100, time.Date(2026, 12, 2, 14, 0, 0, 0, time.UTC))
	f.seal(101, 110)
	f.open(111, 115) // its last revision received at 14:00:15
	hasWarning := func(notes []string) bool {
		return slices.ContainsFunc(notes, func(n string) bool { return strings.Contains(n, "14:00:15") })
	}

	_, notes, err := PlanChain(t.Context(), f.entry(), Point{Time: f.received(115).Add(4 * time.Hour)})
	require.NoError(t, err)
	require.True(t, hasWarning(notes), "a note says the log ends hours before the moment: %q", notes)

	_, notes, err = PlanChain(t.Context(), f.entry(), Point{Time: f.received(113)})
	require.NoError(t, err)
	require.False(t, hasWarning(notes), "no note for a moment the log covers: %q", notes)
}
