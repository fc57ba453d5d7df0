package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdguard/etcdguard/internal/testcluster"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

const (
	rulesFile     = "../../deploy/prometheus/etcdguard-rules.yml"
	rulesTestFile = "etcdguard-rules_test.yml"
	dashboardFile = "../../deploy/grafana/etcdguard-dashboard.json"
)

// TestAlertRules checks the shipped alert rules with Prometheus' own tool: they load, and each
// alert fires on its recorded series and stays quiet on the others (etcdguard-rules_test.yml).
func TestAlertRules(t *testing.T) {
	promtool := testenv.Promtool(t)
	out, err := exec.Command(promtool, "check", "rules", rulesFile).CombinedOutput()
	require.NoError(t, err, "promtool check rules:\n%s", out)
	cmd := exec.Command(promtool, "test", "rules", rulesTestFile)
	cmd.Dir = filepath.Dir(rulesFile)
	out, err = cmd.CombinedOutput()
	require.NoError(t, err, "promtool test rules:\n%s", out)
	require.Contains(t, string(out), "SUCCESS")

	// Every alert of the rules file has a test that expects it to fire.
	rules, err := os.ReadFile(rulesFile)
	require.NoError(t, err)
	tests, err := os.ReadFile(filepath.Join(filepath.Dir(rulesFile), rulesTestFile))
	require.NoError(t, err)
	alerts := regexp.MustCompile(`(?m)^\s*- alert: (\w+)`).FindAllStringSubmatch(string(rules), -1)
	require.GreaterOrEqual(t, len(alerts), 14)
	for _, a := range alerts {
		fires := regexp.MustCompile(`alertname: ` + a[1] + `\n\s+exp_alerts:\n\s+- exp_labels`)
		quiet := regexp.MustCompile(`alertname: ` + a[1] + `, exp_alerts: \[\]`)
		require.True(t, fires.Match(tests), "no test in %s expects %s to fire", rulesTestFile, a[1])
		require.True(t, quiet.Match(tests), "no test in %s expects %s to stay quiet", rulesTestFile, a[1])
	}
}

// dashboardExprs returns every PromQL expression of the shipped Grafana dashboard.
func dashboardExprs(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(dashboardFile)
	require.NoError(t, err)
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(data, &d))
	var exprs []string
	for _, p := range d.Panels {
		require.NotEmpty(t, p.Targets, "panel %q has no query", p.Title)
		for _, q := range p.Targets {
			require.NotEmpty(t, q.Expr, "panel %q has an empty query", p.Title)
			exprs = append(exprs, q.Expr)
		}
	}
	return exprs
}

// checkPromQL parses expressions with Prometheus' own parser: promtool checks a rules file
// that records each of them.
func checkPromQL(t *testing.T, exprs []string) {
	t.Helper()
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, e := range exprs {
		q, err := json.Marshal(e) // a JSON string is a YAML string
		require.NoError(t, err)
		fmt.Fprintf(&b, "      - record: dashboard:expr%d\n        expr: %s\n", i, q)
	}
	f := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	require.NoError(t, os.WriteFile(f, []byte(b.String()), 0o600))
	out, err := exec.Command(testenv.Promtool(t), "check", "rules", f).CombinedOutput()
	require.NoError(t, err, "a dashboard query does not parse as PromQL:\n%s", out)
}

