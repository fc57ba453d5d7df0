// Package prune carries out each target's keep: policy: under the target's exclusive lock it
// lists the full backups, asks retention.Apply which to keep, and removes the others with their
// delta chains, following the deletion protocol of docs/design.md so that a prune stopped at any
// point leaves a target every reader handles and the next prune finishes. It never removes the
// newest verified backup, a backup whose delta chain is open, or one the storage locks (S3 Object
// Lock, legal hold). `etcdguard prune` and the agent call Run.
package prune

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/etcdguard/etcdguard/internal/backend"
	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/retention"
)

// Options says what Run prunes.
type Options struct {
	// Targets are pruned one after the other; those without a keep: policy are reported and left.
	Targets []repository.Target
	// DryRun decides and reports, and changes nothing. It takes no lock: like a listing, it
	// only reads, and what it prints is what a prune would do at that moment.
	DryRun bool
	// Now is the clock the policies are applied with; nil means time.Now.
	Now func() time.Time
	// Logger receives a line per removed backup and the warnings; nil discards them.
	Logger *slog.Logger
	// Command names the run in the lock it takes; empty means "prune".
	Command string
	// LockTiming, when set, replaces the repositories' lock timing (tests).
	LockTiming *repository.LockTiming
}

// Run prunes every target of o and reports what it did. The report is complete whatever
// happened; the error joins the failures of the targets that failed (each wrapping its cause:
// repository.ErrLocked when another run holds a lock, the backend's errors for a target that
// cannot be reached or refuses), and is nil when every target was pruned or had nothing to do.
// Backups kept because the storage locks them are no failure.
func Run(ctx context.Context, o Options) (Report, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	o.Command = cmp.Or(o.Command, "prune")
	rep := Report{DryRun: o.DryRun, Now: o.Now().UTC()}
	var errs []error
	for _, t := range o.Targets {
		tr, err := pruneTarget(ctx, o, t, rep.Now)
		rep.Targets = append(rep.Targets, tr)
		if err != nil {
			errs = append(errs, err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	return rep.filled(), errors.Join(errs...)
}

// target is one target being pruned.
type target struct {
	o    Options
	repo *repository.Repository
	lock *repository.Lock // nil in a dry run
	// retainer is the storage's Object Lock, when it has one enabled; nil otherwise.
	retainer backend.Retainer
	// checked are the objects found not locked, so that none is asked about twice.
	checked map[string]bool
	rep     *TargetReport
}

func pruneTarget(ctx context.Context, o Options, t repository.Target, now time.Time) (TargetReport, error) {
	tr := TargetReport{Name: t.Name, URL: t.Redacted(), State: StatePruned}
	if o.DryRun {
		tr.State = StateDryRun
	}
	if t.Keep == nil {
		tr.State = StateNoPolicy
		tr.Notes = append(tr.Notes, "no keep: policy in the config for this target: it is never pruned")
		return tr, nil
	}
	tr.Policy = t.Keep.String()
	fail := func(backup string, err error) (TargetReport, error) {
		tr.State = StateFailed
		tr.Errors = append(tr.Errors, newError(backup, err))
		return tr, fmt.Errorf("prune target %s: %w", t.Name, err)
	}
	repo, err := repository.Open(ctx, t)
	switch {
	case err != nil && t.Offline && errors.Is(err, backend.ErrUnavailable):
		tr.State = StateAbsent
		tr.Notes = append(tr.Notes, "offline target not mounted: not pruned ("+err.Error()+")")
		return tr, nil
	case err != nil:
		return fail("", err)
	}
	defer repo.Close()
	if o.LockTiming != nil {
		repo.SetLockTiming(*o.LockTiming)
	}
	p := &target{o: o, repo: repo, checked: map[string]bool{}, rep: &tr}
	if !o.DryRun {
		p.lock, err = repo.Lock(ctx, o.Logger, repository.LockExclusive, o.Command, now)
		if err != nil {
			return fail("", err)
		}
		defer func() {
			if err := p.lock.Unlock(ctx); err != nil {
				o.Logger.Warn("could not release the exclusive lock", "target", t.Name, "error", err)
			}
		}()
		// What interrupted saves and prunes left: data without a manifest, partial files.
		removed, odd, err := repo.CleanupIncomplete(ctx)
		tr.Swept = append(tr.Swept, removed...)
		tr.Notes = append(tr.Notes, odd...)
		if err != nil {
			return fail("", err)
		}
	}
	if rt, ok := backend.As[backend.Retainer](repo.Backend()); ok {
		info, err := rt.Retention(ctx)
		if err != nil {
			return fail("", err)
		}
		tr.DeleteMarkers = info.Versioned
		if info.ObjectLock {
			p.retainer = rt
		}
	}
	if err := p.prune(ctx, *t.Keep, now); err != nil {
		return fail(backupOf(err), err)
	}
	if err := p.sweepOrphans(ctx); err != nil {
		return fail("", err)
	}
	if len(tr.Errors) > 0 {
		// Backups kept because their lock could not be read: the policy was not carried out.
		tr.State = StateFailed
		errs := make([]error, len(tr.Errors))
		for i, e := range tr.Errors {
			errs[i] = e
		}
		return tr, fmt.Errorf("prune target %s: %w", t.Name, errors.Join(errs...))
	}
	return tr, nil
}

// candidate is what is known of a backup the policy would remove.
type candidate struct {
	m        repository.Manifest
	chain    repository.ChainListing
	folder   map[string]int64 // the objects of its snapshots/<id>/ folder and their sizes
	locked   bool
	until    time.Time
	checkErr error // the storage's lock could not be read: the backup is kept
}

// prune decides about every backup and removes what the policy does not keep, oldest first.
func (p *target) prune(ctx context.Context, keep repository.Keep, now time.Time) error {
	ms, skipped, err := p.repo.Manifests(ctx)
	if err != nil {
		return err
	}
	for _, s := range skipped {
		p.rep.Notes = append(p.rep.Notes, fmt.Sprintf("backup %s: its manifest cannot be used, so it is neither kept nor removed by the policy; left as it is: %v", s.ID, s.Err))
	}
	policy := retention.Policy{Last: keep.Last, Within: keep.WithinDuration(), Hourly: keep.Hourly, Daily: keep.Daily, Weekly: keep.Weekly, Monthly: keep.Monthly, Yearly: keep.Yearly}
	backups := make([]retention.Backup, len(ms))
	byID := map[string]repository.Manifest{}
	for i, m := range ms {
		backups[i] = retention.Backup{ID: m.ID, Time: m.Started, Verified: len(m.Verification.Checks) > 0}
		byID[m.ID] = m
	}
	// What the policy would remove is looked at more closely (its chain, the storage's locks);
	// then the policy decides again with the locks known, for its reasons.
	cands := map[string]*candidate{}
	for _, d := range retention.Apply(backups, policy, now) {
		if d.Keep {
			continue
		}
		c, err := p.look(ctx, byID[d.Backup.ID])
		if err != nil {
			return withBackup(d.Backup.ID, err)
		}
		cands[d.Backup.ID] = c
	}
	for i := range backups {
		if c := cands[backups[i].ID]; c != nil && c.locked {
			backups[i].Locked = true
		}
	}
	decisions := retention.Apply(backups, policy, now)
	var remove []int // indexes in p.rep.Backups, newest first
	for _, d := range decisions {
		m := byID[d.Backup.ID]
		br := BackupReport{ID: m.ID, Time: m.Started, Action: ActionKeep, Reasons: d.Reasons, Bytes: m.StoredSize}
		c := cands[m.ID]
		if c != nil {
			br.Chain, br.Segments, br.Bytes = c.chainState(), len(c.chain.Segments), c.size()
		}
		switch {
		case c == nil:
		case c.locked:
			until := c.until
			br.LockedUntil = &until
			if !until.IsZero() {
				br.Reasons = append(br.Reasons, "retained until "+until.Format(time.RFC3339))
			}
			p.rep.LockedSkipped++
		case c.checkErr != nil:
			br.Reasons = []string{"no rule keeps it, but the storage's lock on it could not be read: kept"}
			p.rep.Errors = append(p.rep.Errors, newError(m.ID, c.checkErr))
		case br.Chain == ChainOpen:
			br.Reasons = []string{"no rule keeps it, but its delta chain is open (no end record: the agent's delta writer may be appending to it): kept"}
		case !d.Keep:
			br.Action = ActionRemove
			remove = append(remove, len(p.rep.Backups))
		}
		p.rep.Backups = append(p.rep.Backups, br)
	}
	for _, br := range p.rep.Backups {
		if br.Action == ActionKeep {
			p.rep.Kept++
		}
	}
	if p.o.DryRun {
		for _, i := range remove {
			p.rep.Removed++
			p.rep.BytesRemoved += p.rep.Backups[i].Bytes
		}
		return nil
	}
	for k := len(remove) - 1; k >= 0; k-- {
		br := &p.rep.Backups[remove[k]]
		err := p.removeBackup(ctx, cands[br.ID], br)
		if err != nil {
			for _, i := range remove[:k] {
				p.rep.Backups[i].Action = ActionNotRemoved
			}
			return withBackup(br.ID, err)
		}
	}
	return nil
}

func (c *candidate) chainState() string {
	switch {
	case c.chain.Empty():
		return ChainNone
	case c.chain.Ended:
		return ChainEnded
	}
	return ChainOpen
}

// size is what the backup's objects take, its chain's included.
func (c *candidate) size() int64 {
	var n int64
	for _, s := range c.folder {
		n += s
	}
	for _, s := range c.chain.Sizes {
		n += s
	}
	return n
}

// look lists what a backup the policy would remove is made of, and whether the storage locks any
// of it. An error is the storage's (it cannot be listed); a lock that cannot be read is recorded
// in the candidate, which is then kept.
func (p *target) look(ctx context.Context, m repository.Manifest) (*candidate, error) {
	c := &candidate{m: m, folder: map[string]int64{}}
	var err error
	c.chain, err = p.repo.ListChain(ctx, m.ID)
	if err != nil {
		return nil, err
	}
	err = p.repo.Backend().List(ctx, repository.BackupPrefix(m.ID), func(fi backend.FileInfo) error {
		c.folder[fi.Name] = fi.Size
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("target %s: list backup %s: %w", p.repo.Target.Name, m.ID, err)
	}
	if c.chainState() == ChainOpen {
		return c, nil // kept whatever the storage says
	}
	c.locked, c.until, c.checkErr = p.lockedAny(ctx, c.objects())
	return c, nil
}

// objects are the backup's objects in the order its locks are asked about: its manifest and data
// first, then its chain, newest first.
func (c *candidate) objects() []string {
	out := []string{repository.ManifestName(c.m.ID), c.m.Data}
	for name := range c.folder {
		if name != out[0] && name != out[1] {
			out = append(out, name)
		}
	}
	return append(out, chainOrder(c.chain)...)
}

// lockedAny reports whether the storage locks any of the objects, and until when, stopping at the
// first locked one. Without Object Lock nothing is locked and nothing is asked.
func (p *target) lockedAny(ctx context.Context, names []string) (bool, time.Time, error) {
	if p.retainer == nil {
		return false, time.Time{}, nil
	}
	for _, name := range names {
		if p.checked[name] {
			continue
		}
		locked, until, err := p.retainer.Locked(ctx, name)
		if err != nil {
			return false, time.Time{}, fmt.Errorf("target %s: %w", p.repo.Target.Name, err)
		}
		if locked {
			return true, until, nil
		}
		p.checked[name] = true
	}
	return false, time.Time{}, nil
}

// backupError is an error about one backup.
type backupError struct {
	id  string
	err error
}

func (e *backupError) Error() string { return e.err.Error() }
func (e *backupError) Unwrap() error { return e.err }

func withBackup(id string, err error) error { return &backupError{id: id, err: err} }

func backupOf(err error) string {
	var be *backupError
	if errors.As(err, &be) {
		return be.id
	}
	return ""
}
