package bench

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/etcdguard/etcdguard/internal/testcluster"
)

// The continuous-protection benchmarks (issue 10): how much a power cut loses with the agent's
// delta log running, what the agent costs the cluster, and how much memory it needs. They run a
// 3-member TLS etcd 3.6 cluster, the agent as its own process (a local target and MinIO, a yearly
// schedule: only the start-up snapshot), and scratch.Load, a Kubernetes-shaped load that logs
// every acknowledged write with its revision:
//
//	go test ./bench -run '^$' -bench 'Delta|Agent' -benchtime 1x -timeout 120m
//
// ETCDGUARD_BENCH_SECONDS (default 60) is the length of the recovery-point and cost loads;
// ETCDGUARD_BENCH_KILLS (default 5) and ETCDGUARD_BENCH_KILL_SECONDS (default 20) the number of
// power cuts per tool and the load before each; ETCDGUARD_BENCH_BURSTS (default "30s,90s") the
// lengths of the memory benchmark's bursts; ETCDGUARD_BENCH_AGENT_YAML settings added to the cost
// benchmark's agent. Nothing is asserted on timings: the numbers are logged and reported, for
// docs/benchmarks.md.

// deltaLoadRate is the rate of the recovery-point and kill loads: a busy Kubernetes cluster.
const deltaLoadRate = 1000

// BenchmarkDeltaRecoveryPoint samples the agent's /-/status every 10 ms under a load of about
// 1,000 writes a second and computes, at each sample, the recovery point: how long before the
// sample the oldest acknowledged write not yet durable on the local target was acknowledged (0
// when every acknowledged write is durable). The sample's time is when its answer arrived, so
// the HTTP round trip counts against the agent. The aim: p99 at most 250 ms.
func BenchmarkDeltaRecoveryPoint(b *testing.B) {
	dir := b.TempDir()
	guard := buildEtcdguard(b, dir)
	minio := startBenchMinIO(b)
	p := newProtected(b, filepath.Join(dir, "env"), minio, "rp", "", testcluster.Options{})
	a := startAgent(b, guard, p.cfg)
	cli := p.client(b)
	d := benchSeconds(b)

	load := testcluster.StartLoad(cli, testcluster.LoadOptions{Workers: 48, Namespace: "rp", Seed: 10, Rate: deltaLoadRate})
	started := time.Now()
	stop := sampleDurable(a, 10*time.Millisecond)
	time.Sleep(d)
	samples, failures := stop()
	load.Halt()
	acked, failed := load.Acked()

	log := load.AckLog()
	var rp []time.Duration
	over := 0
	for _, s := range samples {
		r := log.RecoveryPoint(s.durable, s.at)
		rp = append(rp, r)
		if r > 250*time.Millisecond {
			over++
		}
	}
	rate := float64(acked) / d.Seconds()
	b.Logf("load: %d ops acknowledged in %s (%.0f a second), %d failed; %d samples of /-/status, %d failed",
		acked, d, rate, failed, len(samples), failures)
	b.Logf("\n| recovery point | p50 | p99 | max | samples over 250 ms |\n|---|---|---|---|---|\n"+
		"| durable on the local target | %.0f ms | %.0f ms | %.0f ms | %d of %d |",
		ms(quantile(rp, 0.5)), ms(quantile(rp, 0.99)), ms(quantile(rp, 1)), over, len(rp))
	if len(samples) == 0 {
		b.Fatalf("no sample of /-/status succeeded in %s (started %s)", d, started.Format(time.RFC3339))
	}
	b.ReportMetric(ms(quantile(rp, 0.5)), "rp-p50-ms")
	b.ReportMetric(ms(quantile(rp, 0.99)), "rp-p99-ms")
	b.ReportMetric(ms(quantile(rp, 1)), "rp-max-ms")
	b.ReportMetric(rate, "writes/s")
}

// killResult is one power cut's outcome.
type killResult struct {
	run     time.Duration // the load before the kill
	loss    time.Duration // the kill minus the oldest lost acknowledged write; 0: nothing lost
	lost    int           // keys whose newest write acknowledged before the kill is missing
	checked int           // keys with a write acknowledged before the kill
	acked   int64
	failed  bool   // the restore failed
	note    string // what the tool restored (revisions)
}

