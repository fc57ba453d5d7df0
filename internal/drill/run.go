package drill

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"go.etcd.io/etcd/api/v3/version"

	"github.com/etcdguard/etcdguard/internal/backend"
	"github.com/etcdguard/etcdguard/internal/delta"
	"github.com/etcdguard/etcdguard/internal/failpoint"
	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/restore"
	"github.com/etcdguard/etcdguard/internal/scratch"
	"github.com/etcdguard/etcdguard/internal/snapshot"
)

// memberName is the scratch member's etcd name, the one scratch.Start gives a cluster's first
// member: the restore is made for it.
const memberName = "m1"

// Run runs one drill (see the package comment) and records its result in the history under
// o.StateDir. The error is nil when the drill passed; otherwise it wraps ErrFailed and the cause
// (snapshot.ErrCorrupt for a damaged backup, a backend sentinel for a target that cannot be read,
// ErrBudget, the context's error when interrupted), and Result.Reason names the step. An error
// that is none of those (a target name that is not configured) means the drill did not run, and
// nothing is recorded. Whatever happens, the drill's scratch folder is removed before Run
// returns, and the scratch member is stopped.
func Run(ctx context.Context, o Options) (Result, error) {
	o = withDefaults(o)
	res := Result{Started: o.Now()}
	t, note, err := chooseTarget(o.Targets, o.Target)
	if err != nil {
		return res, err
	}
	res.Target = t.Name
	if note != "" {
		res.Notes = append(res.Notes, note)
	}
	began := time.Now()
	err = run(ctx, o, t, &res)
	res.Finished = o.Now()
	res.Durations.Total = time.Since(began)
	res.Durations.Recovery = res.Durations.Fetch + res.Durations.Restore + res.Durations.Start
	if err != nil {
		res.Reason = reasonOf(ctx, err)
		res.Error = err.Error()
		err = fmt.Errorf("%w: %s: %w", ErrFailed, res.Reason, errors.Unwrap(asFailure(err)))
		if res.Reason == ReasonBudget {
			err = fmt.Errorf("%w: %w", ErrBudget, err)
		}
		o.Logger.Warn("restore drill failed", "backup", res.Backup, "target", res.Target, "reason", string(res.Reason), "error", res.Error)
	} else {
		res.OK = true
		o.Logger.Info("restore drill passed", "backup", res.Backup, "target", res.Target, "revision", res.Revision,
			"keys", res.Keys, "recovery", res.Durations.Recovery.Round(time.Millisecond))
	}
	if o.StateDir != "" {
		if _, herr := Record(o.StateDir, res, o.Keep); herr != nil {
			o.Logger.Error("could not record the drill's result", "state_dir", o.StateDir, "error", herr)
			err = errors.Join(err, herr)
		}
	}
	return res, err
}

// withDefaults fills in what o leaves out.
func withDefaults(o Options) Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Keep <= 0 {
		o.Keep = DefaultKeep
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = defaultStartTimeout
	}
	if o.EtcdBinary == "" {
		if self, err := os.Executable(); err == nil {
			o.EtcdBinary = self
		}
	}
	o.WorkDir = snapshot.ScratchDir(o.WorkDir)
	o.Budget = o.Budget.withDefaults()
	return o
}

// chooseTarget returns the target a drill reads: the one named, else the first that is not a
// folder of this host (what a disaster that takes the host leaves), else the first, with a note.
func chooseTarget(ts []repository.Target, name string) (repository.Target, string, error) {
	if len(ts) == 0 {
		return repository.Target{}, "", fmt.Errorf("%w: no backup target to drill: configure targets or give --target", restore.ErrInput)
	}
	if name != "" {
		for _, t := range ts {
			if t.Name == name {
				return t, "", nil
			}
		}
		return repository.Target{}, "", fmt.Errorf("%w: --target %s: no such target", restore.ErrInput, name)
	}
	for _, t := range ts {
		if !t.IsLocal() {
			return t, "", nil
		}
	}
	return ts[0], fmt.Sprintf("note: every target is a folder of this host; drilling target %s (a drill proves most from a remote copy, which a disaster on this host leaves)", ts[0].Name), nil
}

