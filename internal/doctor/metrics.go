package doctor

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/etcdguard/etcdguard/internal/etcdx"
)

// Disk latency thresholds, p99, from etcd's tuning guidance.
var diskChecks = []struct {
	metric string
	what   string
	warn   float64
}{
	{"etcd_disk_wal_fsync_duration_seconds", "WAL fsync", 0.010},
	{"etcd_disk_backend_commit_duration_seconds", "backend commit", 0.025},
}

// checkDisks reads each member's /metrics and estimates the p99 of WAL fsync and backend commit
// from their histograms.
func checkDisks(ctx context.Context, cfg etcdx.Config, statuses []etcdx.MemberStatus) []Finding {
	tlsCfg, _ := cfg.TLS()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	defer client.CloseIdleConnections()
	var fs []Finding
	for _, st := range statuses {
		if st.Err != "" {
			continue
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(st.Endpoint, "/")+"/metrics", nil)
		if err != nil {
			continue
		}
		resp, err := client.Do(req)
		if err != nil {
			continue
		}
		hists := parseHistograms(resp.Body)
		resp.Body.Close()
		for _, dc := range diskChecks {
			h, ok := hists[dc.metric]
			if !ok || h.count == 0 {
				continue
			}
			p99, lower, upper := h.quantile(0.99)
			about := "about"
			ev := fmt.Sprintf("%s histogram: the 99th percentile falls between %s and %s, %s by linear interpolation (as histogram_quantile); alert above %s",
				dc.metric, fmtSeconds(lower), fmtSeconds(upper), fmtSeconds(p99), fmtSeconds(dc.warn))
			if math.IsInf(upper, +1) {
				about = "at least"
				ev = fmt.Sprintf("%s histogram: the 99th percentile is beyond its largest bucket, %s; alert above %s", dc.metric, fmtSeconds(lower), fmtSeconds(dc.warn))
			}
			f := Finding{Check: "disk", Subject: nameOr(st) + " " + st.Endpoint,
				Summary:  fmt.Sprintf("%s p99 %s %s over %.0f operations", dc.what, about, fmtSeconds(p99), h.count),
				Evidence: []string{ev}}
			if p99 > dc.warn {
				f.Severity = Warning
				f.Summary = fmt.Sprintf("%s is slow: p99 %s %s (above %s): etcd misses heartbeats and elections start", dc.what, about, fmtSeconds(p99), fmtSeconds(dc.warn))
				f.Next = "move etcd's data dir to a dedicated SSD, check for noisy neighbours (iostat -x 1), or raise the member's disk priority (ionice)"
			}
			fs = append(fs, f)
		}
	}
	return fs
}

type histogram struct {
	buckets []bucket // by upper bound
	count   float64
}

type bucket struct {
	le    float64
	count float64
}

// quantile estimates the q-quantile as Prometheus's histogram_quantile does: it finds the
// bucket the quantile falls in and interpolates linearly between the bucket's bounds (from 0
// for the first bucket; a quantile in the +Inf bucket is the highest finite bound). It also
// returns the bucket's bounds, for the evidence.
func (h histogram) quantile(q float64) (v, lower, upper float64) {
	sort.Slice(h.buckets, func(i, j int) bool { return h.buckets[i].le < h.buckets[j].le })
	rank := q * h.count
	prevLE, prevCount := 0.0, 0.0
	for _, b := range h.buckets {
		if b.count >= rank {
			if math.IsInf(b.le, +1) {
				return prevLE, prevLE, b.le
			}
			if b.count == prevCount {
				return b.le, prevLE, b.le
			}
			return prevLE + (b.le-prevLE)*(rank-prevCount)/(b.count-prevCount), prevLE, b.le
		}
		prevLE, prevCount = b.le, b.count
	}
	return prevLE, prevLE, prevLE
}

// parseHistograms reads the _bucket and _count lines of Prometheus text format histograms.
func parseHistograms(r interface{ Read([]byte) (int, error) }) map[string]histogram {
	out := map[string]histogram{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, rest, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		val, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
		if err != nil {
			continue
		}
		switch {
		case strings.Contains(name, "_bucket{"):
			metric := name[:strings.Index(name, "_bucket{")]
			i := strings.Index(name, `le="`)
			if i < 0 {
				continue
			}
			leText := name[i+4:]
			leText = leText[:strings.Index(leText, `"`)]
			le, err := strconv.ParseFloat(leText, 64)
			if err != nil {
				continue
			}
			h := out[metric]
			h.buckets = append(h.buckets, bucket{le: le, count: val})
			out[metric] = h
		case strings.HasSuffix(name, "_count"):
			metric := strings.TrimSuffix(name, "_count")
			h := out[metric]
			h.count = val
			out[metric] = h
		}
	}
	return out
}

func fmtSeconds(s float64) string {
	switch {
	case s >= 1:
		return fmt.Sprintf("%.2fs", s)
	case math.IsInf(s, +1):
		return "+Inf"
	case s >= 0.01:
		return fmt.Sprintf("%.0fms", s*1000)
	case s >= 0.001:
		return fmt.Sprintf("%.1fms", s*1000)
	}
	return fmt.Sprintf("%.0fµs", s*1e6)
}
