package snapshot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"filippo.io/age"

	"github.com/etcdguard/etcdguard/internal/backend"
	"github.com/etcdguard/etcdguard/internal/repository"
)

// VerifyOptions says which stored copies VerifyAll re-reads.
type VerifyOptions struct {
	// IDs are the backups to verify; none means every backup.
	IDs []string
	// Identities decrypt encrypted backups.
	Identities []age.Identity
	// WorkDir holds the scratch files of the re-reads.
	WorkDir string
	// Logger receives warnings (a target read without a lock); nil discards them.
	Logger *slog.Logger
}

// VerifyReport is what VerifyAll found.
type VerifyReport struct {
	// Copies has one report per stored copy, backups oldest first.
	Copies []CopyReport
	// Unreadable maps a target name to why it could not be listed.
	Unreadable map[string]string
	// Failures holds why each bad copy failed.
	Failures []error
	// Unread names the targets that could not be read and are not offline media (an offline
	// medium that is not mounted is expected).
	Unread []error
}

// Err says what the report means for the run: the copies that failed, else the targets that
// could not be read (backend.ErrUnavailable), else that there was nothing to verify
// (repository.ErrNotFound); nil when every copy of every readable target passed.
func (r VerifyReport) Err() error {
	if len(r.Failures) == 0 && len(r.Unread) > 0 {
		return fmt.Errorf("%w: copies in %d target(s) could not be read, so were not verified: %w", backend.ErrUnavailable, len(r.Unread), errors.Join(r.Unread...))
	}
	if len(r.Copies) == 0 {
		return fmt.Errorf("%w: no backup to verify", repository.ErrNotFound)
	}
	if len(r.Failures) > 0 {
		return fmt.Errorf("%d of %d copies failed verification: %w", len(r.Failures), len(r.Copies), errors.Join(r.Failures...))
	}
	return nil
}

// VerifyAll re-reads every stored copy of the backups asked for, in every target, completely
// (see Verify). The error is for a run that could not start (no target readable, an id no
// target holds); bad copies are in the report (see Err).
func VerifyAll(ctx context.Context, targets []repository.Target, o VerifyOptions) (VerifyReport, error) {
	var rep VerifyReport
	cat, err := Load(ctx, targets)
	if cat != nil {
		defer cat.Close()
	}
	if err != nil {
		return rep, err
	}
	rep.Unreadable = cat.Unreadable
	entries := cat.Entries
	if len(o.IDs) > 0 {
		entries = nil
		for _, id := range o.IDs {
			e, err := cat.Find(id)
			if err != nil {
				return rep, err
			}
			entries = append(entries, e)
		}
	}
	lg := o.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	// One read lock per target for the whole run, taken before its first copy is read: a
	// deletion waits for the run, and a target another run keeps us out of (its exclusive lock
	// outlasted the wait) is waited for once, its copies reported as kept out by the lock.
	locked := map[string]error{}
	var releases []func()
	defer func() {
		for _, release := range releases {
			release()
		}
	}()
	for _, e := range entries {
		for _, c := range e.Copies {
			name := c.Repo.Target.Name
			lerr, tried := locked[name]
			if !tried {
				var release func()
				release, lerr = lockForRead(ctx, lg, c.Repo, c.Manifest.ID)
				locked[name] = lerr
				if lerr == nil {
					releases = append(releases, release)
				}
			}
			var cr CopyReport
			if lerr != nil {
				cr, err = copyFailed(ctx, reportOf(c), time.Now(), lerr)
			} else {
				cr, err = verify(ctx, c, o.Identities, o.WorkDir)
			}
			rep.Copies = append(rep.Copies, cr)
			if err != nil {
				rep.Failures = append(rep.Failures, err)
			}
		}
	}
	for _, t := range targets {
		if why, ok := cat.Unreadable[t.Name]; ok && !t.Offline {
			rep.Unread = append(rep.Unread, fmt.Errorf("target %s: %s", t.Name, why))
		}
	}
	return rep, nil
}
