package repository

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/etcdguard/etcdguard/internal/backend"
)

// The delta log's objects in a repository: listing a chain, reading and writing its manifests
// and its end record, and the open segment that the writer appends to on a local target.

// openExt ends the name of an open segment: deltas/<base>/<first>.open, the plain segment its
// writer appends to and syncs, on a target whose backend is a backend.Appender (a local disk).
// It sorts after the sealed segments that start at the same revision ('.' after '-'). It is
// plain, as etcd's own WAL on the same disk is; the sealed segment made from it goes through
// the codec, and the open one is removed only after that sealed one is stored and read back.
const openExt = ".open"

// OpenSegmentName returns the name of the open segment of the chain of base that starts at
// revision first.
func OpenSegmentName(base string, first int64) string {
	return fmt.Sprintf("%s%s/%0*d%s", deltasDir, base, revWidth, first, openExt)
}

// ParseOpenSegmentName returns the chain and first revision of an open segment's name.
func ParseOpenSegmentName(name string) (base string, first int64, ok bool) {
	rest, ok := strings.CutPrefix(name, deltasDir)
	if !ok {
		return "", 0, false
	}
	base, file, ok := strings.Cut(rest, "/")
	if !ok || !ValidID(base) {
		return "", 0, false
	}
	stem, ok := strings.CutSuffix(file, openExt)
	if !ok || len(stem) != revWidth {
		return "", 0, false
	}
	first, err := strconv.ParseInt(stem, 10, 64)
	if err != nil || first < 1 || OpenSegmentName(base, first) != name {
		return "", 0, false
	}
	return base, first, true
}

// ChainListing is what a repository holds of one chain, from one listing.
type ChainListing struct {
	Base string
	// Segments are the sealed segments whose manifests are stored, in revision order (as
	// listed: CheckChain says whether they follow one another).
	Segments []SegmentRef
	// Open are the first revisions of the chain's open segments, oldest first: one while a
	// writer appends; a killed writer's waits for the next writer to seal it.
	Open []int64
	// Ended says the chain's end record is stored.
	Ended bool
	// Data are the names of the data objects listed, for the ones without a manifest.
	Data map[string]bool
	// Sizes are the stored sizes of every object listed, by name.
	Sizes map[string]int64
}

// Empty reports whether the listing found no object at all: the base has no chain.
func (l ChainListing) Empty() bool { return len(l.Sizes) == 0 }

