package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/etcdguard/etcdguard/internal/config"
	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/snapshot"
)

// schedule takes a full snapshot at every slot of the schedule until ctx ends, and once at start
// when the targets hold no recent backup. Runs never overlap: a slot that comes while a run is
// still going is skipped, with a log line. When ctx ends it waits for the run in progress, which
// the cancelled context stops.
func (a *Agent) schedule(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	start := func(slot time.Time, why string) {
		a.mu.Lock()
		if since := a.running; !since.IsZero() {
			a.mu.Unlock()
			a.lg.Warn("scheduled snapshot skipped: the previous run is still going", "slot", slot, "running_since", since)
			return
		}
		a.running = a.opts.Now()
		s := a.settings
		a.mu.Unlock()
		wg.Go(func() {
			a.runOnce(ctx, s, slot, why)
			a.mu.Lock()
			a.running = time.Time{}
			a.mu.Unlock()
		})
	}
	if ok, reason := a.readiness(a.opts.Now()); !ok && !a.current().Delta.Enabled {
		// With the delta log on, the elected delta writer asks for this snapshot itself.
		start(a.opts.Now(), "at start: "+reason)
	}
	var last time.Time // the last slot started, so that a timer that fires early never repeats it
	for {
		s := a.current()
		now := a.opts.Now()
		next := s.Schedule.Next(later(now, last))
		var due <-chan time.Time
		stop := func() bool { return false }
		if next.IsZero() {
			a.lg.Error("the snapshot schedule has no next slot; no snapshot is taken until the config is reloaded with another", "snapshot_schedule", s.ScheduleSpec)
		} else {
			t := time.NewTimer(next.Sub(now))
			due, stop = t.C, t.Stop
		}
		select {
		case <-ctx.Done():
			stop()
			return nil
		case <-a.wakeup:
			stop()
		case why := <-a.snapNow:
			stop()
			start(a.opts.Now(), why)
		case <-due:
			last = next
			if !a.isWriter() {
				a.lg.Debug("scheduled snapshot left to the delta writer: this agent stands by", "slot", next)
				continue
			}
			start(next, "scheduled")
		}
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// runOnce takes one snapshot through the verified save path and logs how it ended. A failure
// is logged with its exit-code class; the next slot tries again.
func (a *Agent) runOnce(ctx context.Context, s Settings, slot time.Time, why string) {
	opts := s.Save
	opts.Logger = a.lg.With("component", "snapshot")
	opts.Now = a.opts.Now
	opts.Command = lockCommand
	opts.Progress = nil
	a.lg.Info("scheduled snapshot started", "slot", slot, "reason", why)
	res, err := a.opts.Save(ctx, opts)
	m := res.Manifest
	if ctx.Err() == nil {
		a.metrics.saved(res, err)
	}
	if m.ID != "" {
		a.mu.Lock()
		a.lastSave = saveSizes{raw: m.RawSize, stored: m.StoredSize, elapsed: res.Elapsed}
		a.mu.Unlock()
		select {
		case a.checkNow <- struct{}{}:
		default:
		}
		a.noteBackup(m) // a partial backup is stored and verified too
		a.offerBase(m)
	}
	out := runOutcome{at: a.opts.Now(), err: err}
	switch {
	case err != nil && ctx.Err() != nil:
		a.lg.Info("scheduled snapshot stopped: the agent is stopping; what it was writing is removed", "slot", slot, "error", err)
		return
	case err != nil:
		out.code, out.class = a.classify(err)
		attrs := []any{"slot", slot, "error", err, "exit_code", out.code, "class", out.class, "next_slot", s.Schedule.Next(a.opts.Now())}
		if errors.Is(err, snapshot.ErrPartial) {
			a.lg.Warn("scheduled snapshot stored in some targets only", append(attrs, "id", m.ID, "revision", m.Revision)...)
		} else {
			a.lg.Error("scheduled snapshot failed; the next slot tries again", attrs...)
		}
	default:
		a.lg.Info("scheduled snapshot stored and verified", "slot", slot, "id", m.ID, "revision", m.Revision,
			"targets", fmt.Sprintf("%d/%d", repository.StoredCount(m.Targets), len(m.Targets)), "elapsed", res.Elapsed.Round(time.Millisecond))
	}
	a.mu.Lock()
	a.lastRun = out
	a.mu.Unlock()
}

func (a *Agent) classify(err error) (int, string) {
	if a.opts.Classify == nil {
		return 1, "failure"
	}
	return a.opts.Classify(err)
}

// onSchedule runs job at every slot of the schedule that sched picks from the current settings,
// until ctx ends, on the delta writer only (a standby agent leaves it to the writer: one run
// per cluster). wake says the settings changed: the next slot is computed again. Runs never
// overlap: job runs in this goroutine.
func (a *Agent) onSchedule(ctx context.Context, lg *slog.Logger, name string, wake <-chan struct{}, sched func(Settings) (config.Schedule, string), job func(Settings)) {
	var last time.Time
	for {
		s := a.current()
		sc, spec := sched(s)
		now := a.opts.Now()
		next := sc.Next(later(now, last))
		if next.IsZero() {
			lg.Error("the "+name+" schedule has no next slot", "schedule", spec)
			<-ctx.Done()
			return
		}
		t := time.NewTimer(next.Sub(now))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-wake:
			t.Stop()
			continue
		case <-t.C:
		}
		last = next
		if !a.isWriter() {
			lg.Debug("scheduled "+name+" left to the delta writer: this agent stands by", "slot", next)
			continue
		}
		job(a.current())
	}
}