// BenchmarkDeltaKillLoss plays ETCDGUARD_BENCH_KILLS power cuts per tool: a fresh cluster, the
// tool backing it up, a load of about 1,000 writes a second for about
// ETCDGUARD_BENCH_KILL_SECONDS (±25%, so that cuts land at different moments of each tool's
// cadences), then the tool and every member SIGKILLed at once and their data dirs moved away,
// and the tool's restore. The loss window is the kill time minus the oldest acknowledged write
// the restored cluster lacks (scratch.Load.Check; 0 when nothing is lost). The tools:
//   - etcdguard: the agent (delta log synced every 50 ms), then `etcdguard recover` of all
//     three members;
//   - gardener's etcd-backup-restore (etcdbrctl snapshot, Local store) with
//     --delta-snapshot-period=1s and with its default 20s, then `etcdbrctl restore` of one
//     member, started and read. Skipped, saying why, when etcdbrctl is not built (see
//     scripts/etcdbrctl).
func BenchmarkDeltaKillLoss(b *testing.B) {
	kills := benchEnvInt(b, "ETCDGUARD_BENCH_KILLS", 5)
	run := time.Duration(benchEnvInt(b, "ETCDGUARD_BENCH_KILL_SECONDS", 20)) * time.Second
	guard := buildEtcdguard(b, b.TempDir())
	results := map[string][]killResult{}
	var order []string
	contender := func(name string, once func(b *testing.B, dir string, run time.Duration) killResult) {
		order = append(order, name)
		b.Run(name, func(b *testing.B) {
			var rs []killResult
			for i := range kills {
				r := once(b, filepath.Join(b.TempDir(), fmt.Sprintf("kill-%d", i)), jitter(run))
				b.Logf("kill %d: after %s, %d ops acknowledged; %d of %d keys lost their newest acknowledged write; loss window %s; %s",
					i+1, r.run.Round(time.Millisecond), r.acked, r.lost, r.checked, r.loss.Round(time.Millisecond), r.note)
				rs = append(rs, r)
			}
			mean, worst := lossStats(rs)
			b.ReportMetric(mean.Seconds(), "loss-mean-s")
			b.ReportMetric(worst.Seconds(), "loss-max-s")
			results[name] = rs
		})
	}
	contender("etcdguard", func(b *testing.B, dir string, run time.Duration) killResult {
		return killEtcdguard(b, guard, dir, run)
	})
	for _, period := range []string{"1s", "20s"} {
		contender("etcdbrctl-delta-"+period, func(b *testing.B, dir string, run time.Duration) killResult {
			return killEtcdbrctl(b, etcdbrctl(b), dir, period, run)
		})
	}
	table := "\n| tool | kills | restores failed | loss window, mean | loss window, max |\n|---|---|---|---|---|"
	for _, name := range order {
		rs := results[name]
		if len(rs) == 0 {
			table += fmt.Sprintf("\n| %s | not run, skipped or failed (see above) | | | |", name)
			continue
		}
		mean, worst := lossStats(rs)
		failed := 0
		for _, r := range rs {
			if r.failed {
				failed++
			}
		}
		table += fmt.Sprintf("\n| %s | %d | %d | %.3f s | %.3f s |", name, len(rs), failed, mean.Seconds(), worst.Seconds())
	}
	fmt.Println(table) // a benchmark with sub-benchmarks has no log of its own
}

// killEtcdguard is one power cut with the agent running, and `etcdguard recover`.
func killEtcdguard(b *testing.B, guard, dir string, run time.Duration) killResult {
	b.Helper()
	minio := startBenchMinIO(b)
	p := newProtected(b, dir, minio, "kill", "", testcluster.Options{})
	a := startAgent(b, guard, p.cfg)
	cli := p.client(b)
	load := testcluster.StartLoad(cli, testcluster.LoadOptions{Workers: 48, Namespace: "kill", Seed: uint64(time.Now().UnixNano()), Rate: deltaLoadRate})
	time.Sleep(run)
	killAt := p.powerCut(b, a.cmd.Process)
	load.Halt()
	acked, _ := load.Acked()
	rec, took := p.recover(b, guard)
	state := keyspace(b, cli)
	lost := load.Check(state, killAt)
	r := killResult{run: run, lost: len(lost.Keys), checked: lost.Checked, acked: acked}
	if !lost.OldestAckAt.IsZero() {
		r.loss = killAt.Sub(lost.OldestAckAt)
	}
	src := rec.Plan.Source
	r.note = fmt.Sprintf("recover (%s) restored backup revision %d", took.Round(time.Millisecond), src.BackupRevision)
	if src.Delta != nil {
		r.note += fmt.Sprintf(" and replayed the delta log of target %s to revision %d", src.Delta.Target, src.Delta.UpTo)
	}
	p.close()
	return r
}

