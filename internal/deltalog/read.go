package deltalog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"filippo.io/age"

	"github.com/etcdguard/etcdguard/internal/backend"
	"github.com/etcdguard/etcdguard/internal/delta"
	"github.com/etcdguard/etcdguard/internal/repository"
)

// Chain is the chain of one base as one repository holds it, checked by its names and its hash
// links: the sealed segments follow one another from the base's revision, each continuing the one
// before.
type Chain struct {
	Repo *repository.Repository
	Base repository.Manifest
	// Segments are the sealed segments, in order.
	Segments []repository.SegmentManifest
	// Reach is the last revision of the sealed segments (the base's when there are none).
	Reach int64
	// Open is the first revision of the open segment that continues the sealed ones (Reach+1),
	// on a target that keeps one; 0 when there is none. How far it reaches is known only by
	// reading it.
	Open int64
	// End is the chain's end record, nil for an open chain.
	End *repository.ChainEnd
	// Problem says why the chain stops before what the repository holds (a gap in the names, a
	// broken link, an unreadable manifest): the segments before it are usable. Empty when
	// nothing is wrong.
	Problem string
}

// LoadChain reads the chain of base in repo: the listing, every sealed segment's manifest (small;
// the data is read only by a replay) and the end record. A chain that breaks somewhere is cut
// there, with the reason in Problem; an error is returned only when the repository cannot be read.
func LoadChain(ctx context.Context, repo *repository.Repository, base repository.Manifest) (Chain, error) {
	c := Chain{Repo: repo, Base: base, Reach: base.Status.Revision}
	l, err := repo.ListChain(ctx, base.ID)
	if err != nil {
		return c, err
	}
	// Segments in revision order; of two that start together, the longer first. Where writers
	// handed over (an old writer's segment and the new one's hold some revisions both), the
	// path takes each segment that reaches further than the one before; a replay skips the
	// revisions it has applied already, after checking them.
	refs := append([]repository.SegmentRef(nil), l.Segments...)
	sort.Slice(refs, func(i, j int) bool {
		if refs[i].First != refs[j].First {
			return refs[i].First < refs[j].First
		}
		return refs[i].Last > refs[j].Last
	})
	// linked holds the manifests whose hash links lead back to the base: a segment continues a
	// chain only if it names one of them (or the base) and carries its SHA-256.
	linked := map[string]string{repository.ManifestName(base.ID): base.SHA256}
	for _, ref := range refs {
		if ref.Base != base.ID {
			continue
		}
		if ref.First > c.Reach+1 {
			c.Problem = fmt.Sprintf("chain of %s: revisions %d-%d are in no segment (the next starts at %d)", base.ID, c.Reach+1, ref.First-1, ref.First)
			break
		}
		m, err := repo.SegmentManifest(ctx, ref)
		if err != nil {
			if !errors.Is(err, backend.ErrNotExist) && backend.Kind(err) != "" && !errors.Is(err, repository.ErrCorrupt) {
				return c, err
			}
			if ref.Last <= c.Reach {
				continue // covered already; an unreadable overlap costs nothing
			}
			c.Problem = err.Error()
			break
		}
		if sum, ok := linked[m.Prev]; !ok || sum != m.PrevSHA256 || m.ClusterID != base.ClusterID {
			if ref.Last <= c.Reach {
				continue
			}
			c.Problem = fmt.Sprintf("%v: segment %s does not continue the chain (it names %s)", repository.ErrChainBroken, ref, m.Prev)
			break
		}
		linked[ref.ManifestName()] = m.SHA256
		if ref.Last <= c.Reach {
			continue // another writer's segment of revisions the path holds
		}
		c.Segments = append(c.Segments, m)
		c.Reach = m.Last
	}
	for _, first := range l.Open {
		if first == c.Reach+1 && c.Problem == "" {
			c.Open = first
		}
	}
	if l.Ended {
		e, err := repo.ChainEnd(ctx, base.ID)
		if err != nil {
			c.Problem = fmt.Sprintf("its end record cannot be read: %v", err)
		} else {
			c.End = &e
		}
	}
	return c, nil
}

// ReadOptions bounds what a Reader returns.
type ReadOptions struct {
	// Identities decrypt encrypted segments.
	Identities []age.Identity
	// UpTo stops after revision UpTo (0: no bound).
	UpTo int64
	// SkipOpen leaves out the open segment: only sealed segments count.
	SkipOpen bool
}

// Reader returns the records of a chain in order, segment after segment, each segment's bytes
// checked against its manifest (stored and plain SHA-256) as it is read; then the complete
// prefix of the open segment, if there is one. It holds one record at a time.
type Reader struct {
	ctx  context.Context
	c    Chain
	opts ReadOptions
	i    int // the next sealed segment to open
	cur  *segmentReader
	done bool
	last int64 // the last revision returned
	// OpenDamaged is set when the open segment was damaged after its complete records (a
	// damaged byte, not a cut-off end): the reader ended there.
	OpenDamaged error
}

