package restore

import (
	"context"
	"fmt"
	"time"

	"filippo.io/age"

	"github.com/etcdguard/etcdguard/internal/deltalog"
	"github.com/etcdguard/etcdguard/internal/snapshot"
)

// Point says where a restore goes: the newest durable point of the delta log (the zero Point),
// a revision, or a moment. NoDelta restores the full backup alone.
type Point struct {
	Revision int64
	Time     time.Time
	NoDelta  bool
}

// Query returns the catalog query of the newest full backup a restore to p starts from.
func (p Point) Query() snapshot.Query {
	return snapshot.Query{AtOrBeforeRevision: p.Revision, AtOrBefore: p.Time}
}

// String describes the point for messages.
func (p Point) String() string {
	switch {
	case p.Revision > 0:
		return fmt.Sprintf("revision %d", p.Revision)
	case !p.Time.IsZero():
		return "the moment " + p.Time.UTC().Format(time.RFC3339Nano)
	case p.NoDelta:
		return "the full backup alone"
	}
	return "the newest durable point of the delta log"
}

// ChainPlan is the delta chain a restore replays onto its full backup, from the target that
// holds the most of it.
type ChainPlan struct {
	Chain deltalog.Chain `json:"-"`
	// Target is where the chain is read from; Segments and Reach describe what it holds there
	// (Open: and the complete prefix of its open segment after Reach).
	Target   string `json:"target"`
	Segments int    `json:"segments"`
	Reach    int64  `json:"reach"`
	Open     bool   `json:"open_segment"`
	// UpTo and Until bound the replay (0, zero: to the end).
	UpTo  int64     `json:"up_to,omitempty"`
	Until time.Time `json:"until,omitzero"`
	// Problem says why the chain stops where it does in that target, if something is wrong.
	Problem string `json:"problem,omitempty"`
	// Tip is where the chain ends there (the open segment's complete prefix included).
	Tip deltalog.Tip `json:"-"`
}

// PlanChain finds, among the copies of the backup e, the target whose chain of it reaches
// furthest (an open segment counts as reaching further than the same sealed reach), and bounds
// its replay by p. It returns nil when no target holds a segment of the chain, and ErrInput when
// p asks for a revision the chain cannot reach.
func PlanChain(ctx context.Context, e snapshot.Entry, p Point) (*ChainPlan, []string, error) {
	if p.NoDelta {
		return nil, nil, nil
	}
	// A replay only goes forward from its backup: a point before it cannot be reached from
	// this backup (restoring it would give the backup's later state as if it were the point).
	base := e.Manifest.Status.Revision
	switch {
	case p.Revision > 0 && p.Revision < base:
		return nil, nil, fmt.Errorf("%w: --to-revision %d: backup %s is at revision %d, after it: restore an older backup, or 'latest', which picks the newest at or before the revision", ErrInput, p.Revision, e.Manifest.ID, base)
	case !p.Time.IsZero() && e.Manifest.Started.After(p.Time):
		return nil, nil, fmt.Errorf("%w: --to-time %s: backup %s was taken at %s, after that moment: restore an older backup, or 'latest', which picks the newest taken at or before it", ErrInput,
			p.Time.UTC().Format(time.RFC3339Nano), e.Manifest.ID, e.Manifest.Started.UTC().Format(time.RFC3339Nano))
	}
	var best *ChainPlan
	var notes []string
	for _, cp := range e.Copies {
		c, err := deltalog.LoadChain(ctx, cp.Repo, cp.Manifest)
		if err != nil {
			notes = append(notes, fmt.Sprintf("note: the delta log of %s in target %s could not be read: %v", e.Manifest.ID, cp.Repo.Target.Name, err))
			continue
		}
		if len(c.Segments) == 0 && c.Open == 0 {
			continue
		}
		cand := &ChainPlan{Chain: c, Target: cp.Repo.Target.Name, Segments: len(c.Segments), Reach: c.Reach, Open: c.Open != 0, Problem: c.Problem}
		if best == nil || reachesFurther(cand.Reach, cand.Open, best.Reach, best.Open) {
			best = cand
		}
	}
	if best == nil {
		if p.Revision > base {
			return nil, notes, fmt.Errorf("%w: --to-revision %d: backup %s is at revision %d and no target holds a delta log of it", ErrInput, p.Revision, e.Manifest.ID, base)
		}
		return nil, notes, nil
	}
	if best.Problem != "" {
		notes = append(notes, fmt.Sprintf("warning: the delta log of %s in target %s stops at revision %d: %s", e.Manifest.ID, best.Target, best.Reach, best.Problem))
	}
	if best.Open {
		// How far the open segment reaches is known only by reading it (its complete prefix):
		// read once, here, for the checks below and for the caller.
		tip, err := best.Chain.Tip(ctx)
		if err != nil {
			return nil, notes, fmt.Errorf("read the open segment of the delta log of backup %s in target %s: %w", e.Manifest.ID, best.Target, err)
		}
		best.Tip = tip
		if tip.Damage != nil {
			notes = append(notes, fmt.Sprintf("warning: the open segment of the delta log of %s in target %s is damaged after revision %d (%v): a replay goes no further", e.Manifest.ID, best.Target, tip.Revision, tip.Damage))
		}
	} else {
		best.Tip, _ = best.Chain.Tip(ctx) // reads nothing without an open segment
	}
	if p.Revision > 0 {
		// A plan to a revision the log does not hold would fail only in the replay, after
		// recover stopped every member.
		if p.Revision > best.Tip.Revision {
			return nil, notes, fmt.Errorf("%w: --to-revision %d: the delta log of backup %s reaches revision %d (target %s)", ErrInput, p.Revision, e.Manifest.ID, best.Tip.Revision, best.Target)
		}
		if p.Revision == base {
			return nil, notes, nil // the backup itself is the point
		}
		best.UpTo = p.Revision
	}
	best.Until = p.Time
	if at := best.Tip.At; !p.Time.IsZero() && !at.IsZero() && p.Time.Sub(at) > pastTheLog {
		// Past the log's newest revision the log cannot say what the cluster wrote (nothing,
		// if it was idle; anything, if the writer had stopped): the restore goes to that
		// revision, and says how far before the moment it is.
		notes = append(notes, fmt.Sprintf("warning: --to-time %s: the delta log of %s in target %s ends at revision %d, received %s, %s before that moment: whatever the cluster wrote after it is not in the log",
			p.Time.UTC().Format(time.RFC3339Nano), e.Manifest.ID, best.Target, best.Tip.Revision, at.UTC().Format(time.RFC3339Nano), p.Time.Sub(at).Round(time.Second)))
	}
	return best, notes, nil
}

