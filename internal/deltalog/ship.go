package deltalog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/etcdguard/etcdguard/internal/backend"
	"github.com/etcdguard/etcdguard/internal/repository"
)

// Shipper copies the delta log from the local target to one other target: every sealed segment
// the other lacks, in revision order, then the chain's end record. The local target is the
// queue: while the other target is down nothing is dropped, and when it answers again the
// segments go over in order, each checked (read back) before its manifest is written. A chain
// is never shipped with a hole: segment N+1 is sent only after segment N is there.
type Shipper struct {
	From *repository.Repository
	// Target is where segments go; it is opened at the first round that can (an S3 endpoint
	// down when the agent starts is opened once it answers) and kept open.
	Target repository.Target
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu     sync.Mutex
	to     *repository.Repository // nil until opened
	chains map[string]bool        // bases whose chains may have something to ship
	wake   chan struct{}
	// Shipped is the last revision known stored on To, per base.
	shipped map[string]int64
	// newest is the newest revision shipped (of any chain), received by the writer at newestAt.
	newest   int64
	newestAt time.Time
	skipped  map[repository.SegmentRef]bool // segments not shipped (overlaps), logged once
}

// overlapping returns a segment of segs that shares a revision with ref.
func overlapping(segs []repository.SegmentRef, ref repository.SegmentRef) (repository.SegmentRef, bool) {
	for _, o := range segs {
		if o.First <= ref.Last && ref.First <= o.Last {
			return o, true
		}
	}
	return repository.SegmentRef{}, false
}

// NewShipper returns a shipper from the local target to another.
func NewShipper(from *repository.Repository, to repository.Target, lg *slog.Logger, now func() time.Time) *Shipper {
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	return &Shipper{From: from, Target: to, Logger: lg.With("target", to.Name), Now: now,
		chains: map[string]bool{}, wake: make(chan struct{}, 1), shipped: map[string]int64{}, skipped: map[repository.SegmentRef]bool{}}
}

// To returns the other target's repository, opening it if it is not open yet; nil, with the
// reason, while it cannot be opened.
func (s *Shipper) To(ctx context.Context) (*repository.Repository, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.to != nil {
		return s.to, nil
	}
	r, err := repository.Open(ctx, s.Target)
	if err != nil {
		return nil, err
	}
	s.to = r
	return r, nil
}

// Close closes the other target's repository, if it was opened.
func (s *Shipper) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.to != nil {
		s.to.Close()
		s.to = nil
	}
}

// Sealed tells the shipper that a segment was sealed on the local target.
func (s *Shipper) Sealed(m repository.SegmentManifest) { s.Notify(m.Base) }

