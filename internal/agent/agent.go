// Package agent is etcdguard's long-running daemon, `etcdguard agent`: a group of components
// started together and stopped together (the snapshot scheduler, the HTTP endpoints /-/healthy
// and /-/ready, and the config reloader). It takes no flags and reads no environment: the CLI
// resolves the config file, the environment and the flags into Settings (Options.Load), and
// wires SIGHUP to Options.Reload. docs/design.md, "The agent", describes it.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/oklog/run"

	"github.com/etcdguard/etcdguard/internal/config"
	"github.com/etcdguard/etcdguard/internal/deltalog"
	"github.com/etcdguard/etcdguard/internal/drill"
	"github.com/etcdguard/etcdguard/internal/policy"
	"github.com/etcdguard/etcdguard/internal/prune"
	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/snapshot"
)

// Settings is what the agent runs with. Options.Load reads it at start and at every reload; a
// reload replaces it whole, or not at all.
type Settings struct {
	// Save is how each scheduled snapshot is taken: etcd, targets, codec, work dir. Its Logger,
	// Now and Command are the agent's.
	Save snapshot.SaveOptions
	// Schedule says when full snapshots are due; ScheduleSpec is its text, for logs.
	Schedule     config.Schedule
	ScheduleSpec string
	// ListenAddress is where the HTTP endpoints are served. It is bound once, at start: a
	// reload that changes it is logged and takes effect at the next start.
	ListenAddress string
	// Delta configures the delta log. It is read once, at start, as ListenAddress is.
	Delta DeltaSettings
	// Policy configures the agent's 3-2-1 checks.
	Policy PolicySettings
	// Drill configures the scheduled restore drills.
	Drill DrillSettings
	// Prune configures the scheduled pruning of targets with a keep: policy.
	Prune PruneSettings
}

// Options configures an agent.
type Options struct {
	// Load reads the settings (the config file, with the environment and flags over it).
	Load func() (Settings, error)
	// Reload receives a value each time the settings should be read again (SIGHUP). Nil: never.
	Reload <-chan os.Signal
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Classify returns the exit code, and its one-word class, that a command failing with err
	// would exit with; a failed run logs them. Nil logs the error alone.
	Classify func(err error) (code int, class string)
	// Save takes one snapshot; nil means snapshot.Save. Tests of the scheduling replace it.
	Save func(context.Context, snapshot.SaveOptions) (snapshot.SaveResult, error)
}

// lockCommand names the agent's snapshot runs in the locks they take.
const lockCommand = "agent (scheduled snapshot)"

// Agent is a configured agent whose listen address is bound; Run runs it.
type Agent struct {
	opts   Options
	lg     *slog.Logger
	ln     net.Listener
	wakeup chan struct{} // the settings changed: the scheduler computes its next slot again
	// snapNow asks the scheduler for a full snapshot at once (the delta log needs a base), with
	// the reason; newBases hands each new full backup on the delta log's target to it.
	snapNow  chan string
	newBases chan repository.Manifest

	mu       sync.Mutex
	settings Settings
	newest   *repository.Manifest // the newest backup in the targets, by the time it was taken
	// lastFull is, per target name, when the newest backup stored there was taken.
	lastFull map[string]time.Time
	lastSave saveSizes      // the last stored backup's sizes and duration
	policy   *policy.Report // the last 3-2-1 check; nil before the first
	checkNow chan struct{}  // a snapshot was stored: check the 3-2-1 rule again
	// drillWake: the settings changed, the drill scheduler computes its next slot again.
	drillWake chan struct{}
	lastDrill *drill.Result // the last drill this agent ran (when there is no state dir)
	pruneWake chan struct{}
	lastPrune *prune.Report // the last scheduled prune; nil before the first
	shippers  []*deltalog.Shipper
	metrics   *metrics
	running   time.Time // when the run in progress started; zero when none is
	lastRun   runOutcome
	delta     deltaState
}

// runOutcome is how the last finished run ended.
type runOutcome struct {
	at    time.Time
	err   error
	code  int
	class string
}

// New reads the settings, binds the listen address and reads which backups the targets hold
// already. Errors here stop the agent before it starts.
func New(ctx context.Context, opts Options) (*Agent, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Save == nil {
		opts.Save = snapshot.Save
	}
	lg := opts.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	s, err := opts.Load()
	if err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.ListenAddress)
	if err != nil {
		return nil, fmt.Errorf("agent: listen on %s: %w", s.ListenAddress, err)
	}
	a := &Agent{opts: opts, lg: lg, ln: ln, wakeup: make(chan struct{}, 1), settings: s,
		snapNow: make(chan string, 1), newBases: make(chan repository.Manifest, 1), checkNow: make(chan struct{}, 1), drillWake: make(chan struct{}, 1), pruneWake: make(chan struct{}, 1)}
	a.metrics = newMetrics(a)
	a.metrics.prune.declare(s.Save.Targets)
	a.warnFastSchedule(s)
	a.newest, a.lastFull = a.newestIn(ctx, s.Save.Targets)
	return a, nil
}

// Addr is the address the HTTP endpoints are served on (the port chosen, for port 0).
func (a *Agent) Addr() net.Addr { return a.ln.Addr() }

