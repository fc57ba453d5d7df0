// Package drill runs restore drills: it proves a backup by restoring it, as a disaster would need
// it restored, into a throw-away etcd member of its own, and checks that the member serves what
// the backup recorded. A drill reads one target (by default the first remote one: the copy a
// disaster leaves), restores the backup that `restore latest` would take from it and replays its
// delta log to the newest durable point, starts etcdguard's embedded etcd server on the result
// with loopback ports, a cluster token and a data dir of its own, at the lowest CPU and I/O
// priority, checks it, and removes everything it wrote. It never connects to the cluster it
// protects: it is given no endpoint. docs/design.md, "Restore drills", says what is compared.
package drill

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"filippo.io/age"

	"github.com/etcdguard/etcdguard/internal/repository"
)

// ErrFailed is returned (wrapped, with the cause) by Run when the drill did not pass: the backup
// could not be fetched, was damaged, did not restore, etcd did not start on it or did not serve
// what it records. Result.Reason says which.
var ErrFailed = errors.New("restore drill failed")

// ErrBudget is returned (wrapped, with ErrFailed) when the drill did not start because it would
// exceed its budget: the work dir has less free space than the drill needs.
var ErrBudget = errors.New("restore drill over its budget")

// Reason is why a drill failed: one of a small fixed set, for metric labels.
type Reason string

// The reasons a drill fails, in the order of its steps.
const (
	// ReasonBudget: the work dir has less free space than the drill needs; nothing was fetched.
	ReasonBudget Reason = "budget"
	// ReasonFetch: the target, the backup or a segment could not be read (unreachable, denied,
	// not found, locked by a deletion).
	ReasonFetch Reason = "fetch"
	// ReasonCorrupt: the backup's data or its delta log is damaged: a checksum, the trailer,
	// bbolt's check, the status against the manifest, a segment's hashes or links, a gap.
	ReasonCorrupt Reason = "corrupt"
	// ReasonRestore: etcd's restore or the replay failed on data that passed its checks (a
	// version the embedded etcd may not run, a full disk).
	ReasonRestore Reason = "restore"
	// ReasonStart: etcd did not start on the restored data dir, or did not become healthy.
	ReasonStart Reason = "start"
	// ReasonCheck: the restored data dir or the member did not hold what the backup records.
	ReasonCheck Reason = "check"
	// ReasonInterrupted: the drill's context ended (Ctrl-C, the agent stopping) before it
	// finished; it says nothing about the backup.
	ReasonInterrupted Reason = "interrupted"
)

// Reasons lists every reason a drill can fail with, for declaring metric label values.
func Reasons() []Reason {
	return []Reason{ReasonBudget, ReasonFetch, ReasonCorrupt, ReasonRestore, ReasonStart, ReasonCheck, ReasonInterrupted}
}

// Step names a drill's steps, for progress and for Options.AfterStep.
type Step string

// The steps of a drill, in order.
const (
	StepFetch   Step = "fetch"
	StepRestore Step = "restore"
	StepStart   Step = "start"
	StepCheck   Step = "check"
)

// Options say what a drill proves and with what.
type Options struct {
	// Targets are the configured targets; Target names the one drilled (empty: the first
	// target that is not a folder of this host, repository.Target.IsLocal, else the first).
	Targets []repository.Target
	Target  string
	// Backup is the id of the backup to drill; empty: the one `restore latest` takes from the
	// target (the newest whose delta log reaches furthest).
	Backup string
	// Identities decrypt encrypted backups and segments.
	Identities []age.Identity
	// WorkDir holds the drill's scratch folder (plain etcd data, 0700) while it runs; empty:
	// /var/tmp, as snapshot.ScratchDir says.
	WorkDir string
	// StateDir keeps the drill history (StateDir/drills); empty: the result is not recorded.
	StateDir string
	// Keep is how many results the history keeps (0: DefaultKeep).
	Keep int
	// EtcdBinary is an etcdguard binary whose `etcd` command (etcd's server, embedded) runs the
	// scratch member; empty: this process's own executable.
	EtcdBinary string
	// StartTimeout bounds how long the scratch member may take to become healthy (0: 2 minutes).
	StartTimeout time.Duration
	// Budget keeps the drill from hurting the host it shares with the cluster.
	Budget Budget
	// Logger receives the drill's log; nil discards it.
	Logger *slog.Logger
	// Now is the clock; nil is time.Now.
	Now func() time.Time
	// Progress, when set, is told each step as it begins, for progress lines on a terminal.
	Progress func(Step)
	// AfterStep, when set, is called after each step that succeeded, with its name; tests end
	// the context there to interrupt a drill at its step boundaries.
	AfterStep func(Step)
}

// DefaultKeep is how many results the drill history keeps by default.
const DefaultKeep = 50

// defaultStartTimeout bounds the scratch member's start when Options.StartTimeout is zero: a
// large database takes etcd a while to open at the lowest priority on a busy host.
const defaultStartTimeout = 2 * time.Minute

// Result is what one drill did and found: what the agent exports as metrics and alerts, and what
// the history keeps.
type Result struct {
	// Backup is the id of the backup drilled, Target the name of the target it was read from.
	Backup string `json:"backup,omitempty"`
	Target string `json:"target,omitempty"`
	// BackupRevision is the backup's revision; Revision the revision the restored member held
	// (the delta log's newest durable revision when one was replayed), and the one checked.
	BackupRevision int64 `json:"backup_revision,omitempty"`
	Revision       int64 `json:"revision,omitempty"`
	// RevisionTime is when the writer received Revision (zero without a replay).
	RevisionTime time.Time `json:"revision_time,omitzero"`
	// Segments and Events are what was replayed of the delta log; Keys the live keys the member
	// served at Revision.
	Segments int   `json:"segments"`
	Events   int64 `json:"events"`
	Keys     int64 `json:"keys"`
	// OK is whether the drill passed; Reason why it did not, and Error the message.
	OK     bool   `json:"ok"`
	Reason Reason `json:"reason,omitempty"`
	Error  string `json:"error,omitempty"`
	// Checks lists what was compared and matched, in order (see docs/design.md).
	Checks []string `json:"checks,omitempty"`
	// Started and Finished are when the drill began and ended.
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// Durations are how long each step took.
	Durations Durations `json:"durations"`
	// Notes are for the operator (the target chosen, a version skew warning).
	Notes []string `json:"notes,omitempty"`
}

// Durations are how long a drill's steps took. Recovery is the measured recovery time: from
// nothing on this host to a member serving the backup (fetch, restore with replay, start).
type Durations struct {
	Fetch    time.Duration `json:"fetch_ns"`
	Restore  time.Duration `json:"restore_ns"`
	Start    time.Duration `json:"start_ns"`
	Check    time.Duration `json:"check_ns"`
	Recovery time.Duration `json:"recovery_ns"`
	Total    time.Duration `json:"total_ns"`
}

// failure is a drill's failure: its reason and its cause.
type failure struct {
	reason Reason
	err    error
}

func (f *failure) Error() string { return fmt.Sprintf("%s: %v", f.reason, f.err) }
func (f *failure) Unwrap() error { return f.err }

// fail marks err as a drill failure for reason.
func fail(reason Reason, err error) error { return &failure{reason: reason, err: err} }

// failf marks a new error as a drill failure for reason.
func failf(reason Reason, format string, args ...any) error {
	return fail(reason, fmt.Errorf(format, args...))
}
