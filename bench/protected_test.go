package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdguard/etcdguard/internal/agent"
	"github.com/etcdguard/etcdguard/internal/testcluster"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

// This file holds what the continuous-protection benchmarks (continuous_test.go) share: a
// 3-member TLS cluster that `etcdguard recover` can restore, `etcdguard agent` as a process, the
// power cut, and reading back what a cluster holds.

// benchEnvInt reads a positive integer setting of the benchmarks from the environment.
func benchEnvInt(b *testing.B, name string, def int) int {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive whole number", name, v)
	}
	return n
}

// benchSeconds is how long a measured load runs: ETCDGUARD_BENCH_SECONDS, default 60.
func benchSeconds(b *testing.B) time.Duration {
	return time.Duration(benchEnvInt(b, "ETCDGUARD_BENCH_SECONDS", 60)) * time.Second
}

// buildEtcdguard builds the etcdguard binary into dir.
func buildEtcdguard(b *testing.B, dir string) string {
	b.Helper()
	bin := filepath.Join(dir, "etcdguard")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/etcdguard").CombinedOutput(); err != nil {
		b.Fatalf("build etcdguard: %v\n%s", err, out)
	}
	return bin
}

// startBenchMinIO starts MinIO with the bucket "bench" and points the AWS variables at it.
func startBenchMinIO(b *testing.B) *testenv.MinIOServer {
	b.Helper()
	m := testenv.StartMinIO(b)
	m.CreateBucket(b, "bench")
	m.SetAWSEnv(b)
	return m
}

// protected is a 3-member TLS etcd 3.6 cluster described to `etcdguard recover` (members started
// and stopped by shell commands, as an operator's config would), and the config file the agent
// and recover share.
type protected struct {
	dir, repo, state, cfg string
	c                     *testcluster.Cluster
	// members are recover's --member values; kill kills the members their start commands
	// started.
	members []string
	kill    func()
}

// newProtected starts the cluster in dir and writes the config: a local target, MinIO under
// prefix when minio is given, a yearly schedule (the agent takes only its start-up snapshot),
// and agentYAML appended to the agent: section (indented by two spaces, one setting a line).
func newProtected(b *testing.B, dir string, minio *testenv.MinIOServer, prefix, agentYAML string, opts testcluster.Options) *protected {
	b.Helper()
	opts.Size, opts.TLS, opts.Dir = 3, true, filepath.Join(dir, "cluster")
	opts.Command = []string{testenv.Etcd(b, "3.6", "etcd")}
	c, err := testcluster.Start(b.Context(), opts)
	if err != nil {
		b.Fatal(err)
	}
	p := &protected{dir: dir, repo: filepath.Join(dir, "repo"), state: filepath.Join(dir, "state"), c: c}
	b.Cleanup(func() { p.close() })
	p.members, p.kill = testcluster.ShellMembers(c, dir)
	targets := fmt.Sprintf("  - name: local\n    url: file://%s\n", p.repo)
	if minio != nil {
		targets += fmt.Sprintf("  - name: s3\n    url: %q\n", "s3://bench/"+prefix+"?endpoint="+minio.Endpoint+"&region=us-east-1")
	}
	if agentYAML != "" && !strings.HasSuffix(agentYAML, "\n") {
		agentYAML += "\n"
	}
	cfg := fmt.Sprintf("endpoints: [%s]\ncacert: %s\ncert: %s\nkey: %s\nwork-dir: %s\ntargets:\n%sagent:\n  snapshot-schedule: \"0 0 1 1 *\"\n%s",
		strings.Join(c.Endpoints(), ", "), c.CAFile, c.ClientCertFile, c.ClientKeyFile, dir, targets, agentYAML)
	p.cfg = filepath.Join(dir, "etcdguard.yaml")
	if err := os.WriteFile(p.cfg, []byte(cfg), 0o600); err != nil {
		b.Fatal(err)
	}
	return p
}

// close stops the cluster and the members recover started.
func (p *protected) close() {
	_ = p.c.Close()
	if p.kill != nil {
		p.kill()
	}
}

// client returns a client of the cluster (every endpoint), closed when the benchmark ends.
func (p *protected) client(b *testing.B) *clientv3.Client {
	b.Helper()
	cli, err := p.c.Client(b.Context())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cli.Close() })
	return cli
}

// powerCut SIGKILLs the given processes and every member at the same moment, and returns that
// moment. The members' data dirs are then moved away: no member's data is usable. A SIGKILL
// keeps what was written to the page cache, which a real power cut loses; both tools fsync what
// they count on, so the kill is the closest a benchmark gets without cutting the machine's power.
func (p *protected) powerCut(b *testing.B, procs ...*os.Process) time.Time {
	b.Helper()
	at := time.Now()
	var wg sync.WaitGroup
	for _, pr := range procs {
		wg.Go(func() { _ = pr.Signal(syscall.SIGKILL) })
	}
	for _, m := range p.c.Members() {
		wg.Go(func() { _ = m.Kill() })
	}
	wg.Wait()
	for _, m := range p.c.Members() {
		if err := os.Rename(m.DataDir, m.DataDir+".lost"); err != nil {
			b.Fatal(err)
		}
	}
	return at
}