// Run runs the agent until ctx ends (SIGTERM, SIGINT), then stops every component and returns
// nil: a snapshot in progress is cancelled, and snapshot.Save removes what it had written. It
// returns an error only when a component fails on its own (the HTTP server).
func (a *Agent) Run(ctx context.Context) error {
	s := a.current()
	a.lg.Info("agent started", "listen_address", a.ln.Addr().String(), "snapshot_schedule", s.ScheduleSpec,
		"next_snapshot", s.Schedule.Next(a.opts.Now()), "targets", targetNames(s.Save.Targets))
	var g run.Group
	{
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { <-ctx.Done(); return nil }, func(error) { cancel() })
	}
	{
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return a.schedule(ctx) }, func(error) { cancel() })
	}
	{
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { a.reloadLoop(ctx); return nil }, func(error) { cancel() })
	}
	{
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { return a.deltaLog(ctx) }, func(error) { cancel() })
	}
	{
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { a.policyLoop(ctx); return nil }, func(error) { cancel() })
	}
	{
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { a.drills(ctx); return nil }, func(error) { cancel() })
	}
	{
		ctx, cancel := context.WithCancel(ctx)
		g.Add(func() error { a.prunes(ctx); return nil }, func(error) { cancel() })
	}
	{
		srv := &http.Server{Handler: a.handler(), ReadHeaderTimeout: 5 * time.Second}
		g.Add(func() error {
			if err := srv.Serve(a.ln); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("agent: serve HTTP on %s: %w", a.ln.Addr(), err)
			}
			return nil
		}, func(error) {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx) // closes the listener; slow clients are cut off after 5 s
		})
	}
	err := g.Run()
	a.lg.Info("agent stopped")
	return err
}

func (a *Agent) current() Settings {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.settings
}

// reloadLoop reads the settings again at each reload request until ctx ends.
func (a *Agent) reloadLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.opts.Reload:
			a.reload(ctx)
		}
	}
}

// reload replaces the settings with freshly loaded ones, or keeps the old ones if the new ones
// do not load. A run in progress finishes with the settings it started with.
func (a *Agent) reload(ctx context.Context) {
	s, err := a.opts.Load()
	if err != nil {
		a.lg.Error("config reload rejected; the agent keeps running on the config it had", "error", err)
		return
	}
	old := a.current()
	if s.ListenAddress != old.ListenAddress {
		a.lg.Warn("a new listen-address takes effect when the agent restarts", "listen_address", a.ln.Addr().String(), "new_listen_address", s.ListenAddress)
	}
	if !sameDelta(s.Delta, old.Delta) {
		a.lg.Warn("new delta log settings take effect when the agent restarts")
	}
	s.Delta = old.Delta
	a.warnFastSchedule(s)
	newest, lastFull := a.newestIn(ctx, s.Save.Targets) // the targets may be others now
	a.mu.Lock()
	a.settings, a.newest, a.lastFull = s, newest, lastFull
	a.mu.Unlock()
	a.metrics.prune.declare(s.Save.Targets)
	for _, ch := range []chan struct{}{a.wakeup, a.drillWake, a.pruneWake} {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	a.lg.Info("config reloaded", "snapshot_schedule", s.ScheduleSpec, "next_snapshot", s.Schedule.Next(a.opts.Now()), "targets", targetNames(s.Save.Targets))
}

// newestIn reads the targets' manifests and returns the newest backup, or nil for none, and,
// per target, when the newest backup stored there was taken.
func (a *Agent) newestIn(ctx context.Context, targets []repository.Target) (*repository.Manifest, map[string]time.Time) {
	perTarget := map[string]time.Time{}
	c, err := snapshot.Load(ctx, targets)
	if c != nil {
		defer c.Close()
		for name, why := range c.Unreadable {
			a.lg.Warn("could not list the backups of a target", "target", name, "error", why)
		}
	}
	if err != nil {
		a.lg.Warn("could not list the backups in the targets", "error", err)
		return nil, perTarget
	}
	for _, e := range c.Entries {
		for _, cp := range e.Copies {
			if t := cp.Manifest.Started; t.After(perTarget[cp.Repo.Target.Name]) {
				perTarget[cp.Repo.Target.Name] = t
			}
		}
	}
	if n := len(c.Entries); n > 0 {
		m := c.Entries[n-1].Manifest
		return &m, perTarget
	}
	return nil, perTarget
}

// noteBackup records a backup: the newest known, if it is, and the targets that store it.
func (a *Agent) noteBackup(m repository.Manifest) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.newest == nil || m.Started.After(a.newest.Started) {
		a.newest = &m
	}
	if a.lastFull == nil {
		a.lastFull = map[string]time.Time{}
	}
	for _, t := range m.Targets {
		if t.State == repository.StateStored && m.Started.After(a.lastFull[t.Name]) {
			a.lastFull[t.Name] = m.Started
		}
	}
}

// warnFastSchedule warns of a schedule of seconds, which is meant for tests.
func (a *Agent) warnFastSchedule(s Settings) {
	if iv, ok := interval(s.Schedule, a.opts.Now()); ok && iv < time.Minute {
		a.lg.Warn("the snapshot schedule runs more than once a minute: a schedule of seconds is meant for tests", "snapshot_schedule", s.ScheduleSpec)
	}
}

func sameDelta(a, b DeltaSettings) bool {
	if a.Enabled != b.Enabled || a.Local.Name != b.Local.Name || a.SyncInterval != b.SyncInterval || a.SealInterval != b.SealInterval || len(a.Remotes) != len(b.Remotes) {
		return false
	}
	for i := range a.Remotes {
		if a.Remotes[i].Name != b.Remotes[i].Name {
			return false
		}
	}
	return true
}

func targetNames(ts []repository.Target) string {
	names := make([]string, 0, len(ts))
	for _, t := range ts {
		names = append(names, t.Name)
	}
	return strings.Join(names, ",")
}
