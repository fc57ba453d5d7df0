package agent

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/etcdguard/etcdguard/internal/config"
	"github.com/etcdguard/etcdguard/internal/drill"
)

// DrillSettings configure the agent's scheduled restore drills.
type DrillSettings struct {
	// Enabled turns them on; Schedule says when they are due (ScheduleSpec is its text).
	Enabled      bool
	Schedule     config.Schedule
	ScheduleSpec string
	// Options are the drill's: targets, the target drilled, identities, work and state dirs,
	// budget. The agent sets Logger and Now.
	Options drill.Options
}

// drills runs a restore drill at every slot of the drill schedule until ctx ends, on the delta
// writer only (one drill per cluster, not one per agent), and keeps the last result for
// /metrics. A drill that fails is logged as an error and raises etcdguard_drill_success to 0 (an
// alert); one the agent's stop interrupts is not recorded as the backup's failure.
func (a *Agent) drills(ctx context.Context) {
	s := a.current().Drill
	if !s.Enabled {
		<-ctx.Done()
		return
	}
	if s.Options.StateDir != "" {
		if _, _, err := drill.Last(s.Options.StateDir, a.opts.Now()); err != nil && !errors.Is(err, drill.ErrNoDrill) {
			a.lg.Warn("could not read the drill history", "error", err)
		}
	}
	lg := a.lg.With("component", "drill")
	a.onSchedule(ctx, lg, "drill", a.drillWake, func(s Settings) (config.Schedule, string) { return s.Drill.Schedule, s.Drill.ScheduleSpec },
		func(s Settings) { a.runDrill(ctx, lg, s.Drill) })
}

// runDrill runs one drill and records its result.
func (a *Agent) runDrill(ctx context.Context, lg *slog.Logger, s DrillSettings) {
	opts := s.Options
	opts.Now = a.opts.Now
	opts.Logger = a.lg.With("component", "drill")
	lg.Info("restore drill started", "target", opts.Target)
	res, err := drill.Run(ctx, opts)
	if ctx.Err() != nil || res.Reason == drill.ReasonInterrupted {
		lg.Info("restore drill stopped: the agent is stopping", "error", err)
		return
	}
	a.metrics.drilled(res)
	a.mu.Lock()
	a.lastDrill = &res
	a.mu.Unlock()
	if err != nil { // drill.Run logged the details; this is the line to alert on in logs
		lg.Error("restore drill FAILED: the backup it tried does not restore as recorded", "target", res.Target, "backup", res.Backup, "reason", string(res.Reason), "error", err)
	}
}

var (
	descDrillOK = prometheus.NewDesc("etcdguard_drill_success",
		"1 if the last restore drill passed, 0 if it failed (target: where its backup was read from).", []string{"target"}, nil)
	descDrillAt = prometheus.NewDesc("etcdguard_drill_last_timestamp_seconds",
		"When the last restore drill finished (Unix time), passed or not.", []string{"target"}, nil)
	descDrillRecovery = prometheus.NewDesc("etcdguard_drill_recovery_seconds",
		"The last drill's measured recovery time: fetch, restore with the delta log's replay, and the member's start.", []string{"target"}, nil)
	descDrillStep = prometheus.NewDesc("etcdguard_drill_step_seconds",
		"How long each step of the last drill took.", []string{"target", "step"}, nil)
	descDrillPoint = prometheus.NewDesc("etcdguard_drill_revision",
		"The revision the last drill restored and checked.", []string{"target"}, nil)
)

// lastDrillResult is the newest drill that passed or failed (an interrupted one says nothing of
// the backup): from the history in the state dir when there is one (so that a drill run by hand,
// `etcdguard drill`, counts too), else the last one this agent ran.
func (a *Agent) lastDrillResult(s DrillSettings) *drill.Result {
	if s.Options.StateDir != "" {
		if r, _, err := drill.LastVerdict(s.Options.StateDir, a.opts.Now()); err == nil {
			return &r
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.lastDrill
}

// collectDrill exports the last drill's result.
func collectDrill(r *drill.Result, gauge func(*prometheus.Desc, float64, ...string)) {
	if r == nil {
		return
	}
	gauge(descDrillOK, b2f(r.OK), r.Target)
	gauge(descDrillAt, unix(r.Finished), r.Target)
	if r.OK {
		gauge(descDrillRecovery, r.Durations.Recovery.Seconds(), r.Target)
		gauge(descDrillPoint, float64(r.Revision), r.Target)
	}
	for step, d := range map[string]time.Duration{"fetch": r.Durations.Fetch, "restore": r.Durations.Restore, "start": r.Durations.Start, "check": r.Durations.Check} {
		gauge(descDrillStep, d.Seconds(), r.Target, step)
	}
}