// BenchmarkAgentCost runs the same unlimited load (32 workers) for ETCDGUARD_BENCH_SECONDS on one
// cluster three times: without the agent, with it, and without it again (the agent stopped), and
// compares throughput and the p99 latency of the acknowledged ops with the agent against both
// runs without it together. The two runs without show how much the cluster drifts by itself
// (a bigger database, another process on the machine): a difference smaller than that drift is
// noise. The agent's CPU use during its run is logged: on a small machine it competes with the
// members for the same cores. The aim: under 5% difference. ETCDGUARD_BENCH_AGENT_YAML,
// settings of the agent: section one a line ("delta-sync-interval: 1s"), is added to the agent's
// config, to find which part of the agent a cost comes from.
func BenchmarkAgentCost(b *testing.B) {
	dir := b.TempDir()
	guard := buildEtcdguard(b, dir)
	minio := startBenchMinIO(b)
	var agentYAML string
	for _, l := range strings.Split(os.Getenv("ETCDGUARD_BENCH_AGENT_YAML"), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			agentYAML += "  " + l + "\n"
		}
	}
	p := newProtected(b, filepath.Join(dir, "env"), minio, "cost", agentYAML, testcluster.Options{})
	cli := p.client(b)
	d := benchSeconds(b)

	type result struct {
		ops     int
		elapsed time.Duration
		lat     []time.Duration
		failed  int64
	}
	phase := func(name string) result {
		load := testcluster.StartLoad(cli, testcluster.LoadOptions{Workers: 32, Namespace: name, Seed: 20})
		start := time.Now()
		time.Sleep(d)
		end := time.Now()
		load.Halt()
		_, failed := load.Acked()
		var lat []time.Duration
		for _, a := range load.Acks() {
			if a.At.Before(end) {
				lat = append(lat, a.Latency)
			}
		}
		return result{ops: len(lat), elapsed: end.Sub(start), lat: lat, failed: failed}
	}
	before := phase("without-1")
	a := startAgent(b, guard, p.cfg)
	cpu0, at0 := cpuTime(a.cmd.Process.Pid), time.Now()
	with := phase("with")
	agentCPU := (cpuTime(a.cmd.Process.Pid) - cpu0).Seconds() / time.Since(at0).Seconds()
	a.stop()
	after := phase("without-2")
	without := result{ops: before.ops + after.ops, elapsed: before.elapsed + after.elapsed,
		lat: append(slices.Clone(before.lat), after.lat...), failed: before.failed + after.failed}

	rate := func(r result) float64 { return float64(r.ops) / r.elapsed.Seconds() }
	pct := func(x, y float64) float64 { return (y - x) / x * 100 }
	table := "\n| run | throughput | p50 latency | p99 latency | failed ops |\n|---|---|---|---|---|"
	for _, r := range []struct {
		name string
		r    result
	}{{"without the agent, before", before}, {"with the agent", with}, {"without the agent, after", after}, {"without the agent, both runs", without}} {
		table += fmt.Sprintf("\n| %s | %.0f ops/s | %.1f ms | %.1f ms | %d |", r.name, rate(r.r), ms(quantile(r.r.lat, 0.5)), ms(quantile(r.r.lat, 0.99)), r.r.failed)
	}
	table += fmt.Sprintf("\n| with against without (both runs) | %+.1f%% | %+.1f%% | %+.1f%% | |",
		pct(rate(without), rate(with)), pct(ms(quantile(without.lat, 0.5)), ms(quantile(with.lat, 0.5))), pct(ms(quantile(without.lat, 0.99)), ms(quantile(with.lat, 0.99))))
	table += fmt.Sprintf("\n| drift: after against before, no agent | %+.1f%% | %+.1f%% | %+.1f%% | |",
		pct(rate(before), rate(after)), pct(ms(quantile(before.lat, 0.5)), ms(quantile(after.lat, 0.5))), pct(ms(quantile(before.lat, 0.99)), ms(quantile(after.lat, 0.99))))
	b.Logf("%s\n\nthe agent used %.2f CPU cores during its run; its config's agent: section added %q", table, agentCPU, agentYAML)
	b.ReportMetric(rate(without), "ops/s-without")
	b.ReportMetric(rate(with), "ops/s-with")
	b.ReportMetric(pct(rate(without), rate(with)), "throughput-diff-%")
	b.ReportMetric(pct(rate(before), rate(after)), "throughput-drift-%")
	b.ReportMetric(ms(quantile(without.lat, 0.99)), "p99-ms-without")
	b.ReportMetric(ms(quantile(with.lat, 0.99)), "p99-ms-with")
	b.ReportMetric(pct(ms(quantile(without.lat, 0.99)), ms(quantile(with.lat, 0.99))), "p99-diff-%")
	b.ReportMetric(agentCPU, "agent-cores")
}