// NewReader returns a Reader of c. Close it.
func (c Chain) NewReader(ctx context.Context, opts ReadOptions) *Reader {
	return &Reader{ctx: ctx, c: c, opts: opts, last: c.Base.Status.Revision}
}

// Last is the last revision Next returned (the base's before the first).
func (r *Reader) Last() int64 { return r.last }

// Next returns the next record: a delta.Revision, delta.LeaseGrant or delta.LeaseRevoke. It
// returns io.EOF after the last record (of the bound, of the chain).
func (r *Reader) Next() (delta.Record, error) {
	for !r.done {
		if err := r.ctx.Err(); err != nil {
			return nil, err
		}
		if r.cur == nil {
			if err := r.openNext(); err != nil {
				return nil, err
			}
			continue
		}
		rec, err := r.cur.next()
		if err != nil && r.cur.open && errors.Is(err, delta.ErrCorrupt) {
			r.OpenDamaged = err
			err = io.EOF
		}
		if errors.Is(err, io.EOF) {
			r.cur.close()
			r.cur = nil
			continue
		}
		if err != nil {
			return nil, err
		}
		if rv, ok := rec.(delta.Revision); ok {
			if r.opts.UpTo > 0 && rv.Revision > r.opts.UpTo {
				if err := r.Stop(); err != nil {
					return nil, err
				}
				break
			}
			r.last = max(r.last, rv.Revision) // a handover's overlap repeats revisions
		}
		return rec, nil
	}
	return nil, io.EOF
}

