package agent

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/etcdguard/etcdguard/internal/backend"
	"github.com/etcdguard/etcdguard/internal/drill"
	"github.com/etcdguard/etcdguard/internal/etcdx"
	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/snapshot"
)

// Failure reasons label etcdguard_snapshot_failures_total: a fixed set, decided from the typed
// errors (never from message text), so that an alert or a dashboard can name each one.
const (
	ReasonEtcdUnavailable    = "etcd_unavailable"
	ReasonIntegrity          = "integrity"
	ReasonPartial            = "partial"
	ReasonLocked             = "locked"
	ReasonStorageFull        = "storage_full"
	ReasonStorageDenied      = "storage_denied"
	ReasonStorageUnreachable = "storage_unreachable"
	ReasonOther              = "other"
)

// FailureReasons are every value of the reason label, each exported from the start (at 0).
var FailureReasons = []string{ReasonEtcdUnavailable, ReasonIntegrity, ReasonPartial, ReasonLocked,
	ReasonStorageFull, ReasonStorageDenied, ReasonStorageUnreachable, ReasonOther}

// FailureReason returns the reason label of a failed snapshot run's error.
func FailureReason(err error) string {
	for _, r := range []struct {
		reason string
		errs   []error
	}{
		{ReasonPartial, []error{snapshot.ErrPartial}},
		{ReasonEtcdUnavailable, []error{etcdx.ErrUnavailable}},
		{ReasonIntegrity, []error{snapshot.ErrCorrupt, repository.ErrWrongKey}},
		{ReasonLocked, []error{repository.ErrLocked}},
		{ReasonStorageFull, []error{backend.ErrNoSpace}},
		{ReasonStorageDenied, []error{backend.ErrDenied}},
		{ReasonStorageUnreachable, []error{backend.ErrUnreachable, backend.ErrUnavailable, snapshot.ErrNoTarget}},
	} {
		for _, e := range r.errs {
			if errors.Is(err, e) {
				return r.reason
			}
		}
	}
	return ReasonOther
}

// saveSizes are the last stored backup's sizes and how long it took.
type saveSizes struct {
	raw, stored int64
	elapsed     time.Duration
}

// metrics is what /metrics serves: counters and a histogram the agent updates as runs end, and a
// collector that reads the agent's state at each scrape (so that a gauge can never be stale).
type metrics struct {
	reg              *prometheus.Registry
	snapshots        prometheus.Counter
	snapshotFailures *prometheus.CounterVec
	snapshotDuration prometheus.Histogram
	drills           prometheus.Counter
	drillFailures    *prometheus.CounterVec
	prune            pruneMetrics
}