// BenchmarkAgentMemory: a burst of about 5,000 writes a second of 10 KiB values (txns of 10
// puts, 500 a second) for each length in ETCDGUARD_BENCH_BURSTS, each on a fresh cluster with the
// agent running; the agent's RssAnon is sampled every 50 ms. Every 10 s the burst writer compacts
// etcd to the revision the agent has made durable (as kube-apiserver compacts, though every 5
// minutes), so that the database stays within its quota. After the burst the benchmark waits (up
// to 120 s) for the agent to make the burst's last write durable. Reported: the peak per burst
// length, and the peak of each 10 s window, from the burst's start to the end of that wait,
// beside the agent's recovery point in that window (how far behind the writes it is: what it
// has received and not yet written is in its memory).
// The aim: under 100 MiB and not growing with the burst's length.
func BenchmarkAgentMemory(b *testing.B) {
	bursts := benchBursts(b)
	guard := buildEtcdguard(b, b.TempDir())
	minio := startBenchMinIO(b)
	values := randomValues(2048, 10<<10)
	table := "\n| burst | writes/s reached | agent RssAnon idle | peak | peak per 10 s window (MiB) | recovery point, worst per 10 s window (s) | catch-up after the burst |\n|---|---|---|---|---|---|---|"
	for _, d := range bursts {
		b.Run("burst-"+d.String(), func(b *testing.B) {
			p := newProtected(b, b.TempDir(), minio, "mem-"+d.String(), "", testcluster.Options{QuotaBackendBytes: 8 << 30})
			a := startAgent(b, guard, p.cfg)
			cli := p.client(b)
			pid := a.cmd.Process.Pid
			idle := rssAnon(pid)
			stopRSS := rssWatch(pid)
			stopLag := lagWatch(a)
			w := startBurst(cli, a, values, 500, 10)
			time.Sleep(d)
			n, failed, last := w.halt()
			reached := float64(n) / d.Seconds()
			// How long the agent takes to make the burst's last write durable.
			caught := time.Now()
			hc := &http.Client{Timeout: time.Second}
			catchUp := "not within 120 s"
			for time.Since(caught) < 120*time.Second {
				if st, err := a.status(b.Context(), hc); err == nil && st.Delta != nil && st.Delta.DurableRevision >= last {
					catchUp = time.Since(caught).Round(10 * time.Millisecond).String()
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			peak, windows := stopRSS()
			lags := stopLag(w.ackLog())
			var ws, ls string
			for i, v := range windows {
				if i > 0 {
					ws += ", "
				}
				ws += fmt.Sprintf("%.0f", mib(v))
			}
			for i, v := range lags {
				if i > 0 {
					ls += ", "
				}
				ls += fmt.Sprintf("%.1f", v.Seconds())
			}
			b.Logf("burst of %s: %d writes acknowledged (%.0f a second), %d txns failed; the agent's RssAnon: %.1f MiB idle, peak %.1f MiB; per 10 s window: %s MiB; the agent's recovery point, worst per 10 s window: %s s; durable to the last write %s after the burst",
				d, n, reached, failed, mib(idle), mib(peak), ws, ls, catchUp)
			table += fmt.Sprintf("\n| %s | %.0f | %.1f MiB | %.1f MiB | %s | %s | %s |", d, reached, mib(idle), mib(peak), ws, ls, catchUp)
			b.ReportMetric(mib(peak), "peak-RssAnon-MiB")
			b.ReportMetric(reached, "writes/s")
		})
	}
	fmt.Println(table) // a benchmark with sub-benchmarks has no log of its own
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// benchBursts are the burst lengths of BenchmarkAgentMemory: ETCDGUARD_BENCH_BURSTS, a
// comma-separated list of durations, default "30s,90s".
func benchBursts(b *testing.B) []time.Duration {
	b.Helper()
	v := os.Getenv("ETCDGUARD_BENCH_BURSTS")
	if v == "" {
		v = "30s,90s"
	}
	var out []time.Duration
	for _, f := range strings.Split(v, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(f))
		if err != nil || d <= 0 {
			b.Fatalf("ETCDGUARD_BENCH_BURSTS=%q: want durations such as 30s,90s", v)
		}
		out = append(out, d)
	}
	return out
}