// Notify tells the shipper that the chain of base has something new (a segment, its end).
func (s *Shipper) Notify(base string) {
	s.mu.Lock()
	s.chains[base] = true
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Shipped returns the last revision of the chain of base known stored on the other target.
func (s *Shipper) Shipped(base string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shipped[base]
}

// Run ships until ctx ends: at start every chain the local target holds, then whatever Notify
// names, and again after a failure, with a backoff of up to a minute.
func (s *Shipper) Run(ctx context.Context) error {
	if err := s.discover(ctx); err != nil {
		s.Logger.Warn("could not list the delta chains of the local target; new segments are shipped as they are sealed", "error", err)
	}
	backoff := time.Duration(0)
	failing := false
	for {
		err := s.round(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			backoff = min(max(2*backoff, 2*time.Second), time.Minute)
			if !failing {
				s.Logger.Warn("could not ship the delta log; the segments wait on the local target and are sent when the target answers", "error", err, "retry_in", backoff)
			}
			failing = true
		default:
			if failing {
				s.Logger.Info("shipping the delta log again: the target caught up")
			}
			backoff, failing = 0, false
		}
		var retry <-chan time.Time
		var t *time.Timer
		if failing {
			t = time.NewTimer(backoff)
			retry = t.C
		}
		select {
		case <-ctx.Done():
		case <-s.wake:
		case <-retry:
		}
		if t != nil {
			t.Stop()
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// discover adds every chain of the local target.
func (s *Shipper) discover(ctx context.Context) error {
	bases := map[string]bool{}
	err := s.From.Backend().List(ctx, "deltas/", func(fi backend.FileInfo) error {
		rest := strings.TrimPrefix(fi.Name, "deltas/")
		if base, _, ok := strings.Cut(rest, "/"); ok && repository.ValidID(base) {
			bases[base] = true
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	for b := range bases {
		s.chains[b] = true
	}
	s.mu.Unlock()
	return nil
}

// round ships every pending chain, oldest first. A chain that fails does not hold up the
// others (a segment of an old chain that cannot be read must not stop the newest from going
// off-site); the round returns every chain's failure.
func (s *Shipper) round(ctx context.Context) error {
	s.mu.Lock()
	bases := make([]string, 0, len(s.chains))
	for b := range s.chains {
		bases = append(bases, b)
	}
	s.mu.Unlock()
	sort.Strings(bases) // ids start with their time
	if _, err := s.To(ctx); err != nil {
		return err // the target does not open: one failure, not one per chain
	}
	var errs []error
	for _, b := range bases {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		done, err := s.ship(ctx, b)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if done {
			s.mu.Lock()
			delete(s.chains, b)
			s.mu.Unlock()
		}
	}
	return errors.Join(errs...)
}

// ship copies what the other target lacks of the chain of base; done says the chain is ended and
// all of it is there.
func (s *Shipper) ship(ctx context.Context, base string) (done bool, err error) {
	to, err := s.To(ctx)
	if err != nil {
		return false, err
	}
	local, err := s.From.ListChain(ctx, base)
	if err != nil {
		return false, err
	}
	remote, err := to.ListChain(ctx, base)
	if err != nil {
		return false, err
	}
	have := map[repository.SegmentRef]bool{}
	for _, r := range remote.Segments {
		have[r] = true
	}
	segs := append([]repository.SegmentRef(nil), local.Segments...)
	sort.Slice(segs, func(i, j int) bool { return segs[i].First < segs[j].First })
	for _, ref := range segs {
		if have[ref] {
			s.noteShipped(base, ref.Last, time.Time{})
			continue
		}
		if o, ok := overlapping(remote.Segments, ref); ok {
			// Another writer continued the chain on that target (a handover while this one's
			// segments waited here): its segments hold the same revisions; this one is not
			// sent, and stays on the local target.
			if !s.skipped[ref] {
				s.Logger.Warn("a delta segment is not shipped: the target holds another writer's segment of the same revisions", "segment", ref.String(), "target_segment", o.String())
				s.skipped[ref] = true
			}
			continue
		}
		m, err := s.From.SegmentManifest(ctx, ref)
		if err != nil {
			return false, err
		}
		if err := copySegment(ctx, s.From, to, m); err != nil && !errors.Is(err, backend.ErrExist) {
			return false, err
		}
		for _, rec := range []string{
			repository.IndexName(repository.IndexEntry{At: m.LastTime, Revision: m.Last}),
			repository.MarkName(repository.Mark{Revision: m.Last, At: nowUTC(s.Now)}),
		} {
			if err := to.SaveNewRecord(ctx, rec); err != nil {
				return false, err
			}
		}
		s.noteShipped(base, ref.Last, m.LastTime)
		s.Logger.Debug("shipped delta segment", "segment", ref.String())
	}
	if !local.Ended {
		return false, nil
	}
	if !remote.Ended {
		e, err := s.From.ChainEnd(ctx, base)
		if err != nil {
			return false, err
		}
		if err := to.SaveNewChainEnd(ctx, e); err != nil && !errors.Is(err, backend.ErrExist) {
			return false, fmt.Errorf("ship the end of the chain of %s: %w", base, err)
		}
	}
	return true, nil
}

func (s *Shipper) noteShipped(base string, rev int64, received time.Time) {
	s.mu.Lock()
	s.shipped[base] = max(s.shipped[base], rev)
	if rev > s.newest {
		s.newest, s.newestAt = rev, received
	}
	s.mu.Unlock()
}

// Newest returns the newest revision known stored on the target (of any chain) and when the
// writer received it (zero when it was found there, not shipped by this Shipper).
func (s *Shipper) Newest() (int64, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.newest, s.newestAt
}
