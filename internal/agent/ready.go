package agent

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/etcdguard/etcdguard/internal/config"
)

// Protected says whether a cluster whose newest verified backup was taken at newest (the zero
// time: there is none) is protected at now under a snapshot schedule: the backup is younger
// than two schedule intervals, so at most one scheduled run was missed. An interval is the time
// between the schedule's next two slots after now. The reason says why, in one line without
// secrets. With the delta log on, the agent is ready only while its chain runs too (readiness).
func Protected(now time.Time, newestID string, newest time.Time, sched config.Schedule) (bool, string) {
	if newest.IsZero() {
		return false, "no verified backup in the targets yet"
	}
	iv, ok := interval(sched, now)
	if !ok {
		return false, "the snapshot schedule has no next slot"
	}
	age := max(now.Sub(newest), 0).Round(time.Second)
	if age >= 2*iv {
		return false, fmt.Sprintf("the newest backup, %s, is %s old: older than two schedule intervals (%s)", newestID, age, 2*iv)
	}
	return true, fmt.Sprintf("the newest backup, %s, is %s old, within two schedule intervals (%s)", newestID, age, 2*iv)
}

// watchFailingLimit is how long the delta log's watch may fail (it is opened again after a
// backoff) before the agent stops calling the cluster protected: a member restart or a leader
// change takes a few seconds.
const watchFailingLimit = 30 * time.Second

// interval returns the time between the schedule's next two slots after now.
func interval(sched config.Schedule, now time.Time) (time.Duration, bool) {
	t1 := sched.Next(now)
	if t1.IsZero() {
		return 0, false
	}
	t2 := sched.Next(t1)
	if t2.IsZero() {
		return 0, false
	}
	return t2.Sub(t1), true
}

// readiness is Protected for the agent's state, with the last run's failure, if it failed.
func (a *Agent) readiness(now time.Time) (bool, string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var id string
	var at time.Time
	if a.newest != nil {
		id, at = a.newest.ID, a.newest.Started
	}
	ok, reason := Protected(now, id, at, a.settings.Schedule)
	if a.settings.Delta.Enabled {
		d := a.delta
		switch {
		case d.standby && d.leader != "":
			// Another agent writes the delta log and takes the snapshots; this one stands by
			// to take over, and the backups it knew at start say nothing about the writer's.
			ok, reason = true, fmt.Sprintf("standing by: %s is the delta writer and takes the snapshots", d.leader)
		case d.standby:
			ok, reason = false, "standing by, and no agent is the delta writer yet"
		case !d.running && d.lastErr != nil:
			ok = false
			reason += fmt.Sprintf("; the delta log is not running: since %s: %v", d.errAt.UTC().Format(time.RFC3339), d.lastErr)
		case !d.running:
			ok = false
			reason += "; the delta log is not running yet"
		case d.progress.Base == d.base && d.progress.WatchErr != nil && now.Sub(d.progress.WatchFailingSince) >= watchFailingLimit:
			ok = false
			reason += fmt.Sprintf("; the delta log's watch has failed for %s (durable up to revision %d): %v",
				now.Sub(d.progress.WatchFailingSince).Round(time.Second), d.progress.Revision, d.progress.WatchErr)
		case d.progress.Base != d.base || d.progress.Revision == 0:
			reason += fmt.Sprintf("; the delta chain of %s runs, nothing written to it yet", d.base)
		default:
			reason += fmt.Sprintf("; the delta chain of %s runs, durable up to revision %d", d.base, d.progress.Revision)
		}
	}
	if last := a.lastRun; last.err != nil {
		reason += fmt.Sprintf("; the last scheduled snapshot, at %s, failed (exit code %d, %s)", last.at.UTC().Format(time.RFC3339), last.code, last.class)
	}
	return ok, reason
}

// handler serves /-/healthy (200 while the process runs), /-/ready (200 while the cluster is
// protected, 503 with the reason otherwise) and /-/status (Status, as JSON).
func (a *Agent) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /-/healthy", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "etcdguard agent is healthy")
	})
	mux.HandleFunc("GET /-/ready", func(w http.ResponseWriter, _ *http.Request) {
		ok, reason := a.readiness(a.opts.Now())
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready: "+reason)
			return
		}
		fmt.Fprintln(w, "ready: "+reason)
	})
	mux.Handle("GET /metrics", a.metrics.handler())
	mux.HandleFunc("GET /-/status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(a.status(a.opts.Now()))
	})
	return mux
}

// Status is the agent's state as /-/status serves it (JSON): what operators and benchmarks
// read; no key or value of the cluster is in it.
type Status struct {
	Ready  bool   `json:"ready"`
	Reason string `json:"reason"`
	// NewestBackup is the newest verified full backup the agent knows of.
	NewestBackup     string       `json:"newest_backup,omitempty"`
	NewestBackupTime time.Time    `json:"newest_backup_time,omitzero"`
	Delta            *DeltaStatus `json:"delta,omitempty"`
}

// DeltaStatus is the delta log's part of Status.
type DeltaStatus struct {
	// Role is "writer" or "standby"; Writer names the elected writer when known.
	Role   string `json:"role"`
	Writer string `json:"writer,omitempty"`
	// Base is the full backup whose chain is written; DurableRevision the newest revision
	// durable on the local target, received at DurableReceived; Head the newest revision etcd
	// reported to the writer; SyncedAt when the open segment was last made durable.
	Base            string    `json:"base,omitempty"`
	DurableRevision int64     `json:"durable_revision,omitempty"`
	DurableReceived time.Time `json:"durable_received,omitzero"`
	Head            int64     `json:"head,omitempty"`
	SyncedAt        time.Time `json:"synced_at,omitzero"`
	LastError       string    `json:"last_error,omitempty"`
	// WatchFailingSince is when the watch started failing, while it does.
	WatchFailingSince time.Time `json:"watch_failing_since,omitzero"`
}

func (a *Agent) status(now time.Time) Status {
	ok, reason := a.readiness(now)
	a.mu.Lock()
	defer a.mu.Unlock()
	st := Status{Ready: ok, Reason: reason}
	if a.newest != nil {
		st.NewestBackup, st.NewestBackupTime = a.newest.ID, a.newest.Started
	}
	if a.settings.Delta.Enabled {
		d := a.delta
		ds := &DeltaStatus{Role: "writer", Writer: d.leader, Base: d.base}
		if d.standby {
			ds.Role = "standby"
		}
		if d.progress.Base == d.base {
			ds.DurableRevision, ds.DurableReceived, ds.Head, ds.SyncedAt = d.progress.Revision, d.progress.At, d.progress.Head, d.progress.SyncedAt
		}
		if d.lastErr != nil {
			ds.LastError = d.lastErr.Error()
		}
		if d.progress.Base == d.base && d.progress.WatchErr != nil {
			ds.LastError = "watch: " + d.progress.WatchErr.Error()
			ds.WatchFailingSince = d.progress.WatchFailingSince
		}
		st.Delta = ds
	}
	return st
}