// Stop ends the reader before the end of the chain (its caller reached the moment it reads up
// to): the rest of the sealed segment being read is read through its checks, so that the
// records already returned from it are known to be the bytes its manifest describes (their
// CRCs alone do not say that). It returns what those checks found; the open segment has none.
func (r *Reader) Stop() error {
	defer r.finish()
	if r.done || r.cur == nil || r.cur.open {
		return nil
	}
	for {
		_, err := r.cur.next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// openNext opens the next segment, or ends the reader.
func (r *Reader) openNext() error {
	if r.opts.UpTo > 0 && r.last >= r.opts.UpTo {
		r.finish()
		return nil
	}
	if r.i < len(r.c.Segments) {
		m := r.c.Segments[r.i]
		r.i++
		sr, err := openSealed(r.ctx, r.c.Repo, m, r.opts.Identities)
		if err != nil {
			return err
		}
		r.cur = sr
		return nil
	}
	if r.c.Open == 0 || r.opts.SkipOpen || r.i > len(r.c.Segments) {
		r.finish()
		return nil
	}
	r.i++
	name := repository.OpenSegmentName(r.c.Base.ID, r.c.Open)
	rc, err := r.c.Repo.Backend().Open(r.ctx, name)
	if errors.Is(err, backend.ErrNotExist) {
		// Sealed meanwhile (the writer runs): a reader that started before it sees the chain as
		// it was listed; its sealed copy is read by the next reader.
		r.finish()
		return nil
	}
	if err != nil {
		return fmt.Errorf("target %s: open %s: %w", r.c.Repo.Target.Name, name, err)
	}
	r.cur = &segmentReader{name: name, rc: rc, r: delta.NewReader(rc), open: true}
	return nil
}

func (r *Reader) finish() {
	r.done = true
	if r.cur != nil {
		r.cur.close()
		r.cur = nil
	}
}

// Close releases the segment being read.
func (r *Reader) Close() { r.finish() }

// segmentReader reads one segment's records.
type segmentReader struct {
	name    string
	m       repository.SegmentManifest
	rc      io.ReadCloser
	dec     io.ReadCloser
	r       *delta.Reader
	stored  *repository.Digest
	plain   *repository.Digest
	open    bool // the open segment: a cut-off end is its end
	records int64
}

func openSealed(ctx context.Context, repo *repository.Repository, m repository.SegmentManifest, ids []age.Identity) (*segmentReader, error) {
	rc, err := repo.OpenObject(ctx, m.DataObject)
	if err != nil {
		return nil, fmt.Errorf("read segment %s: %w", m.Ref(), err)
	}
	sr := &segmentReader{name: repo.Target.Name + ":" + m.Data, m: m, rc: rc, stored: repository.NewDigest(), plain: repository.NewDigest()}
	dec, err := repository.NewDecoder(io.TeeReader(rc, sr.stored), m.Compression, m.Encryption, ids, m.RawSize)
	if err != nil {
		rc.Close()
		return nil, fmt.Errorf("read segment %s: %w", m.Ref(), err)
	}
	sr.dec = dec
	sr.r = delta.NewReader(io.TeeReader(dec, sr.plain))
	return sr, nil
}

// next returns the segment's next record, checking at its end that the bytes were the
// manifest's.
func (s *segmentReader) next() (delta.Record, error) {
	rec, err := s.r.Next()
	switch {
	case err == nil:
		s.records++
		if rv, ok := rec.(delta.Revision); ok && !s.open && (rv.Revision < s.m.First || rv.Revision > s.m.Last) {
			return nil, fmt.Errorf("%w: %s holds revision %d, outside %d-%d", ErrCorrupt, s.name, rv.Revision, s.m.First, s.m.Last)
		}
		return rec, nil
	case s.open && (errors.Is(err, delta.ErrTruncated) || errors.Is(err, io.EOF)):
		return nil, io.EOF // the complete prefix of what the writer has synced
	case errors.Is(err, io.EOF):
		// Drain what follows the trailer (nothing, in a good segment) through the hashes.
		if _, err := io.Copy(io.Discard, s.dec); err != nil {
			return nil, fmt.Errorf("read %s: %w", s.name, err)
		}
		if _, err := io.Copy(s.stored, s.rc); err != nil {
			return nil, fmt.Errorf("read %s: %w", s.name, err)
		}
		if !s.plain.Matches(s.m.RawSize, s.m.SHA256) {
			return nil, fmt.Errorf("%w: %s decodes to %d bytes with SHA-256 %s; its manifest says %d, %s", ErrCorrupt, s.name, s.plain.Size(), s.plain.Sum(), s.m.RawSize, s.m.SHA256)
		}
		if !s.stored.Matches(s.m.StoredSize, s.m.StoredSHA256) {
			return nil, fmt.Errorf("%w: %s is %d bytes with SHA-256 %s; its manifest says %d, %s", ErrCorrupt, s.name, s.stored.Size(), s.stored.Sum(), s.m.StoredSize, s.m.StoredSHA256)
		}
		return nil, io.EOF
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded), backend.Kind(err) != "",
		errors.Is(err, repository.ErrWrongKey):
		return nil, fmt.Errorf("read %s: %w", s.name, err)
	default:
		// What the storage returned does not decode (a zstd frame's checksum, a record's CRC, an
		// age chunk's tag): the stored segment is damaged.
		if errors.Is(err, ErrCorrupt) || errors.Is(err, delta.ErrCorrupt) {
			return nil, fmt.Errorf("read %s: %w", s.name, err)
		}
		return nil, fmt.Errorf("%w: read %s: %w", ErrCorrupt, s.name, err)
	}
}

func (s *segmentReader) close() {
	if s.dec != nil {
		s.dec.Close()
	}
	s.rc.Close()
}

// Tip is where a chain ends: its newest revision and when it was received, and, when its open
// segment is damaged after its complete records (a changed byte, not the cut-off end of a killed
// writer), the damage: a replay ends there.
type Tip struct {
	Revision int64
	At       time.Time
	Damage   error
}

// Tip returns where the chain ends: the last revision of the open segment's complete prefix
// when there is an open segment, else the last sealed segment's (the base's revision and zero
// time for an empty chain). Only the open segment is read, once.
func (c Chain) Tip(ctx context.Context) (Tip, error) {
	t := Tip{Revision: c.Reach}
	if n := len(c.Segments); n > 0 {
		t.At = c.Segments[n-1].LastTime
	}
	if c.Open == 0 {
		return t, nil
	}
	st, damage, err := scanOpen(ctx, c.Repo, repository.OpenSegmentName(c.Base.ID, c.Open))
	if errors.Is(err, backend.ErrNotExist) {
		return t, nil // sealed meanwhile: a new listing sees it
	}
	if err != nil {
		return t, err
	}
	if st.Last > t.Revision {
		t.Revision, t.At = st.Last, st.LastTime
	}
	t.Damage = damage
	return t, nil
}

// RevisionAt returns the newest revision of the chain received at or before t, and when it was
// received; the base's revision (and zero time) when none was. It reads the chain up to there.
func (c Chain) RevisionAt(ctx context.Context, ids []age.Identity, t time.Time) (int64, time.Time, error) {
	r := c.NewReader(ctx, ReadOptions{Identities: ids})
	defer r.Close()
	rev, at := c.Base.Status.Revision, time.Time{}
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			return rev, at, nil
		}
		if err != nil {
			return rev, at, err
		}
		if rv, ok := rec.(delta.Revision); ok {
			if rv.Received.After(t) {
				return rev, at, nil
			}
			rev, at = rv.Revision, rv.Received
		}
	}
}

// ReachByNames says how far the chain of base in repo reaches, from the names of its segments
// alone (one listing, no object read): the last revision of the segments that follow one another
// from the base, and whether an open segment continues them. LoadChain checks what this only
// reads; it serves choosing among backups, where reading every manifest would cost too much.
func ReachByNames(ctx context.Context, repo *repository.Repository, base repository.Manifest) (reach int64, open bool, err error) {
	l, err := repo.ListChain(ctx, base.ID)
	if err != nil {
		return base.Status.Revision, false, err
	}
	refs := append([]repository.SegmentRef(nil), l.Segments...)
	sort.Slice(refs, func(i, j int) bool { return refs[i].First < refs[j].First })
	reach = base.Status.Revision
	for _, r := range refs {
		if r.First > reach+1 {
			break
		}
		reach = max(reach, r.Last)
	}
	for _, first := range l.Open {
		open = open || first == reach+1
	}
	return reach, open, nil
}