// run is the drill itself; it fills res as far as it gets.
func run(ctx context.Context, o Options, t repository.Target, res *Result) error {
	lg := o.Logger.With("target", t.Name)
	snapshot.SweepScratch(o.WorkDir, lg) // a killed drill's plain etcd data

	cat, err := snapshot.Load(ctx, []repository.Target{t})
	if cat != nil {
		defer cat.Close()
	}
	if err != nil {
		return fail(ReasonFetch, err)
	}
	if why, ok := cat.Unreadable[t.Name]; ok {
		return failf(ReasonFetch, "target %s cannot be read: %s", t.Name, why)
	}
	e, err := chooseBackup(ctx, cat, o.Backup)
	if err != nil {
		return fail(ReasonFetch, err)
	}
	m := e.Manifest
	res.Backup, res.BackupRevision, res.Revision = m.ID, m.Status.Revision, m.Status.Revision
	lg = lg.With("backup", m.ID)

	// The delta log, as a restore to the newest durable point plans it. A chain that stops
	// short of what the target holds (a gap, a broken link, an unreadable manifest, a damaged
	// open segment) is a damaged backup for a drill: a restore from this target would lose the
	// revisions after it.
	plan, notes, err := restore.PlanChain(ctx, e, restore.Point{})
	res.Notes = append(res.Notes, notes...)
	if err != nil {
		return fail(readReason(err), err)
	}
	if plan != nil {
		if plan.Problem != "" {
			return failf(ReasonCorrupt, "%w: the delta log of %s in target %s stops at revision %d: %s", repository.ErrCorrupt, m.ID, t.Name, plan.Reach, plan.Problem)
		}
		if plan.Tip.Damage != nil {
			return failf(ReasonCorrupt, "the open segment of the delta log of %s in target %s is damaged after revision %d: %w", m.ID, t.Name, plan.Tip.Revision, plan.Tip.Damage)
		}
		res.Segments = plan.Segments
	}

	if err := o.Budget.check(o.WorkDir, m, plan); err != nil {
		return err
	}
	dir, remove, err := snapshot.MakeScratch(o.WorkDir, "drill")
	if err != nil {
		return failf(ReasonRestore, "create the drill's scratch folder in %s: %w", o.WorkDir, err)
	}
	defer remove()

	// Fetch: under the target's shared lock, every check of snapshot verify.
	step(o, StepFetch)
	plain := filepath.Join(dir, "snapshot.db")
	cp := throttled(e.Copies[0], o.Budget.FetchRate)
	began := time.Now()
	cr, err := snapshot.Fetch(ctx, lg, cp, o.Identities, plain)
	res.Durations.Fetch = time.Since(began)
	if err != nil {
		return fail(readReason(err), err)
	}
	for _, c := range cr.Checks {
		res.Checks = append(res.Checks, "backup "+c)
	}
	if err := after(ctx, o, StepFetch); err != nil {
		return err
	}

	// Restore, and replay the delta log to its newest durable point: the restore's own steps.
	step(o, StepRestore)
	ports, err := scratch.FreePorts(3)
	if err != nil {
		return fail(ReasonStart, err)
	}
	began = time.Now()
	replay, err := restoreInto(ctx, o, plain, filepath.Join(dir, memberName), ports, m, plan, res)
	_ = os.Remove(plain) // the restored member holds it now; free its room before etcd starts
	res.Durations.Restore = time.Since(began)
	if err != nil {
		return err
	}
	if err := after(ctx, o, StepRestore); err != nil {
		return err
	}
	began = time.Now()
	keys, err := checkDB(ctx, filepath.Join(dir, memberName), m, plan, replay, res)
	res.Durations.Check = time.Since(began)
	if err != nil {
		return err
	}

	// Start etcdguard's own etcd server on the restored data dir, at the budget's priorities.
	step(o, StepStart)
	began = time.Now()
	c, err := scratch.Start(ctx, scratch.Options{
		Size: 1, TLS: true, Command: []string{o.EtcdBinary, "etcd"}, Dir: dir,
		Existing: true, Ports: ports, StartTimeout: o.StartTimeout, Logger: lg,
		Env: []string{"GOMAXPROCS=" + strconv.Itoa(o.Budget.GOMAXPROCS)}, Nice: o.Budget.Nice, IdleIO: !o.Budget.NoIdleIO,
	})
	res.Durations.Start = time.Since(began)
	if c != nil {
		defer c.Close() // before the folder goes: the member's files are in it
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fail(ReasonStart, err)
	}
	if err := after(ctx, o, StepStart); err != nil {
		return err
	}

	step(o, StepCheck)
	began = time.Now()
	err = checkMember(ctx, c.Members()[0], res.Revision, keys, res)
	res.Durations.Check += time.Since(began)
	if err != nil {
		return err
	}
	res.Keys = keys
	failpoint.Here("drill/after-" + string(StepCheck))
	if o.AfterStep != nil {
		o.AfterStep(StepCheck)
	}
	return nil
}

// chooseBackup returns the backup id names, or the one `restore latest` takes from the catalog:
// the newest whose delta log reaches furthest.
func chooseBackup(ctx context.Context, cat *snapshot.Catalog, id string) (snapshot.Entry, error) {
	if id != "" {
		return cat.Find(id)
	}
	ch, err := cat.Latest(ctx, snapshot.Query{})
	if err != nil {
		return snapshot.Entry{}, err
	}
	if pick := restore.FurthestReaching(ctx, ch.Candidates, restore.Point{}); pick.Manifest.ID != "" {
		return pick, nil
	}
	return ch.Entry, nil
}