// agentProc is `etcdguard agent` running as its own process.
type agentProc struct {
	cmd     *exec.Cmd
	url     string
	logFile string
	exited  chan struct{}
}

// startAgent runs `etcdguard agent` with cfg and waits until it is ready: its start-up full
// snapshot taken and verified, and the delta chain from it running.
func startAgent(b *testing.B, guard, cfg string) *agentProc {
	b.Helper()
	ports, err := testcluster.FreePorts(1)
	if err != nil {
		b.Fatal(err)
	}
	listen := fmt.Sprintf("127.0.0.1:%d", ports[0])
	a := &agentProc{url: "http://" + listen, logFile: filepath.Join(filepath.Dir(cfg), "agent.log"), exited: make(chan struct{})}
	logf, err := os.OpenFile(a.logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	defer logf.Close()
	a.cmd = exec.Command(guard, "agent", "--config", cfg, "--listen-address", listen)
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := a.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	go func() { _ = a.cmd.Wait(); close(a.exited) }()
	b.Cleanup(func() { _ = a.cmd.Process.Kill(); <-a.exited })
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := http.Get(a.url + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return a
			}
		}
		select {
		case <-a.exited:
			b.Fatalf("the agent exited before it was ready:\n%s", a.logTail())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.Fatalf("the agent is not ready after 90 s:\n%s", a.logTail())
		}
	}
}

// stop stops the agent as systemd would (SIGTERM: it seals its open segment and exits), and
// kills it if it has not exited 30 s later.
func (a *agentProc) stop() {
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.exited:
	case <-time.After(30 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.exited
	}
}

// status reads the agent's /-/status.
func (a *agentProc) status(ctx context.Context, hc *http.Client) (agent.Status, error) {
	var st agent.Status
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.url+"/-/status", nil)
	if err != nil {
		return st, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET /-/status: %s", resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// durableSample is the agent's newest durable revision as /-/status said it at a moment.
type durableSample struct {
	at      time.Time
	durable int64
}

// sampleDurable reads the agent's /-/status every interval in the background until the returned
// func is called, which gives the samples and how many reads failed.
func sampleDurable(a *agentProc, every time.Duration) func() ([]durableSample, int) {
	var samples []durableSample
	failures := 0
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		hc := &http.Client{Timeout: time.Second}
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			st, err := a.status(ctx, hc)
			at := time.Now()
			if err != nil || st.Delta == nil {
				if ctx.Err() == nil {
					failures++
				}
				continue
			}
			samples = append(samples, durableSample{at: at, durable: st.Delta.DurableRevision})
		}
	}()
	return func() ([]durableSample, int) {
		cancel()
		<-done
		return samples, failures
	}
}

// logTail is the end of the agent's log, for failure messages.
func (a *agentProc) logTail() string {
	out, _ := os.ReadFile(a.logFile)
	if len(out) > 8<<10 {
		out = out[len(out)-8<<10:]
	}
	return string(out)
}

// recoverResult is what the benchmarks read of `etcdguard recover -o json`.
type recoverResult struct {
	Plan struct {
		Source struct {
			Kind           string `json:"kind"`
			BackupRevision int64  `json:"backup_revision"`
			Delta          *struct {
				Target string `json:"target"`
				UpTo   int64  `json:"up_to"`
			} `json:"delta"`
		} `json:"source"`
	} `json:"plan"`
}

// recover runs `etcdguard recover` on every member, restoring the newest backup and replaying
// its delta log, and returns its plan and how long it took.
func (p *protected) recover(b *testing.B, guard string) (recoverResult, time.Duration) {
	b.Helper()
	args := []string{"recover", "--yes", "-o", "json", "--config", p.cfg, "--state-dir", p.state}
	for _, m := range p.members {
		args = append(args, "--member", m)
	}
	cmd := exec.Command(guard, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	out, err := cmd.Output()
	took := time.Since(start)
	if err != nil {
		b.Fatalf("etcdguard recover: %v\n%s\n%s", err, out, stderr.String())
	}
	var r recoverResult
	if err := json.Unmarshal(out, &r); err != nil {
		b.Fatalf("etcdguard recover -o json: %v\n%s", err, out)
	}
	return r, took
}

// keyspace reads every key under /registry/ through cli.
func keyspace(b *testing.B, cli *clientv3.Client) map[string][]byte {
	b.Helper()
	var resp *clientv3.GetResponse
	var err error
	for range 60 { // a member recover just started may not serve at once
		ctx, cancel := context.WithTimeout(b.Context(), 5*time.Second)
		resp, err = cli.Get(ctx, "/registry/", clientv3.WithPrefix())
		cancel()
		if err == nil {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err != nil {
		b.Fatalf("read the keyspace: %v", err)
	}
	out := make(map[string][]byte, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = kv.Value
	}
	return out
}

// quantile returns the q-quantile (0 to 1) of ds, nearest rank; 0 for none.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// ms is d in milliseconds, for ReportMetric.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// jitter returns d scaled by a random factor between 0.75 and 1.25, so that repeated kills land
// at different moments of a tool's own cadences (syncs, seals, delta snapshot periods).
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.75 + rand.Float64()/2))
}