// pastTheLog is how long before a --to-time moment the delta log's newest revision may have been
// received without a warning: a running writer makes what it receives durable within a second,
// and a Kubernetes cluster writes every few seconds.
const pastTheLog = time.Minute

// Source returns the opener of the plan's revisions, for DataDirOptions.Replay; each call reads
// the chain afresh, so that each member restored from it has its own reader.
func (c *ChainPlan) Source(ctx context.Context, ids []age.Identity) func() (RevisionSource, func(), error) {
	return func() (RevisionSource, func(), error) {
		r := c.Chain.NewReader(ctx, deltalog.ReadOptions{Identities: ids, UpTo: c.UpTo})
		return NewChainSource(r, c.Until), r.Close, nil
	}
}

// marksOf returns the high-water marks of the targets of e's copies, as revision points for
// sizing the bump: the revisions the cluster had reached, as recorded beside the backups.
func marksOf(ctx context.Context, e snapshot.Entry) []RevisionPoint {
	var out []RevisionPoint
	for _, cp := range e.Copies {
		ms, err := cp.Repo.Marks(ctx)
		if err != nil {
			continue
		}
		if n := len(ms); n > 0 {
			m := ms[n-1]
			out = append(out, RevisionPoint{Revision: m.Revision, At: m.At})
		}
	}
	return out
}

// reachesFurther says whether a chain reaching revision reach (and an open segment after it,
// when open) goes further than one reaching than (thanOpen): an open segment holds at least as
// much as nothing, and how much more is known only by reading it.
func reachesFurther(reach int64, open bool, than int64, thanOpen bool) bool {
	return reach > than || (reach == than && open && !thanOpen)
}

// maxReachCandidates bounds how many backups, newest first, are compared by how far their delta
// logs reach: one listing per copy each.
const maxReachCandidates = 8

// FurthestReaching returns, among candidates (newest first, as a catalog query gives them), the
// backup from which a restore to p gets furthest with its delta log: the highest revision its
// chain reaches by name (capped at p's revision, when there is one), an open segment counting as
// further than the same sealed reach; of equals, the newest. A backup taken by hand while the
// agent streams the chain of an older one has no log of its own, and the older one's chain goes
// on past it: "latest" must then be the older backup and its chain. The first candidate is
// returned when none has a chain (or p is NoDelta).
func FurthestReaching(ctx context.Context, candidates []snapshot.Entry, p Point) snapshot.Entry {
	if len(candidates) == 0 || p.NoDelta {
		return snapshot.Entry{}
	}
	best, bestReach, bestOpen := candidates[0], int64(-1), false
	for i, e := range candidates {
		if i == maxReachCandidates {
			break
		}
		reach, open := e.Manifest.Status.Revision, false
		for _, cp := range e.Copies {
			r, o, err := deltalog.ReachByNames(ctx, cp.Repo, cp.Manifest)
			if err != nil {
				continue
			}
			if reachesFurther(r, o, reach, open) {
				reach, open = r, o
			}
		}
		if p.Revision > 0 && reach >= p.Revision {
			reach, open = p.Revision, false
		}
		if reachesFurther(reach, open, bestReach, bestOpen) {
			best, bestReach, bestOpen = e, reach, open
		}
	}
	return best
}
