package prune

import (
	"context"
	"errors"
	"time"

	"github.com/etcdguard/etcdguard/internal/backend"
	"github.com/etcdguard/etcdguard/internal/repository"
)

// Report is what Run did (or, in a dry run, would do), target by target. Its JSON form is the
// output of `prune -o json`, for monitoring: every field is always there (lists empty, not null).
type Report struct {
	DryRun bool `json:"dry_run"`
	// Now is the time the policies were applied at.
	Now     time.Time      `json:"now"`
	Targets []TargetReport `json:"targets"`
}

// Target states, as TargetReport.State gives them.
const (
	// StatePruned: the policy was carried out (some backups may have been kept as locked).
	StatePruned = "pruned"
	// StateDryRun: the decisions were made and nothing was changed.
	StateDryRun = "dry-run"
	// StateNoPolicy: the target has no keep: policy and is never pruned.
	StateNoPolicy = "no-policy"
	// StateAbsent: an offline target whose medium is not there.
	StateAbsent = "absent"
	// StateFailed: the target could not be pruned, or not to the end (see Errors).
	StateFailed = "failed"
)

// TargetReport is what happened in one target.
type TargetReport struct {
	Name string `json:"name"`
	// URL is the target's URL without credentials.
	URL string `json:"url"`
	// Policy is the target's keep: policy in words ("within 7d"); empty without one.
	Policy string `json:"policy"`
	State  string `json:"state"`
	// Kept, Removed and LockedSkipped count backups: kept by the policy or because they cannot
	// go (LockedSkipped of them because the storage locks them: the policy would remove them);
	// removed (in a dry run: that would be). BytesRemoved is what the removed objects took.
	Kept          int   `json:"kept"`
	Removed       int   `json:"removed"`
	LockedSkipped int   `json:"locked_skipped"`
	BytesRemoved  int64 `json:"bytes_removed"`
	// DeleteMarkers says the target is a versioned bucket: a removal writes a delete marker and
	// the bytes stay as noncurrent versions until the bucket's lifecycle rule removes them.
	DeleteMarkers bool `json:"delete_markers"`
	// Backups are every backup of the target, newest first, with the decision and its reasons.
	Backups []BackupReport `json:"backups"`
	// Swept are the leftovers removed (in a dry run: that would be) besides backups: objects of
	// incomplete backups and chain folders whose base is gone.
	Swept []string `json:"swept"`
	// Notes are things left as they are, for a person to look at (an unreadable manifest, an
	// odd backup folder, a chain folder without a base that may still be written).
	Notes  []string `json:"notes"`
	Errors []Error  `json:"errors"`
}

// Backup actions, as BackupReport.Action gives them.
const (
	// ActionKeep: the backup stays.
	ActionKeep = "keep"
	// ActionRemove: a dry run's decision to remove the backup.
	ActionRemove = "remove"
	// ActionRemoved: the backup and its delta chain are gone.
	ActionRemoved = "removed"
	// ActionFailed: its removal failed part way; what is left is consistent (see
	// docs/design.md, "Retention and pruning") and the next prune finishes it.
	ActionFailed = "failed"
	// ActionNotRemoved: the policy removes it, but the run stopped before (an error, the lock
	// lost, an interruption); the next prune does it.
	ActionNotRemoved = "not-removed"
)

// Chain states, as BackupReport.Chain gives them; empty for a kept backup, whose chain is not
// looked at.
const (
	ChainNone  = "none"
	ChainEnded = "ended"
	ChainOpen  = "open"
)

// BackupReport is the decision about one backup.
type BackupReport struct {
	ID string `json:"id"`
	// Time is when its snapshot was taken, as the policy sees it.
	Time    time.Time `json:"time"`
	Action  string    `json:"action"`
	Reasons []string  `json:"reasons"`
	// Chain and Segments describe its delta chain, for the backups the policy would remove.
	Chain    string `json:"chain"`
	Segments int    `json:"segments"`
	// Bytes is what its objects take: the data object for a kept backup, everything removed
	// (or to be) with it otherwise.
	Bytes int64 `json:"bytes"`
	// LockedUntil is the retain-until date of a backup the storage locks (zero time for a legal
	// hold, which has no end); nil when it is not locked.
	LockedUntil *time.Time `json:"locked_until"`
}

// Error kinds, as Error.Kind gives them: a small fixed set, for metric labels.
const (
	KindLocked      = "locked"    // another run holds the repository lock
	KindLockLost    = "lock_lost" // our lock was taken over while we pruned
	KindInterrupted = "interrupted"
	KindOther       = "other"
	// and the storage's kinds: backend.KindNoSpace, KindDenied, KindUnreachable,
	// KindUnavailable, KindNotExist, KindExist.
)

// Error is one failure in a target, with its kind.
type Error struct {
	Kind string `json:"kind"`
	// Backup is the backup it concerns, if one.
	Backup  string `json:"backup,omitempty"`
	Message string `json:"message"`
	err     error
}

// Unwrap returns the failure itself, for errors.Is.
func (e Error) Unwrap() error { return e.err }

func (e Error) Error() string { return e.Message }

// ErrLockLost is returned (wrapped, with repository.ErrLocked) when the exclusive lock was taken
// over by another run while this one pruned: it stops at once.
var ErrLockLost = errors.New("the exclusive lock was lost")

// newError classifies err.
func newError(backup string, err error) Error {
	kind := backend.Kind(err)
	switch {
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		kind = KindInterrupted
	case errors.Is(err, ErrLockLost):
		kind = KindLockLost
	case errors.Is(err, repository.ErrLocked):
		kind = KindLocked
	case kind == "":
		kind = KindOther
	}
	return Error{Kind: kind, Backup: backup, Message: err.Error(), err: err}
}

// filled returns the report with every list non-nil, so that its JSON shape is stable.
func (r Report) filled() Report {
	if r.Targets == nil {
		r.Targets = []TargetReport{}
	}
	for i := range r.Targets {
		t := &r.Targets[i]
		for _, l := range []*[]string{&t.Swept, &t.Notes} {
			if *l == nil {
				*l = []string{}
			}
		}
		if t.Backups == nil {
			t.Backups = []BackupReport{}
		}
		if t.Errors == nil {
			t.Errors = []Error{}
		}
		for j := range t.Backups {
			if t.Backups[j].Reasons == nil {
				t.Backups[j].Reasons = []string{}
			}
		}
	}
	return r
}
