package agent

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/etcdguard/etcdguard/internal/config"
	"github.com/etcdguard/etcdguard/internal/prune"
	"github.com/etcdguard/etcdguard/internal/repository"
)

// PruneSettings configure the agent's scheduled pruning: each target's keep: policy carried
// out (targets without one are never pruned).
type PruneSettings struct {
	Enabled      bool
	Schedule     config.Schedule
	ScheduleSpec string
}

// pruneCommand names the agent's pruning in the locks it takes.
const pruneCommand = "agent (scheduled prune)"

// prunes prunes the targets at every slot of the prune schedule until ctx ends, on the delta
// writer only (one pruning per cluster), and keeps the last report for /metrics.
func (a *Agent) prunes(ctx context.Context) {
	if !a.current().Prune.Enabled {
		<-ctx.Done()
		return
	}
	lg := a.lg.With("component", "prune")
	a.onSchedule(ctx, lg, "prune", a.pruneWake, func(s Settings) (config.Schedule, string) { return s.Prune.Schedule, s.Prune.ScheduleSpec },
		func(s Settings) { a.runPrune(ctx, lg, s) })
}

// runPrune prunes the targets once and records the report.
func (a *Agent) runPrune(ctx context.Context, lg *slog.Logger, s Settings) {
	rep, err := prune.Run(ctx, prune.Options{Targets: s.Save.Targets, Now: a.opts.Now, Logger: lg, Command: pruneCommand})
	if ctx.Err() != nil {
		return
	}
	a.metrics.pruned(rep)
	a.mu.Lock()
	a.lastPrune = &rep
	a.mu.Unlock()
	if err != nil {
		lg.Error("scheduled prune failed in some targets; the next slot tries again", "error", err)
		return
	}
	removed := 0
	for _, tr := range rep.Targets {
		removed += tr.Removed
	}
	lg.Info("scheduled prune done", "removed", removed, "next_slot", s.Prune.Schedule.Next(a.opts.Now()))
}

// pruneMetrics are the counters of the agent's pruning.
type pruneMetrics struct {
	removed, bytes, locked, failures *prometheus.CounterVec
}

func newPruneMetrics() pruneMetrics {
	return pruneMetrics{
		removed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "etcdguard_retention_removed_total",
			Help: "Full backups (each with its delta chain) the agent's pruning removed, by target."}, []string{"target"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "etcdguard_retention_removed_bytes_total",
			Help: "Bytes of the objects the agent's pruning removed, by target."}, []string{"target"}),
		locked: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "etcdguard_retention_locked_skipped_total",
			Help: "Backups the policy would have removed but the storage locks (S3 Object Lock, legal hold), counted at each prune, by target."}, []string{"target"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "etcdguard_retention_failures_total",
			Help: "Prunes of a target that failed or stopped before the end, by target."}, []string{"target"}),
	}
}

func (p pruneMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{p.removed, p.bytes, p.locked, p.failures}
}

// declare exports every counter of each target that has a keep: policy at 0.
func (p pruneMetrics) declare(targets []repository.Target) {
	for _, t := range targets {
		if t.Keep == nil {
			continue
		}
		for _, c := range []*prometheus.CounterVec{p.removed, p.bytes, p.locked, p.failures} {
			c.WithLabelValues(t.Name)
		}
	}
}

// pruned counts what one prune did.
func (m *metrics) pruned(rep prune.Report) {
	for _, tr := range rep.Targets {
		if tr.State == prune.StateNoPolicy {
			continue
		}
		m.prune.removed.WithLabelValues(tr.Name).Add(float64(tr.Removed))
		m.prune.bytes.WithLabelValues(tr.Name).Add(float64(tr.BytesRemoved))
		m.prune.locked.WithLabelValues(tr.Name).Add(float64(tr.LockedSkipped))
		if tr.State == prune.StateFailed {
			m.prune.failures.WithLabelValues(tr.Name).Inc()
		}
	}
}

var (
	descPruneAt = prometheus.NewDesc("etcdguard_retention_last_run_timestamp_seconds",
		"When the agent last pruned the target (Unix time), whatever the outcome.", []string{"target", "state"}, nil)
	descPruneKept = prometheus.NewDesc("etcdguard_retention_kept",
		"Full backups the target kept at the agent's last prune.", []string{"target"}, nil)
)

// collectPrune exports the last prune's report.
func collectPrune(rep *prune.Report, gauge func(*prometheus.Desc, float64, ...string)) {
	if rep == nil {
		return
	}
	for _, tr := range rep.Targets {
		if tr.State == prune.StateNoPolicy {
			continue
		}
		gauge(descPruneAt, unix(rep.Now), tr.Name, tr.State)
		if tr.State != prune.StateFailed && tr.State != prune.StateAbsent {
			gauge(descPruneKept, float64(tr.Kept), tr.Name)
		}
	}
}
