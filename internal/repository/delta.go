package repository

import (
	"errors"
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The delta log: what continuous protection writes between two full snapshots. Nothing writes it
// yet; these are its names and records, fixed before the writer is built (docs/design.md, "Delta
// segments"). Every object is written once and never modified, so a chain can be read while its
// writer appends to it, and copied to another target object by object.

// KindDelta is the kind of a delta segment's manifest.
const KindDelta = "delta"

// Object names of the delta log.
const (
	deltasDir = "deltas/"
	marksDir  = "marks/"
	indexDir  = "index/"
	// endName is the record that closes a chain; it sorts after every segment of the chain.
	endName = "end.json"
)

// revWidth is the width revisions are written with in names: 19 decimal digits hold every
// non-negative int64, so names sort as their revisions do, on every backend's listing.
const revWidth = 19

// SegmentRef names one delta segment: the events of revisions First..Last (both included) of the
// chain that starts at the full snapshot Base. The name alone says what a segment holds, so a
// reader lists a chain without reading any object of it.
type SegmentRef struct {
	Base        string
	First, Last int64
}

// stem is the segment's name without extension: deltas/<base>/<first>-<last>.
func (s SegmentRef) stem() string {
	return fmt.Sprintf("%s%s/%0*d-%0*d", deltasDir, s.Base, revWidth, s.First, revWidth, s.Last)
}

// ManifestName returns the name of the segment's manifest, written after its data.
func (s SegmentRef) ManifestName() string { return s.stem() + ".json" }

// DataName returns the name of the segment's data object: .delta, then the codec's own
// extensions (.zst, .age).
func (s SegmentRef) DataName(c Codec) string {
	return s.stem() + ".delta" + strings.TrimPrefix(c.Extension(), ".db")
}

// String returns the segment as people read it: base:first-last.
func (s SegmentRef) String() string { return fmt.Sprintf("%s:%d-%d", s.Base, s.First, s.Last) }

// ChainsPrefix is the folder every chain's folder is in.
const ChainsPrefix = deltasDir

// ChainPrefix returns the prefix under which every object of the chain of base lies.
func ChainPrefix(base string) string { return deltasDir + base + "/" }

// ChainEndName returns the name of the record that closes the chain of base.
func ChainEndName(base string) string { return ChainPrefix(base) + endName }

// ParseSegmentManifestName returns the segment whose manifest has the name, and false for any
// other name (data objects, the end record, names of another shape).
func ParseSegmentManifestName(name string) (SegmentRef, bool) {
	rest, ok := strings.CutPrefix(name, deltasDir)
	if !ok {
		return SegmentRef{}, false
	}
	base, file, ok := strings.Cut(rest, "/")
	if !ok || !ValidID(base) || strings.Contains(file, "/") {
		return SegmentRef{}, false
	}
	stem, ok := strings.CutSuffix(file, ".json")
	if !ok {
		return SegmentRef{}, false
	}
	a, b, ok := strings.Cut(stem, "-")
	if !ok || len(a) != revWidth || len(b) != revWidth {
		return SegmentRef{}, false
	}
	first, err1 := strconv.ParseInt(a, 10, 64)
	last, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || first < 1 || last < first {
		return SegmentRef{}, false
	}
	// A name is a segment's only if it is the one that segment is written under: strconv takes
	// a sign ("+000…1001"), which would give one segment two names sorting apart.
	s := SegmentRef{Base: base, First: first, Last: last}
	if s.ManifestName() != name {
		return SegmentRef{}, false
	}
	return s, true
}

// SegmentManifest describes one delta segment. Its fields that describe the stored data mean
// what they mean in a full snapshot's Manifest.
type SegmentManifest struct {
	Format    int    `json:"format"`
	Kind      string `json:"kind"` // KindDelta
	Base      string `json:"base"`
	ClusterID string `json:"cluster_id"`
	// First and Last are the revisions the segment holds, both included; FirstTime and LastTime
	// when the writer received them (etcd keeps no commit time: the writer's clock, recorded with
	// its skew from the source member's, see Skew).
	First     int64     `json:"first_revision"`
	Last      int64     `json:"last_revision"`
	FirstTime time.Time `json:"first_time"`
	LastTime  time.Time `json:"last_time"`
	// Skew is the writer's clock minus the source member's, as measured when the segment was cut.
	Skew   time.Duration `json:"skew_ns"`
	Events int           `json:"events"`
	// Prev links the segment to what it continues: the previous segment's manifest name, or the
	// base snapshot's manifest name for the first segment of a chain. PrevSHA256 is the SHA-256
	// of that predecessor's plain data (the base snapshot's sha256 for the first), so that a chain
	// is a hash chain: a segment swapped, dropped or reordered breaks it.
	Prev       string `json:"prev"`
	PrevSHA256 string `json:"prev_sha256"`

	// DataObject describes the segment's data as a full manifest's does.
	DataObject
	Created time.Time `json:"created"`
	// WriterTerm is the election term of the writer (the revision of its election key in etcd:
	// a later writer has a higher one) and Writer who it was (host and process), so that
	// segments of a handover can be told apart.
	WriterTerm int64  `json:"writer_term,omitempty"`
	Writer     string `json:"writer,omitempty"`
}

// Ref returns the segment the manifest describes.
func (m SegmentManifest) Ref() SegmentRef {
	return SegmentRef{Base: m.Base, First: m.First, Last: m.Last}
}

// Reasons a chain ends.
const (
	// EndNewBase: a newer full snapshot was verified and stored; its chain carries on.
	EndNewBase = "new-base"
	// EndGap: the writer lost events (its watch was compacted past, or the cluster was restored
	// and its revisions went back); the chain holds nothing after Last.
	EndGap = "gap"
	// EndClusterChanged: the source's cluster id is not the chain's (a recovered cluster).
	EndClusterChanged = "cluster-changed"
)

// ChainEnd is the record that closes a chain: no segment after Last will be written to it. A
// chain without one is open: its writer may still append, or was stopped and a new writer
// continues it from Last+1 once it checks that those revisions can still be watched.
type ChainEnd struct {
	Format  int       `json:"format"`
	Base    string    `json:"base"`
	Last    int64     `json:"last_revision"`
	Reason  string    `json:"reason"`
	Next    string    `json:"next,omitempty"` // the base of the chain that carries on, if any
	Created time.Time `json:"created"`
}

// CheckChain checks the segments of the chain that starts at the full snapshot of baseRevision, as
// listed (in any order): they must follow one another without gap or overlap, the first starting
// at baseRevision+1. It returns them in order, with the revision the chain reaches.
func CheckChain(base string, baseRevision int64, segs []SegmentRef) ([]SegmentRef, int64, error) {
	out := append([]SegmentRef(nil), segs...)
	sort.Slice(out, func(i, j int) bool { return out[i].First < out[j].First })
	next := baseRevision + 1
	for _, s := range out {
		if s.Base != base {
			return nil, 0, fmt.Errorf("segment %s is not of the chain of %s", s, base)
		}
		switch {
		case s.First > next:
			return out, next - 1, fmt.Errorf("chain of %s: revisions %d-%d are in no segment (the next starts at %d)", base, next, s.First-1, s.First)
		case s.First < next:
			return out, next - 1, fmt.Errorf("chain of %s: segment %s overlaps the revisions before %d", base, s, next)
		}
		next = s.Last + 1
	}
	return out, next - 1, nil
}

// Mark is one record of the high-water mark: the repository holds every event of its cluster up
// to Revision, as of At (the writer's clock). The agent writes a new one after each segment is
// stored and verified, and while the cluster is idle, a new one now and then with the same
// revision; the high-water mark is the newest. Its name carries both fields, so the mark is read
// from a listing.
type Mark struct {
	Revision int64
	At       time.Time
}

const markTime = "20060102T150405.000Z"

// MarkName returns the name of the mark's record: marks/<revision>-<time>.
func MarkName(m Mark) string {
	return fmt.Sprintf("%s%0*d-%s", marksDir, revWidth, m.Revision, m.At.UTC().Format(markTime))
}

// ParseMarkName returns the mark a record's name holds.
func ParseMarkName(name string) (Mark, bool) {
	rest, ok := strings.CutPrefix(name, marksDir)
	if !ok {
		return Mark{}, false
	}
	rev, at, ok := parseRevTime(rest, true)
	m := Mark{Revision: rev, At: at}
	if !ok || MarkName(m) != name {
		return Mark{}, false // another spelling (a sign, a comma in the time) is not its name
	}
	return m, true
}

// IndexEntry is one record of the revision-to-time index: revision Revision was received at At.
// The agent writes one per segment, for its last revision, in a folder per UTC day, so that
// point-in-time restore finds the revision of a moment by listing one day (and, within a
// segment, by the times the segment itself records per revision).
type IndexEntry struct {
	At       time.Time
	Revision int64
}

// IndexName returns the name of an index record: index/<day>/<time>-<revision>.
func IndexName(e IndexEntry) string {
	at := e.At.UTC()
	return fmt.Sprintf("%s%s/%s-%0*d", indexDir, at.Format("20060102"), at.Format(markTime), revWidth, e.Revision)
}

// IndexDayPrefix returns the prefix of the index records of t's UTC day.
func IndexDayPrefix(t time.Time) string { return indexDir + t.UTC().Format("20060102") + "/" }

// ParseIndexName returns the entry an index record's name holds.
func ParseIndexName(name string) (IndexEntry, bool) {
	rest, ok := strings.CutPrefix(name, indexDir)
	if !ok {
		return IndexEntry{}, false
	}
	_, file, ok := strings.Cut(rest, "/")
	if !ok {
		return IndexEntry{}, false
	}
	rev, at, ok := parseRevTime(file, false)
	e := IndexEntry{At: at, Revision: rev}
	if !ok || IndexName(e) != name {
		return IndexEntry{}, false // in another day's folder, or another spelling of its name
	}
	return e, true
}

// RevisionAt returns the newest revision of entries received at or before t, and false when none
// was. Entries may come in any order.
func RevisionAt(entries []IndexEntry, t time.Time) (int64, bool) {
	var best IndexEntry
	found := false
	for _, e := range entries {
		if !e.At.After(t) && (!found || e.Revision > best.Revision) {
			best, found = e, true
		}
	}
	return best.Revision, found
}

// parseRevTime parses "<revision>-<time>" (revFirst) or "<time>-<revision>".
func parseRevTime(s string, revFirst bool) (int64, time.Time, bool) {
	var a, b string
	var ok bool
	if revFirst {
		a, b, ok = strings.Cut(s, "-")
	} else {
		b, a, ok = strings.Cut(s, "-")
	}
	if !ok || len(a) != revWidth || path.Base(s) != s {
		return 0, time.Time{}, false
	}
	rev, err := strconv.ParseInt(a, 10, 64)
	if err != nil || rev < 0 {
		return 0, time.Time{}, false
	}
	at, err := time.Parse(markTime, b)
	if err != nil {
		return 0, time.Time{}, false
	}
	return rev, at, true
}

// ErrChainBroken is returned (wrapped) when a chain's hash links do not hold.
var ErrChainBroken = errors.New("delta chain broken")

// CheckLinks checks the hash links of a chain's manifests, in order: each names its predecessor
// (the base snapshot's manifest for the first) and carries the SHA-256 of its plain data.
func CheckLinks(base Manifest, segs []SegmentManifest) error {
	prev, prevSHA := ManifestName(base.ID), base.SHA256
	for _, s := range segs {
		if s.Kind != KindDelta || s.Base != base.ID {
			return fmt.Errorf("%w: %s is not a segment of the chain of %s", ErrChainBroken, s.Ref(), base.ID)
		}
		if s.ClusterID != base.ClusterID {
			return fmt.Errorf("%w: segment %s is of cluster %s, its base of %s", ErrChainBroken, s.Ref(), s.ClusterID, base.ClusterID)
		}
		if s.Prev != prev || s.PrevSHA256 != prevSHA {
			return fmt.Errorf("%w: segment %s does not continue %s", ErrChainBroken, s.Ref(), prev)
		}
		prev, prevSHA = s.Ref().ManifestName(), s.SHA256
	}
	return nil
}
