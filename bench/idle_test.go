package bench

import (
	"io"
	"net/http"
	"path/filepath"
	"time"

	"testing"

	"github.com/etcdguard/etcdguard/internal/testcluster"
)

// BenchmarkAgentIdle measures the agent's CPU while the cluster is idle between schedules: a
// 3-member TLS etcd 3.6 cluster with a local target and MinIO, the delta log on (its writer
// elected, its watch open, its lease kept alive, the open segment synced when there is something
// to sync), the 3-2-1 check at its default interval, and Prometheus scraping /metrics every 15 s
// (as a default Prometheus would). The agent's user+system CPU time over ETCDGUARD_BENCH_SECONDS
// (default 60) after it is ready, as a share of one core. The aim: under 1%.
func BenchmarkAgentIdle(b *testing.B) {
	dir := b.TempDir()
	guard := buildEtcdguard(b, dir)
	minio := startBenchMinIO(b)
	p := newProtected(b, filepath.Join(dir, "env"), minio, "idle", "", testcluster.Options{})
	a := startAgent(b, guard, p.cfg)
	time.Sleep(5 * time.Second) // the start-up snapshot's shipping and first checks are done
	d := benchSeconds(b)
	pid := a.cmd.Process.Pid
	cpu0, at0 := cpuTime(pid), time.Now()
	scrape := time.NewTicker(15 * time.Second)
	defer scrape.Stop()
	end := time.After(d)
	scrapes := 0
loop:
	for {
		select {
		case <-scrape.C:
			resp, err := http.Get(a.url + "/metrics")
			if err != nil {
				b.Fatalf("scrape: %v", err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			scrapes++
		case <-end:
			break loop
		}
	}
	used := cpuTime(pid) - cpu0
	elapsed := time.Since(at0)
	share := used.Seconds() / elapsed.Seconds() * 100
	b.Logf("\n| agent, idle cluster | CPU time | wall time | share of one core | scrapes |\n|---|---|---|---|---|\n| delta log on, 3-2-1 check every 15m, /metrics every 15 s | %s | %s | %.2f%% | %d |",
		used, elapsed.Round(time.Second), share, scrapes)
	b.ReportMetric(share, "cpu-%-of-one-core")
}
