package snapshot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/etcdguard/etcdguard/internal/backend"
	"github.com/etcdguard/etcdguard/internal/repository"
)

// CopyMissingOptions says what CopyMissing fills in, and from where.
type CopyMissingOptions struct {
	// To is the target to fill in; Sources are the targets copies are read from.
	To      repository.Target
	Sources []repository.Target
	// IDs are the backups wanted; none means every backup To lacks.
	IDs []string
	// Command names the run in To's lock ("snapshot copy").
	Command string
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Copied, when set, is told of each backup as soon as it is copied.
	Copied func(CopyResult)
}

// CopyResult is the outcome for one backup that To lacked.
type CopyResult struct {
	ID    string `json:"id"`
	From  string `json:"from,omitempty"`
	Bytes int64  `json:"bytes"`
	Check string `json:"check,omitempty"`
	Error string `json:"error,omitempty"`
	// ErrorKind is backend.Kind of the failure, when the storage named it ("no_space", ...).
	ErrorKind string `json:"error_kind,omitempty"`
}

// CopyMissingReport is what CopyMissing did.
type CopyMissingReport struct {
	// Results has one entry per backup To lacked and was asked for, oldest first.
	Results []CopyResult
	// Copied counts the backups copied; Skipped those already present or not asked for.
	Copied, Skipped int
	// Failures holds why each failed backup could not be copied.
	Failures []error
}

// Err says that some backups could not be copied, naming the target; nil when none failed.
func (r CopyMissingReport) Err(to string) error {
	if len(r.Failures) == 0 {
		return nil
	}
	return fmt.Errorf("%d backups could not be copied to %s: %w", len(r.Failures), to, errors.Join(r.Failures...))
}

// CopyMissing copies into o.To every backup (or each of o.IDs) it lacks, from the first of
// o.Sources' copies, in PreferredOrder, that copies and checks (see CopyTo), under o.To's lock.
// A backup To holds, even by a manifest that cannot be used, is never replaced. The error is
// for a run that could not start (To unavailable or locked, an id no target holds); backups
// that failed are in the report (see Err).
func CopyMissing(ctx context.Context, lg *slog.Logger, o CopyMissingOptions) (CopyMissingReport, error) {
	var rep CopyMissingReport
	to := o.To.Name
	if o.Now == nil {
		o.Now = time.Now
	}
	dst, err := repository.Open(ctx, o.To)
	if err != nil {
		if errors.Is(err, backend.ErrUnavailable) {
			return rep, fmt.Errorf("target %s is not available (is the medium mounted?): %w", to, err)
		}
		return rep, err
	}
	defer dst.Close()
	lock, err := dst.Lock(ctx, lg, repository.LockShared, o.Command, o.Now())
	if err != nil {
		return rep, err
	}
	defer lock.Unlock(ctx)
	_, odd, err := dst.CleanupIncomplete(ctx)
	if err != nil {
		lg.Warn("could not clean up incomplete backups", "target", to, "error", err)
	}
	for _, f := range odd {
		lg.Warn("odd backup folder left as it is", "target", to, "folder", f)
	}
	cat, err := Load(ctx, o.Sources)
	if cat != nil {
		defer cat.Close()
	}
	if err != nil {
		return rep, err
	}
	for _, sk := range cat.Skipped {
		lg.Warn("manifest skipped: it is not used", "error", sk)
	}
	have, unreadable, err := dst.Manifests(ctx)
	if err != nil {
		return rep, err
	}
	present := map[string]bool{}
	for _, m := range have {
		present[m.ID] = true
	}
	// A manifest of dst that cannot be read is still there: it is never replaced.
	damaged := map[string]error{}
	for _, u := range unreadable {
		damaged[u.ID] = u
	}
	want := map[string]bool{}
	for _, id := range o.IDs {
		if _, err := cat.Find(id); err != nil && !present[id] {
			return rep, err
		}
		want[id] = true
	}
	fail := func(id string, err error) {
		rep.Failures = append(rep.Failures, err)
		rep.Results = append(rep.Results, CopyResult{ID: id, Error: err.Error(), ErrorKind: backend.Kind(err)})
	}
	for _, e := range cat.Entries {
		id := e.Manifest.ID
		if present[id] || (len(want) > 0 && !want[id]) {
			rep.Skipped++
			continue
		}
		if derr, ok := damaged[id]; ok {
			fail(id, fmt.Errorf("copy %s to %s: %w: %s holds a manifest that cannot be used (%w); it is not replaced: check it with 'etcdguard snapshot status %s --target %s' and remove that backup's folder by hand if it is damaged",
				id, to, backend.ErrExist, repository.ManifestName(id), derr, id, to))
			continue
		}
		var err error
		from, check := "", ""
		for _, c := range PreferredOrder(e.Copies) {
			from = c.Repo.Target.Name
			if check, err = CopyTo(ctx, lg, c, dst, o.Now()); err == nil || errors.Is(err, backend.ErrExist) {
				break // done, or something of dst is in the way whatever the source
			}
			lg.Warn("copy failed; trying another source", "id", id, "from", c.Repo.Target.Name, "error", err)
		}
		if err != nil {
			fail(id, err)
			continue
		}
		rep.Copied++
		res := CopyResult{ID: id, From: from, Bytes: e.Manifest.StoredSize, Check: check}
		rep.Results = append(rep.Results, res)
		if o.Copied != nil {
			o.Copied(res)
		}
	}
	return rep, nil
}