func newMetrics(a *Agent) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		snapshots: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "etcdguard_snapshots_total",
			Help: "Full snapshots the agent stored and verified in at least one target.",
		}),
		snapshotFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etcdguard_snapshot_failures_total",
			Help: "Scheduled full snapshots that failed or were stored in some targets only, by reason.",
		}, []string{"reason"}),
		snapshotDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "etcdguard_snapshot_duration_seconds",
			Help:    "How long a full snapshot took: taken, stored in every target, read back and verified.",
			Buckets: prometheus.ExponentialBuckets(0.25, 2, 14), // 0.25 s to about 34 min
		}),
	}
	m.drills = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "etcdguard_drills_total",
		Help: "Restore drills the agent ran to the end, passed or failed.",
	})
	m.drillFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "etcdguard_drill_failures_total",
		Help: "Restore drills that failed, by reason (budget, fetch, corrupt, restore, start, check).",
	}, []string{"reason"})
	for _, r := range FailureReasons {
		m.snapshotFailures.WithLabelValues(r)
	}
	for _, r := range drill.Reasons() {
		if r != drill.ReasonInterrupted { // an interrupted drill says nothing of the backup
			m.drillFailures.WithLabelValues(string(r))
		}
	}
	m.prune = newPruneMetrics()
	m.reg.MustRegister(m.prune.collectors()...)
	m.reg.MustRegister(m.snapshots, m.snapshotFailures, m.snapshotDuration, m.drills, m.drillFailures, stateCollector{a},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// drilled records a drill that ran to its end.
func (m *metrics) drilled(r drill.Result) {
	m.drills.Inc()
	if !r.OK {
		m.drillFailures.WithLabelValues(string(r.Reason)).Inc()
	}
}

// saved records a run that stored a backup (err is nil or a partial store), or that failed.
func (m *metrics) saved(res snapshot.SaveResult, err error) {
	if res.Manifest.ID != "" {
		m.snapshots.Inc()
		m.snapshotDuration.Observe(res.Elapsed.Seconds())
	}
	if err != nil {
		m.snapshotFailures.WithLabelValues(FailureReason(err)).Inc()
	}
}

var (
	descLastFull = prometheus.NewDesc("etcdguard_last_full_snapshot_timestamp_seconds",
		"When the newest full backup stored in the target was taken (Unix time); offline says whether the target is an offline medium.", []string{"target", "offline"}, nil)
	descSnapshotSize = prometheus.NewDesc("etcdguard_last_snapshot_size_bytes",
		"The size of the last full snapshot the agent stored: raw (the database) and stored (after compression and encryption).", []string{"kind"}, nil)
	descSnapshotElapsed = prometheus.NewDesc("etcdguard_last_snapshot_duration_seconds",
		"How long the last full snapshot the agent stored took.", nil, nil)
	descReady = prometheus.NewDesc("etcdguard_ready",
		"1 while the agent calls the cluster protected (as /-/ready answers 200), 0 otherwise.", nil, nil)
	descWriter = prometheus.NewDesc("etcdguard_delta_writer",
		"1 while this agent is the cluster's elected delta writer, 0 while it stands by; absent while the delta log is off.", nil, nil)
	descLastDelta = prometheus.NewDesc("etcdguard_last_delta_timestamp_seconds",
		"When the newest revision durable in the target's delta log was received (Unix time): the open segment on the delta target, sealed and shipped segments on the others.", []string{"target"}, nil)
	descDurable = prometheus.NewDesc("etcdguard_delta_durable_revision",
		"The newest revision durable in the delta log on the delta target.", nil, nil)
	descHead = prometheus.NewDesc("etcdguard_delta_head_revision",
		"The newest revision etcd reported to the delta writer.", nil, nil)
	descLag = prometheus.NewDesc("etcdguard_delta_lag_revisions",
		"Revisions etcd reported that are not durable yet in the target's delta log: on the delta target, head - durable; on the others, durable - shipped.", []string{"target"}, nil)
	descRPO = prometheus.NewDesc("etcdguard_recovery_point_seconds",
		"The current recovery point: 0 while the delta log holds every revision etcd reported, otherwise the seconds since it last did (what a power cut now could lose at most). Only the delta writer exports it.", nil, nil)
	descCertExpiry = prometheus.NewDesc("etcdguard_certificate_expiry_timestamp_seconds",
		"When a certificate of the etcd PKI the agent uses expires (Unix time): its CA bundle (each CA) and its client certificate.", []string{"file", "role", "subject"}, nil)
)

// stateCollector exports the agent's state at each scrape.
type stateCollector struct{ a *Agent }

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	a := c.a
	now := a.opts.Now()
	ready, _ := a.readiness(now)
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(descReady, b2f(ready))

	a.mu.Lock()
	s := a.settings
	offline := map[string]string{}
	for _, t := range s.Save.Targets {
		offline[t.Name] = fmt.Sprint(t.Offline)
	}
	for name, t := range a.lastFull {
		if off, ok := offline[name]; ok { // a target the settings still name
			gauge(descLastFull, unix(t), name, off)
		}
	}
	if last := a.lastSave; last.elapsed > 0 {
		gauge(descSnapshotSize, float64(last.raw), "raw")
		gauge(descSnapshotSize, float64(last.stored), "stored")
		gauge(descSnapshotElapsed, last.elapsed.Seconds())
	}
	d := a.delta
	shippers := a.shippers
	pol := a.policy
	lastPrune := a.lastPrune
	a.mu.Unlock()
	collectPrune(lastPrune, gauge)
	collectPolicy(pol, now, gauge)
	if s.Drill.Enabled || s.Drill.Options.StateDir != "" {
		collectDrill(a.lastDrillResult(s.Drill), gauge)
	}

	if s.Delta.Enabled {
		writer := !d.standby && d.leader != ""
		gauge(descWriter, b2f(writer))
		p := d.progress
		if durable := d.durable(); writer && durable > 0 {
			if p.Base == d.base && p.Revision > 0 {
				gauge(descLastDelta, unix(p.At), s.Delta.Local.Name)
			}
			gauge(descDurable, float64(durable))
			if p.Base == d.base {
				gauge(descHead, float64(p.Head))
				gauge(descLag, float64(max(p.Head-durable, 0)), s.Delta.Local.Name)
			}
			for _, sh := range shippers {
				rev, at := sh.Newest()
				if rev == 0 {
					continue
				}
				if !at.IsZero() {
					gauge(descLastDelta, unix(at), sh.Target.Name)
				}
				// A remote that holds none of this chain yet holds at least the base.
				gauge(descLag, float64(max(durable-max(rev, d.baseRev), 0)), sh.Target.Name)
			}
		}
		if writer {
			gauge(descRPO, recoveryPoint(now, d).Seconds())
		}
	}
	for _, cf := range []struct{ file, role string }{{s.Save.Etcd.CACert, "ca"}, {s.Save.Etcd.Cert, "client"}} {
		if cf.file == "" {
			continue
		}
		// One series per subject, the first to expire: a bundle in the middle of a rotation
		// holds the old CA and the new under one name.
		first := map[string]time.Time{}
		var subjects []string
		for _, crt := range readCerts(cf.file) {
			cn := crt.Subject.CommonName
			at, ok := first[cn]
			if !ok {
				subjects = append(subjects, cn)
			}
			if !ok || crt.NotAfter.Before(at) {
				first[cn] = crt.NotAfter
			}
		}
		for _, cn := range subjects {
			gauge(descCertExpiry, unix(first[cn]), cf.file, cf.role, cn)
		}
	}
}