// DataOf returns the data objects listed of segment s (its .delta[.zst][.age] object; more than
// one only if something wrote odd names), found by name alone.
func (l ChainListing) DataOf(s SegmentRef) []string {
	var out []string
	for name := range l.Data {
		if strings.HasPrefix(name, s.stem()+".delta") {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// ChainBases returns the bases of every chain folder in the repository (deltas/<base>/), in the
// order of their names, whether or not the base's manifest is there.
func (r *Repository) ChainBases(ctx context.Context) ([]string, error) {
	var out []string
	err := r.be.List(ctx, deltasDir, func(fi backend.FileInfo) error {
		base, _, ok := strings.Cut(strings.TrimPrefix(fi.Name, deltasDir), "/")
		if ok && ValidID(base) && (len(out) == 0 || out[len(out)-1] != base) {
			out = append(out, base)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("target %s: list the delta chains: %w", r.Target.Name, err)
	}
	return out, nil
}

// ListChain lists the objects of the chain of base.
func (r *Repository) ListChain(ctx context.Context, base string) (ChainListing, error) {
	l := ChainListing{Base: base, Data: map[string]bool{}, Sizes: map[string]int64{}}
	err := r.be.List(ctx, ChainPrefix(base), func(fi backend.FileInfo) error {
		l.Sizes[fi.Name] = fi.Size
		if s, ok := ParseSegmentManifestName(fi.Name); ok {
			l.Segments = append(l.Segments, s)
			return nil
		}
		if b, first, ok := ParseOpenSegmentName(fi.Name); ok && b == base {
			l.Open = append(l.Open, first)
			return nil
		}
		if fi.Name == ChainEndName(base) {
			l.Ended = true
			return nil
		}
		l.Data[fi.Name] = true
		return nil
	})
	if err != nil {
		return ChainListing{}, fmt.Errorf("target %s: list the delta chain of %s: %w", r.Target.Name, base, err)
	}
	return l, nil
}

// SaveNewSegmentManifest stores a segment's manifest, the last object of a segment, with
// SaveNew: a segment is written once, and of two writers of the same segment only one succeeds.
func (r *Repository) SaveNewSegmentManifest(ctx context.Context, m SegmentManifest) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("encode the manifest of segment %s: %w", m.Ref(), err)
	}
	_, err = r.SaveNew(ctx, m.Ref().ManifestName(), bytes.NewReader(append(data, '\n')))
	return err
}

// SegmentManifest reads the manifest of segment s and checks that it describes s: its kind,
// base and revisions, and the data object its codec implies.
func (r *Repository) SegmentManifest(ctx context.Context, s SegmentRef) (SegmentManifest, error) {
	var m SegmentManifest
	if err := r.loadJSON(ctx, s.ManifestName(), &m); err != nil {
		return SegmentManifest{}, err
	}
	switch {
	case m.Format != FormatVersion:
		return SegmentManifest{}, fmt.Errorf("target %s: segment %s has format %d; this etcdguard reads format %d", r.Target.Name, s, m.Format, FormatVersion)
	case m.Kind != KindDelta || m.Ref() != s:
		return SegmentManifest{}, fmt.Errorf("target %s: the manifest stored as segment %s describes %s (kind %q): it is not used", r.Target.Name, s, m.Ref(), m.Kind)
	}
	want, err := segmentDataName(s, m.Compression, m.Encryption)
	if err != nil {
		return SegmentManifest{}, fmt.Errorf("target %s: segment %s: %w", r.Target.Name, s, err)
	}
	if m.Data != want {
		return SegmentManifest{}, fmt.Errorf("target %s: the manifest of segment %s names the data object %q, not %s: it is not used", r.Target.Name, s, m.Data, want)
	}
	return m, nil
}

// segmentDataName is the data object a segment's compression and encryption imply.
func segmentDataName(s SegmentRef, compression string, enc *Encryption) (string, error) {
	full, err := dataNameFor("x", compression, enc)
	if err != nil {
		return "", err
	}
	return s.stem() + ".delta" + strings.TrimPrefix(full, snapshotsDir+"x/snapshot.db"), nil
}

// SaveNewChainEnd stores the record that closes a chain.
func (r *Repository) SaveNewChainEnd(ctx context.Context, e ChainEnd) error {
	data, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return fmt.Errorf("encode the end of the chain of %s: %w", e.Base, err)
	}
	_, err = r.SaveNew(ctx, ChainEndName(e.Base), bytes.NewReader(append(data, '\n')))
	return err
}

// ChainEnd reads the record that closes the chain of base; it fails with an error wrapping
// backend.ErrNotExist when the chain is open.
func (r *Repository) ChainEnd(ctx context.Context, base string) (ChainEnd, error) {
	var e ChainEnd
	if err := r.loadJSON(ctx, ChainEndName(base), &e); err != nil {
		return ChainEnd{}, err
	}
	if e.Base != base {
		return ChainEnd{}, fmt.Errorf("target %s: the end record of the chain of %s names the chain of %s: it is not used", r.Target.Name, base, e.Base)
	}
	return e, nil
}

// SaveNewRecord stores an empty record whose name is its content: a mark or an index entry.
// One already there (written by the same writer before a crash) is not an error.
func (r *Repository) SaveNewRecord(ctx context.Context, name string) error {
	_, err := r.SaveNew(ctx, name, bytes.NewReader(nil))
	if errors.Is(err, backend.ErrExist) {
		return nil
	}
	return err
}

// Marks lists the high-water mark's records, in the order of their names (revision, then time).
func (r *Repository) Marks(ctx context.Context) ([]Mark, error) {
	var out []Mark
	err := r.be.List(ctx, marksDir, func(fi backend.FileInfo) error {
		if m, ok := ParseMarkName(fi.Name); ok {
			out = append(out, m)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("target %s: list the high-water marks: %w", r.Target.Name, err)
	}
	return out, nil
}

// loadJSON reads a small JSON object. Fields it does not know are ignored: a later writer of the
// same format may add some.
func (r *Repository) loadJSON(ctx context.Context, name string, v any) error {
	data, err := backend.Load(ctx, r.be, name, 1<<20)
	if err != nil {
		return fmt.Errorf("target %s: read %s: %w", r.Target.Name, name, err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("target %s: %s is not valid JSON: %w", r.Target.Name, name, err)
	}
	return nil
}