var (
	promqlStrings  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promqlMatchers = regexp.MustCompile(`\{[^}]*\}`)
	promqlRanges   = regexp.MustCompile(`\[[^\]]*\]`)
	promqlGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promqlIdent    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*(\s*\()?`)
	promqlKeywords = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true,
		"group_right": true, "bool": true, "and": true, "or": true, "unless": true, "offset": true, "inf": true, "nan": true}
)

// metricNames returns the metric names a PromQL expression reads: its identifiers that are not
// functions, aggregations, keywords, label names or parts of strings and durations.
func metricNames(expr string) []string {
	e := promqlStrings.ReplaceAllString(expr, `""`)
	e = promqlMatchers.ReplaceAllString(e, "")
	e = promqlRanges.ReplaceAllString(e, "")
	e = promqlGrouping.ReplaceAllString(e, "")
	var names []string
	for _, m := range promqlIdent.FindAllStringSubmatch(e, -1) {
		name := strings.TrimRight(strings.TrimSuffix(strings.TrimSpace(m[0]), "("), " ")
		if m[1] != "" || promqlKeywords[strings.ToLower(name)] {
			continue
		}
		names = append(names, name)
	}
	return names
}

func TestMetricNames(t *testing.T) {
	for expr, want := range map[string][]string{
		`time() - max by (target) (etcdguard_last_full_snapshot_timestamp_seconds{offline="false"}) > 3600`:       {"etcdguard_last_full_snapshot_timestamp_seconds"},
		`histogram_quantile(0.99, sum by (instance, le) (rate(etcd_disk_wal_fsync_duration_seconds_bucket[5m])))`: {"etcd_disk_wal_fsync_duration_seconds_bucket"},
		`etcd_mvcc_db_total_size_in_bytes / etcd_server_quota_backend_bytes`:                                      {"etcd_mvcc_db_total_size_in_bytes", "etcd_server_quota_backend_bytes"},
		`(sum(a_b) < 1) or absent(c == 1) and on() up{job="x y"}`:                                                 {"a_b", "c", "up"},
	} {
		require.Equal(t, want, metricNames(expr), expr)
	}
}

// scrape reads a /metrics page: the series' names, and each full series line's value.
func scrape(t *testing.T, url string) (names map[string]bool, series map[string]string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, url)
	names, series = map[string]bool{}, map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		s := line[:i]
		series[s] = line[i+1:]
		names[strings.SplitN(s, "{", 2)[0]] = true
	}
	require.NoError(t, sc.Err())
	return names, series
}

// seriesWith returns the series of a scrape whose text starts with name and holds every label.
func seriesWith(series map[string]string, name string, labels ...string) []string {
	var out []string
	for s := range series {
		if strings.SplitN(s, "{", 2)[0] != name {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(s, l)
		}
		if ok {
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

// TestMonitoring runs the agent against a real 3-member TLS etcd 3.6 cluster with a local target
// and MinIO, and reads its /metrics as Prometheus would: every metric the alert rules and the
// dashboard use is served by the agent or by etcd, with the values the situation gives, and
// every dashboard query parses. Then a real Prometheus server scrapes the agent and etcd with the
// shipped rules: none of the agent's failure alerts fires while backups work; the S3 bucket is
// removed and EtcdguardSnapshotsFailing fires.
func TestMonitoring(t *testing.T) {
	e := newRecoverEnv(t, "3.6")
	m, s3URL := startS3(t)
	cfg := writeAgentConfig(t, e, s3URL, "127.0.0.1:0", "*/3 * * * * *")
	b, err := os.ReadFile(cfg)
	require.NoError(t, err)
	tape := filepath.Join(e.dir, "tape")
	require.NoError(t, os.Mkdir(tape, 0o700))
	b = []byte(strings.Replace(string(b), "targets:\n", fmt.Sprintf("targets:\n  - name: tape\n    url: file://%s\n    offline: true\n    media: tape\n", tape), 1))
	b = []byte(strings.Replace(string(b), "file://"+e.repo+"\n", "file://"+e.repo+"\n    keep: {within: 30d}\n", 1))
	b = append(b, []byte("  policy-check-interval: 2s\n  delta-seal-interval: 1s\n  drill-schedule: \"*/5 * * * * *\"\n  drill-target: s3\nstate-dir: "+e.state+"\n")...)
	require.NoError(t, os.WriteFile(cfg, b, 0o600))
	a := startAgent(t, cfg)
	// An idle cluster: nothing to lose.
	require.Eventually(t, func() bool {
		_, idle := scrape(t, a.url+"/metrics")
		return idle["etcdguard_recovery_point_seconds"] == "0"
	}, 10*time.Second, 100*time.Millisecond, "the recovery point of an idle cluster is 0")
	cli, err := e.c.Client(t.Context())
	require.NoError(t, err)
	defer cli.Close()
	writes := make(chan struct{})
	go func() { // a trickle of writes, for the delta log to ship
		defer close(writes)
		for i := 0; t.Context().Err() == nil; i++ {
			_, _ = cli.Put(t.Context(), fmt.Sprintf("/registry/configmaps/default/m%d", i%50), "v")
			time.Sleep(100 * time.Millisecond)
		}
	}()
	t.Cleanup(func() { <-writes })

	var series map[string]string
	var agentNames map[string]bool
	require.Eventually(t, func() bool {
		agentNames, series = scrape(t, a.url+"/metrics")
		return len(seriesWith(series, "etcdguard_last_full_snapshot_timestamp_seconds", `target="s3"`)) == 1 &&
			len(seriesWith(series, "etcdguard_last_full_snapshot_timestamp_seconds", `target="tape"`, `offline="true"`)) == 1 &&
			len(seriesWith(series, "etcdguard_last_delta_timestamp_seconds", `target="s3"`)) == 1 &&
			len(seriesWith(series, "etcdguard_policy_compliant")) == 3 &&
			series[`etcdguard_drill_success{target="s3"}`] == "1"
	}, 60*time.Second, 200*time.Millisecond, "the agent exports its backups in all targets, the shipped delta log, the 3-2-1 check and a passed drill: %v",
		func() []string { return slices.Sorted(maps.Keys(series)) })

	value := func(name string, labels ...string) string {
		t.Helper()
		ss := seriesWith(series, name, labels...)
		require.Len(t, ss, 1, "%s%v in %v", name, labels, ss)
		return series[ss[0]]
	}
	require.Equal(t, "1", value("etcdguard_ready"))
	require.Equal(t, "1", value("etcdguard_delta_writer"))
	require.Equal(t, "0", value("etcdguard_snapshot_failures_total", `reason="partial"`))
	require.Len(t, seriesWith(series, "etcdguard_snapshot_failures_total"), 8, "every reason is exported from the start")
	require.NotEmpty(t, value("etcdguard_last_full_snapshot_timestamp_seconds", `target="local"`, `offline="false"`))
	rpo, err := strconv.ParseFloat(value("etcdguard_recovery_point_seconds"), 64)
	require.NoError(t, err)
	require.Less(t, rpo, 5.0, "a trickle of writes: the delta log keeps up")
	require.Len(t, seriesWith(series, "etcdguard_delta_lag_revisions", `target="local"`), 1)
	require.Len(t, seriesWith(series, "etcdguard_delta_lag_revisions", `target="s3"`), 1)
	// Three targets on three media, one offline: 3-2-1.
	for _, rule := range []string{"copies", "media", "offline"} {
		require.Equal(t, "1", value("etcdguard_policy_compliant", `rule="`+rule+`"`), rule)
	}
	require.NotEmpty(t, value("etcdguard_offline_copy_age_seconds"))
	require.Equal(t, "0", value("etcdguard_retention_removed_total", `target="local"`), "declared for the target with a keep: policy")
	require.Empty(t, seriesWith(series, "etcdguard_retention_removed_total", `target="s3"`), "s3 has no keep: policy")
	require.Len(t, seriesWith(series, "etcdguard_certificate_expiry_timestamp_seconds", `role="ca"`), 1)
	require.Len(t, seriesWith(series, "etcdguard_certificate_expiry_timestamp_seconds", `role="client"`), 1)
	for s := range series {
		require.NotContains(t, s, "minioadmin", "no credential in a label")
	}

	// The dashboard: every query parses, and reads only metrics the agent or etcd export.
	live := maps.Clone(agentNames)
	for _, mem := range e.c.Members() {
		names, _ := scrape(t, mem.MetricsURL+"/metrics")
		for n := range names {
			live[n] = true
		}
	}
	exprs := dashboardExprs(t)
	checkPromQL(t, exprs)
	rules, err := os.ReadFile(rulesFile)
	require.NoError(t, err)
	for _, m := range regexp.MustCompile(`(?m)^\s+expr: (.+)$`).FindAllStringSubmatch(string(rules), -1) {
		exprs = append(exprs, m[1])
	}
	for _, expr := range exprs {
		for _, n := range metricNames(expr) {
			if n == "up" {
				continue // Prometheus' own
			}
			require.True(t, live[n], "%s (in %q) is exported by neither the agent nor etcd", n, expr)
		}
	}

	// A real Prometheus with the shipped rules.
	prom := startPrometheus(t, a.url, e.c)
	require.Eventually(t, func() bool { return prom.targetsUp() == 1+len(e.c.Members()) }, 30*time.Second, 200*time.Millisecond)
	time.Sleep(8 * time.Second) // several scrapes and rule evaluations while backups work
	for _, quiet := range []string{"EtcdguardSnapshotsFailing", "EtcdguardBackupTooOld", "EtcdguardDeltaWriterAbsent", "EtcdguardRecoveryPointAboveTarget", "EtcdMemberNoLeader"} {
		require.Empty(t, prom.alerts(quiet), "%s is not pending or firing while backups work", quiet)
	}
	require.NoError(t, m.Client(t).RemoveBucketWithOptions(t.Context(), "etcd-backups", minio.RemoveBucketOptions{ForceDelete: true}))
	require.Eventually(t, func() bool { return slices.Contains(prom.alerts("EtcdguardSnapshotsFailing"), "firing") },
		60*time.Second, 500*time.Millisecond, "EtcdguardSnapshotsFailing fires once the S3 target is gone")
	require.Contains(t, a.out.String(), "scheduled snapshot stored in some targets only")
}

// promServer is a real Prometheus server scraping the agent and etcd every second.
type promServer struct {
	t   *testing.T
	url string
}

func startPrometheus(t *testing.T, agentURL string, c *testcluster.Cluster) *promServer {
	t.Helper()
	dir := t.TempDir()
	rules, err := filepath.Abs(rulesFile)
	require.NoError(t, err)
	var etcdTargets []string
	for _, m := range c.Members() {
		etcdTargets = append(etcdTargets, fmt.Sprintf("%q", strings.TrimPrefix(m.MetricsURL, "http://")))
	}
	cfg := fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [%q]
scrape_configs:
  - job_name: etcdguard
    static_configs: [{targets: [%q]}]
  - job_name: etcd
    static_configs: [{targets: [%s]}]
`, rules, strings.TrimPrefix(agentURL, "http://"), strings.Join(etcdTargets, ", "))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600))
	ports, err := testcluster.FreePorts(1)
	require.NoError(t, err)
	p := &promServer{t: t, url: fmt.Sprintf("http://127.0.0.1:%d", ports[0])}
	log, err := os.Create(filepath.Join(dir, "prometheus.log"))
	require.NoError(t, err)
	cmd := exec.Command(testenv.Prometheus(t), "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), fmt.Sprintf("--web.listen-address=127.0.0.1:%d", ports[0]))
	cmd.Stdout, cmd.Stderr = log, log
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			out, _ := os.ReadFile(log.Name())
			t.Logf("prometheus log:\n%s", tail(string(out), 4000))
		}
	})
	require.Eventually(t, func() bool {
		resp, err := http.Get(p.url + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 30*time.Second, 100*time.Millisecond, "prometheus starts")
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func (p *promServer) get(path string, v any) {
	p.t.Helper()
	resp, err := http.Get(p.url + path)
	require.NoError(p.t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(p.t, err)
	require.Equal(p.t, http.StatusOK, resp.StatusCode, string(body))
	require.NoError(p.t, json.Unmarshal(body, v))
}

// targetsUp counts the scrape targets Prometheus sees up.
func (p *promServer) targetsUp() int {
	var r struct {
		Data struct {
			ActiveTargets []struct {
				Health string `json:"health"`
			} `json:"activeTargets"`
		} `json:"data"`
	}
	p.get("/api/v1/targets", &r)
	n := 0
	for _, tg := range r.Data.ActiveTargets {
		if tg.Health == "up" {
			n++
		}
	}
	return n
}

// alerts returns the states (pending, firing) of the named alert's instances.
func (p *promServer) alerts(name string) []string {
	var r struct {
		Data struct {
			Alerts []struct {
				Labels map[string]string `json:"labels"`
				State  string            `json:"state"`
			} `json:"alerts"`
		} `json:"data"`
	}
	p.get("/api/v1/alerts", &r)
	var states []string
	for _, a := range r.Data.Alerts {
		if a.Labels["alertname"] == name {
			states = append(states, a.State)
		}
	}
	return states
}

// TestDrillFailureAlerts: the agent drills its MinIO copy on a schedule of seconds; a drill of
// the real backup and delta log passes; then one byte of the backup's data object in MinIO is
// flipped: the next drill fails (reason corrupt), etcdguard_drill_success goes to 0, a real
// Prometheus fires EtcdguardDrillFailed, and the live cluster is untouched (its revision and
// every key as before; the drill has no endpoint of it).
func TestDrillFailureAlerts(t *testing.T) {
	e := newRecoverEnv(t, "3.6")
	loadData(t, e.c, 200, 512)
	m, s3URL := startS3(t)
	cfg := writeAgentConfig(t, e, s3URL, "127.0.0.1:0", "0 0 1 1 *")
	b, err := os.ReadFile(cfg)
	require.NoError(t, err)
	b = append(b, []byte("  delta-seal-interval: 1s\n  drill-schedule: \"*/4 * * * * *\"\n  drill-target: s3\nstate-dir: "+e.state+"\n")...)
	require.NoError(t, os.WriteFile(cfg, b, 0o600))
	a := startAgent(t, cfg)

	cli, err := e.c.Client(t.Context())
	require.NoError(t, err)
	defer cli.Close()
	for i := range 20 { // a delta log for the drill to replay
		_, err := cli.Put(t.Context(), fmt.Sprintf("/registry/configmaps/default/d%d", i), "v")
		require.NoError(t, err)
	}
	var series map[string]string
	require.Eventually(t, func() bool {
		_, series = scrape(t, a.url+"/metrics")
		return series[`etcdguard_drill_success{target="s3"}`] == "1"
	}, 90*time.Second, 250*time.Millisecond, "a drill of the MinIO copy passes")
	require.NotEmpty(t, series[`etcdguard_drill_recovery_seconds{target="s3"}`])
	require.Equal(t, "0", series[`etcdguard_drill_failures_total{reason="corrupt"}`])

	before, err := cli.Get(t.Context(), "", clientv3.WithPrefix())
	require.NoError(t, err)

	// Flip a byte in the middle of the backup's data object in MinIO.
	mc := m.Client(t)
	var data string
	for obj := range mc.ListObjects(t.Context(), "etcd-backups", minio.ListObjectsOptions{Prefix: "prod/snapshots/", Recursive: true}) {
		require.NoError(t, obj.Err)
		if strings.Contains(obj.Key, "/snapshot.db") {
			data = obj.Key
		}
	}
	require.NotEmpty(t, data, "the backup's data object in MinIO")
	o, err := mc.GetObject(t.Context(), "etcd-backups", data, minio.GetObjectOptions{})
	require.NoError(t, err)
	body, err := io.ReadAll(o)
	require.NoError(t, err)
	body[len(body)/2] ^= 0xff
	_, err = mc.PutObject(t.Context(), "etcd-backups", data, bytes.NewReader(body), int64(len(body)), minio.PutObjectOptions{})
	require.NoError(t, err)

	prom := startPrometheus(t, a.url, e.c)
	require.Eventually(t, func() bool {
		_, series = scrape(t, a.url+"/metrics")
		return series[`etcdguard_drill_success{target="s3"}`] == "0"
	}, 60*time.Second, 250*time.Millisecond, "the drill of the corrupted copy fails")
	require.Equal(t, "1", series[`etcdguard_drill_failures_total{reason="corrupt"}`], "%v", seriesWith(series, "etcdguard_drill_failures_total"))
	require.Contains(t, a.out.String(), "restore drill FAILED")
	require.Eventually(t, func() bool { return slices.Contains(prom.alerts("EtcdguardDrillFailed"), "firing") },
		30*time.Second, 500*time.Millisecond, "EtcdguardDrillFailed fires")

	after, err := cli.Get(t.Context(), "", clientv3.WithPrefix())
	require.NoError(t, err)
	require.Equal(t, before.Header.Revision, after.Header.Revision, "the drill wrote nothing to the live cluster")
	require.Equal(t, len(before.Kvs), len(after.Kvs))
	for i := range before.Kvs {
		require.Equal(t, before.Kvs[i].Key, after.Kvs[i].Key)
		require.Equal(t, before.Kvs[i].ModRevision, after.Kvs[i].ModRevision)
	}
}

// TestAgentPrunes: the agent takes a snapshot every 2 s into a local target whose keep: policy
// keeps the last 3, and prunes every 3 s: old backups and their chains go, counted in
// etcdguard_retention_removed_total; the target never holds many more than 3 plus what came
// since the last prune, and everything left verifies.
func TestAgentPrunes(t *testing.T) {
	e := newRecoverEnv(t, "3.6")
	cfg := writeAgentConfig(t, e, "", "127.0.0.1:0", "*/2 * * * * *")
	b, err := os.ReadFile(cfg)
	require.NoError(t, err)
	b = []byte(strings.Replace(string(b), "file://"+e.repo+"\n", "file://"+e.repo+"\n    keep: {last: 3}\n", 1))
	b = append(b, []byte("  prune-schedule: \"*/3 * * * * *\"\n  delta-seal-interval: 1s\n")...)
	require.NoError(t, os.WriteFile(cfg, b, 0o600))
	a := startAgent(t, cfg)

	var series map[string]string
	require.Eventually(t, func() bool {
		_, series = scrape(t, a.url+"/metrics")
		n, _ := strconv.Atoi(series[`etcdguard_retention_removed_total{target="local"}`])
		return n >= 4
	}, 60*time.Second, 250*time.Millisecond, "the agent prunes the old backups")
	require.NotEmpty(t, seriesWith(series, "etcdguard_retention_last_run_timestamp_seconds", `target="local"`, `state="pruned"`))
	require.Contains(t, a.out.String(), "scheduled prune done")

	// Stop the agent, so that nothing is added or removed, then check what is left.
	require.NoError(t, a.cmd.Process.Signal(syscall.SIGTERM))
	<-a.exited
	out := list(t, "--target", "file://"+e.repo)
	require.LessOrEqual(t, len(out.Backups), 3+2, "the last 3, and at most what came after the last prune")
	require.GreaterOrEqual(t, len(out.Backups), 3)
	r := etcdguard(t, "snapshot", "verify", "--all", "--target", "file://"+e.repo)
	require.Equal(t, 0, r.code, r.stderr)
	chains, err := os.ReadDir(filepath.Join(e.repo, "deltas"))
	require.NoError(t, err)
	require.LessOrEqual(t, len(chains), len(out.Backups), "the removed backups' chains went with them")
}