// restoreInto restores the fetched snapshot plain into dataDir as a one-member cluster of the
// scratch member on ports, without a revision bump (the member is checked at the revision the
// backup and its log record), and replays plan's delta log onto it: restore.RestoreDataDir, as a
// point-in-time restore does it.
func restoreInto(ctx context.Context, o Options, plain, dataDir string, ports []int, m repository.Manifest, plan *restore.ChainPlan, res *Result) (*restore.ReplayResult, error) {
	if err := checkVersion(ctx, plain, m, res); err != nil {
		return nil, err
	}
	peer := fmt.Sprintf("https://127.0.0.1:%d", ports[1])
	token := make([]byte, 8)
	_, _ = rand.Read(token)
	opts := restore.DataDirOptions{
		Snapshot: plain, Name: memberName, InitialCluster: memberName + "=" + peer, PeerURLs: []string{peer},
		InitialClusterToken: "etcdguard-drill-" + hex.EncodeToString(token), DataDir: dataDir, Now: o.Now(),
	}
	var src *restore.ChainSource
	if plan != nil {
		p := *plan
		p.Chain.Repo = throttledRepo(p.Chain.Repo, o.Budget.FetchRate)
		open := p.Source(ctx, o.Identities)
		opts.Replay = func() (restore.RevisionSource, func(), error) {
			s, done, err := open()
			src, _ = s.(*restore.ChainSource)
			return s, done, err
		}
		opts.ReplayTo = p.UpTo
	}
	dr, err := restore.RestoreDataDir(ctx, opts)
	if src != nil {
		res.Revision, res.RevisionTime = src.Reached, src.ReachedTime
	}
	if dr.Replay != nil {
		res.Events = dr.Replay.Events
	}
	if err != nil {
		return dr.Replay, fail(replayReason(err), err)
	}
	return dr.Replay, nil
}

// checkVersion refuses a backup of an etcd the embedded server may not run (a newer minor
// version), as restore does; one minor version older is a note.
func checkVersion(ctx context.Context, plain string, m repository.Manifest, res *Result) error {
	v, err := restore.ReadDBVersions(ctx, plain)
	if err != nil {
		return fail(ReasonRestore, err)
	}
	backup := v.Version()
	if backup == "" {
		backup = m.Status.Version
	}
	if backup == "" {
		backup = m.EtcdVersion
	}
	skew := restore.CheckVersionSkew(backup, version.Version, false)
	if err := skew.Err(); err != nil {
		return fail(ReasonRestore, err)
	}
	if skew.Verdict == restore.SkewWarning {
		res.Notes = append(res.Notes, "note: "+skew.Reason)
	}
	return nil
}

// step tells o.Progress that a step begins.
func step(o Options, s Step) {
	if o.Progress != nil {
		o.Progress(s)
	}
}

// after marks the end of step s: a failpoint, o.AfterStep, and the context checked.
func after(ctx context.Context, o Options, s Step) error {
	failpoint.Here("drill/after-" + string(s))
	if o.AfterStep != nil {
		o.AfterStep(s)
	}
	return ctx.Err()
}

// readReason is the reason of a failure to read a backup or its log: corrupt when what was read
// is damaged, fetch otherwise.
func readReason(err error) Reason {
	if errors.Is(err, repository.ErrCorrupt) || errors.Is(err, delta.ErrCorrupt) || errors.Is(err, repository.ErrChainBroken) {
		return ReasonCorrupt
	}
	return ReasonFetch
}

// replayReason is the reason of a failed restore with replay: a segment that is damaged, or a
// log that is not the history of its base, is corrupt; one that could not be read is fetch;
// anything else is the restore's.
func replayReason(err error) Reason {
	switch {
	case errors.Is(err, repository.ErrCorrupt), errors.Is(err, delta.ErrCorrupt), errors.Is(err, repository.ErrChainBroken),
		errors.Is(err, restore.ErrRevisionGap), errors.Is(err, restore.ErrReplayMismatch), errors.Is(err, restore.ErrReplayShort):
		return ReasonCorrupt
	case backend.Kind(err) != "":
		return ReasonFetch
	}
	return ReasonRestore
}

// reasonOf is the reason of the error run returned.
func reasonOf(ctx context.Context, err error) Reason {
	if ctx.Err() != nil {
		return ReasonInterrupted
	}
	if f := asFailure(err); f != nil {
		return f.reason
	}
	return ReasonRestore
}

// asFailure returns the failure err is or wraps, or a failure of reason restore for err.
func asFailure(err error) *failure {
	var f *failure
	if errors.As(err, &f) {
		return f
	}
	return &failure{reason: ReasonRestore, err: err}
}