// recoveryPoint is what a power cut now could lose at most: nothing while the delta log holds
// every revision etcd reported and its watch delivers; otherwise the time since it last did (the
// oldest write not durable was made after that). A writer that holds no chain yet has held
// nothing since it was elected.
func recoveryPoint(now time.Time, d deltaState) time.Duration {
	p := d.progress
	caughtUp := d.running && p.Base == d.base && d.durable() >= p.Head && p.WatchErr == nil
	if caughtUp {
		return 0
	}
	since := d.caughtUpAt
	if since.IsZero() {
		since = d.electedAt
	}
	if since.IsZero() {
		return 0
	}
	return max(now.Sub(since), 0)
}

// maxCertFile bounds what a scrape reads of a certificate file: a system CA bundle is a few
// hundred KiB.
const maxCertFile = 4 << 20

// readCerts reads the certificates of a PEM file; a file that does not read (or is not a regular
// file of at most maxCertFile bytes: a scrape must not block on a FIFO nor read a log named by
// mistake) yields none (doctor and certs check say why).
func readCerts(path string) []*x509.Certificate {
	if fi, err := os.Stat(path); err != nil || !fi.Mode().IsRegular() || fi.Size() > maxCertFile {
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, data = pem.Decode(data)
		if blk == nil {
			return out
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		if crt, err := x509.ParseCertificate(blk.Bytes); err == nil {
			out = append(out, crt)
		}
	}
}

func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
