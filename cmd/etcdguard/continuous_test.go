package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdguard/etcdguard/internal/deltalog"
	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/snapshot"
	"github.com/etcdguard/etcdguard/internal/testcluster"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

// agentProc is `etcdguard agent` running as its own process.
type agentProc struct {
	cmd    *exec.Cmd
	out    *lockedBuffer
	url    string
	exited chan error
}

// writeAgentConfig writes the config file an agent and the recover of a recoverEnv share: every
// endpoint, TLS, the local target, and S3 when s3URL is given.
func writeAgentConfig(t *testing.T, e *recoverEnv, s3URL, listen, schedule string) string {
	t.Helper()
	targets := fmt.Sprintf("  - name: local\n    url: file://%s\n", e.repo)
	if s3URL != "" {
		targets += fmt.Sprintf("  - name: s3\n    url: %q\n", s3URL)
	}
	cfg := fmt.Sprintf("endpoints: [%s]\ncacert: %s\ncert: %s\nkey: %s\nwork-dir: %s\ntargets:\n%sagent:\n  snapshot-schedule: %q\n  listen-address: %s\n",
		strings.Join(e.c.Endpoints(), ", "), e.c.CAFile, e.c.ClientCertFile, e.c.ClientKeyFile, e.dir, targets, schedule, listen)
	path := filepath.Join(e.dir, "etcdguard.yaml")
	require.NoError(t, os.WriteFile(path, []byte(cfg), 0o600))
	return path
}

func startAgent(t *testing.T, cfgFile string) *agentProc {
	t.Helper()
	ports, err := testcluster.FreePorts(1)
	require.NoError(t, err)
	listen := fmt.Sprintf("127.0.0.1:%d", ports[0])
	self, err := os.Executable()
	require.NoError(t, err)
	a := &agentProc{out: &lockedBuffer{}, url: "http://" + listen, exited: make(chan error, 1)}
	a.cmd = exec.Command(self, "agent", "--config", cfgFile, "--listen-address", listen, "--log-level", "debug")
	a.cmd.Env = append(os.Environ(), "ETCDGUARD_TEST_AS_MAIN=1")
	a.cmd.Stdout, a.cmd.Stderr = a.out, a.out
	require.NoError(t, a.cmd.Start())
	go func() { a.exited <- a.cmd.Wait() }()
	t.Cleanup(func() {
		_ = a.cmd.Process.Kill()
		if t.Failed() {
			t.Log("the agent's output:\n" + a.out.String())
		}
	})
	require.Eventually(t, func() bool {
		resp, err := http.Get(a.url + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 90*time.Second, 50*time.Millisecond, "the agent becomes ready: a full snapshot and the delta chain from it")
	return a
}

// keyspace reads every key under /registry/ of a cluster.
func keyspace(t *testing.T, c *testcluster.Cluster) map[string][]byte {
	t.Helper()
	cli, err := c.Client(t.Context())
	require.NoError(t, err)
	defer cli.Close()
	resp, err := cli.Get(t.Context(), "/registry/", clientv3.WithPrefix())
	require.NoError(t, err)
	out := make(map[string][]byte, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = kv.Value
	}
	return out
}

// TestContinuousProtectionKill plays the incident with the agent running: a Kubernetes-shaped
// load (puts, deletes, multi-key txns, events on leases, revocations) on a real 3-member TLS
// cluster of etcd 3.5 and 3.6, backed up by `etcdguard agent` to a local target and MinIO; then
// every member and the agent SIGKILLed at the same random moment, and no member's data usable
// (each data dir moved away). `etcdguard recover` restores the backup and replays its delta log:
// every write acknowledged more than one second before the kill is there, counted from the load's
// own log of acknowledged writes. What the last second lost is logged.
func TestContinuousProtectionKill(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			e := newRecoverEnv(t, version)
			_, s3URL := startS3(t)
			cfgFile := writeAgentConfig(t, e, s3URL, "127.0.0.1:0", "0 0 1 1 *")
			a := startAgent(t, cfgFile)

			cli, err := e.c.Client(t.Context())
			require.NoError(t, err)
			defer cli.Close()
			load := testcluster.StartLoad(cli, testcluster.LoadOptions{Workers: 48, Namespace: "kill", Seed: uint64(time.Now().UnixNano())})
			run := 60*time.Second + time.Duration(rand.Int64N(int64(5*time.Second)))
			started := time.Now()
			time.Sleep(run)

			// The power cut: the agent and every member at the same moment.
			killAt := time.Now()
			var wg sync.WaitGroup
			wg.Go(func() { _ = a.cmd.Process.Signal(syscall.SIGKILL) })
			for _, m := range e.c.Members() {
				wg.Go(func() { require.NoError(t, m.Kill()) })
			}
			wg.Wait()
			load.Halt()
			acked, failed := load.Acked()
			t.Logf("load: %d writes acknowledged in %s (%.0f per second), %d failed at the kill", acked, killAt.Sub(started).Round(time.Millisecond), float64(acked)/killAt.Sub(started).Seconds(), failed)
			for _, m := range e.c.Members() {
				require.NoError(t, os.Rename(m.DataDir, m.DataDir+".lost"))
			}

			args := []string{"recover", "--yes", "-o", "json", "--config", cfgFile, "--state-dir", e.state}
			for _, m := range e.members {
				args = append(args, "--member", m)
			}
			r := etcdguard(t, args...)
			require.Equal(t, 0, r.code, r.stderr)
			var out struct {
				Plan struct {
					Source struct {
						Kind           string `json:"kind"`
						Revision       int64  `json:"revision"`
						BackupRevision int64  `json:"backup_revision"`
						Delta          *struct {
							Target string `json:"target"`
							UpTo   int64  `json:"up_to"`
						} `json:"delta"`
					} `json:"source"`
				} `json:"plan"`
			}
			require.NoError(t, json.Unmarshal([]byte(r.stdout), &out), r.stdout)
			require.Equal(t, "backup", out.Plan.Source.Kind)
			require.NotNil(t, out.Plan.Source.Delta, "the plan replays the delta log")
			require.Equal(t, "local", out.Plan.Source.Delta.Target, "the local target holds the most of it")

			state := keyspace(t, e.c)
			lost := load.Check(state, killAt.Add(-time.Second))
			require.Positive(t, lost.Checked)
			require.Empty(t, lost.Keys, "writes acknowledged more than a second before the kill are lost")
			last := load.Check(state, killAt)
			gap := time.Duration(0)
			if !last.OldestAckAt.IsZero() {
				gap = killAt.Sub(last.OldestAckAt)
			}
			t.Logf("backup at revision %d, delta log replayed to %d; keys whose newest acknowledged write is missing: %d of %d (the oldest of those writes acknowledged %s before the kill)",
				out.Plan.Source.BackupRevision, out.Plan.Source.Delta.UpTo, len(last.Keys), last.Checked, gap.Round(time.Millisecond))
		})
	}
}

// restoreToRevisionAndRead restores a one-member cluster with `etcdguard restore latest
// --to-revision rev` from the given targets, starts etcd on it and reads every key.
func restoreToRevisionAndRead(t *testing.T, version string, rev int64, targets ...string) map[string]string {
	t.Helper()
	kv, reached := restorePointAndRead(t, version, []string{"--to-revision", fmt.Sprint(rev)}, targets...)
	require.Equal(t, rev, reached)
	return kv
}

// restorePointAndRead restores a one-member cluster with `etcdguard restore latest` and the
// point flags given, from the given targets, starts etcd on it, and returns every key under
// /registry/ and the revision the restore says it reached.
func restorePointAndRead(t *testing.T, version string, point []string, targets ...string) (map[string]string, int64) {
	t.Helper()
	ports := freePorts(t, 3)
	peer := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	dataDir := filepath.Join(t.TempDir(), "restored")
	args := append([]string{"restore", "latest", "--data-dir", dataDir, "--name", "r1",
		"--initial-cluster", "r1=" + peer, "--initial-advertise-peer-urls", peer, "--initial-cluster-token", "pitr"}, point...)
	for _, tg := range targets {
		args = append(args, "--target", tg)
	}
	r := etcdguard(t, args...)
	require.Equal(t, 0, r.code, r.stderr)
	var reached int64
	_, rest, ok := strings.Cut(r.stdout, "the member holds the cluster as it was at revision ")
	require.True(t, ok, r.stdout)
	_, err := fmt.Sscanf(rest, "%d", &reached)
	require.NoError(t, err)
	return serveAndRead(t, version, dataDir, "pitr", ports, "/registry/"), reached
}

// registryAt is the live cluster's keys under /registry/ at revision rev.
func registryAt(t *testing.T, c *testcluster.Cluster, rev int64) map[string]string {
	t.Helper()
	out := map[string]string{}
	for k, v := range readAll(t, c, rev) {
		if strings.HasPrefix(k, "/registry/") {
			out[k] = v
		}
	}
	return out
}

// TestTwoAgents: two agents on one 3-member TLS cluster (etcd 3.6), each with its own local
// target and both with the same MinIO bucket, as on two control-plane nodes. Exactly one is
// elected and writes the delta log; the other stands by (and says so on /-/ready). The writer is
// SIGKILLed under load: the other takes over, continues the same chain in MinIO from where the
// first one's shipped segments end, and the chain in MinIO has both writers' segments, in one
// unbroken hash chain. `etcdguard restore latest --to-revision N` from MinIO alone, for N in the
// first writer's part and at the end, gives the live keyspace at N.
func TestTwoAgents(t *testing.T) {
	const version = "3.6"
	e := newRecoverEnv(t, version)
	_, s3URL := startS3(t)
	cfgA := writeAgentConfig(t, e, s3URL, "127.0.0.1:0", "0 0 1 1 *")
	require.NoError(t, os.Rename(cfgA, cfgA+".a"))
	cfgA += ".a"
	repoA := e.repo
	e.repo = filepath.Join(e.dir, "repo-b")
	cfgB := writeAgentConfig(t, e, s3URL, "127.0.0.1:0", "0 0 1 1 *")
	e.repo = repoA
	for _, f := range []string{cfgA, cfgB} {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(f, append(b, []byte("  delta-seal-interval: 1s\n")...), 0o600))
	}

	a := startAgent(t, cfgA)
	b := startAgent(t, cfgB)
	require.Equal(t, 1, a.out.count("elected the delta writer"), "the first agent writes")
	require.Zero(t, b.out.count("elected the delta writer"), "the second stands by")
	_, body, err := getBody(b.url + "/-/ready")
	require.NoError(t, err)
	require.Contains(t, body, "standing by: ")

	cli, err := e.c.Client(t.Context())
	require.NoError(t, err)
	defer cli.Close()
	load := testcluster.StartLoad(cli, testcluster.LoadOptions{Workers: 8, Namespace: "two", Seed: 2})
	time.Sleep(5 * time.Second)
	resp, err := cli.Get(t.Context(), "health")
	require.NoError(t, err)
	firstPart := resp.Header.Revision
	time.Sleep(3 * time.Second) // the first writer seals and ships that part

	require.NoError(t, a.cmd.Process.Signal(syscall.SIGKILL))
	require.Eventually(t, func() bool { return b.out.count("elected the delta writer") == 1 }, 30*time.Second, 50*time.Millisecond, "the second agent takes over")
	time.Sleep(5 * time.Second)
	load.Halt()
	presp, err := cli.Put(t.Context(), "/registry/pods/two/last", "last")
	require.NoError(t, err)
	last := presp.Header.Revision

	// The second writer's segments reach MinIO after the first one's.
	s3 := etcdguardTarget(t, s3URL)
	var chain deltaChainView
	require.Eventually(t, func() bool {
		chain = loadChainView(t, s3)
		return chain.reach >= last
	}, 60*time.Second, 200*time.Millisecond, "the chain in MinIO reaches the last revision")
	require.Empty(t, chain.problem, "one unbroken chain")
	require.GreaterOrEqual(t, len(chain.terms), 2, "segments of both writers: %v", chain.terms)
	require.Contains(t, b.out.String(), "continuing the delta chain from a remote target")

	for _, n := range []int64{firstPart, last} {
		require.Equal(t, registryAt(t, e.c, n), restoreToRevisionAndRead(t, version, n, s3URL), "restored to revision %d from MinIO", n)
	}
}

func getBody(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var sb strings.Builder
	_, err = io.Copy(&sb, resp.Body)
	return resp.StatusCode, sb.String(), err
}

func etcdguardTarget(t *testing.T, url string) repository.Target {
	t.Helper()
	tg, err := repository.ParseTarget(url)
	require.NoError(t, err)
	return tg
}

// deltaChainView is the chain of the newest backup in one target, as a reader sees it.
type deltaChainView struct {
	reach   int64
	problem string
	terms   map[int64]int // writer term: segments
}

func loadChainView(t *testing.T, tg repository.Target) deltaChainView {
	t.Helper()
	cat, err := snapshot.Load(t.Context(), []repository.Target{tg})
	require.NoError(t, err)
	defer cat.Close()
	if len(cat.Entries) == 0 {
		return deltaChainView{}
	}
	cp := cat.Entries[len(cat.Entries)-1].Copies[0]
	c, err := deltalog.LoadChain(t.Context(), cp.Repo, cp.Manifest)
	require.NoError(t, err)
	v := deltaChainView{reach: c.Reach, problem: c.Problem, terms: map[int64]int{}}
	for _, s := range c.Segments {
		v.terms[s.WriterTerm]++
	}
	return v
}

// TestAgentOutages: the agent streams a 3-member TLS etcd 3.5 cluster under load to a local
// target and MinIO; MinIO is stopped for a minute, and during that minute the agent is
// SIGKILLed and started again. Nothing is lost: the restarted agent seals what its predecessor
// left in the open segment and continues the same chain; when MinIO is back the queued segments
// go over in order and the chain in MinIO is one unbroken chain to the end. From MinIO alone,
// `restore --to-revision` to a revision written during the outage, and `restore --to-time` to a
// moment of it, give the live keyspace at that revision.
func TestAgentOutages(t *testing.T) {
	const version = "3.5"
	e := newRecoverEnv(t, version)
	m, s3URL := startS3(t)
	cfg := writeAgentConfig(t, e, s3URL, "127.0.0.1:0", "0 0 1 1 *")
	b, err := os.ReadFile(cfg)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(cfg, append(b, []byte("  delta-seal-interval: 1s\n")...), 0o600))
	a := startAgent(t, cfg)

	cli, err := e.c.Client(t.Context())
	require.NoError(t, err)
	defer cli.Close()
	put := func(k string) (int64, time.Time) {
		resp, err := cli.Put(t.Context(), k, "marker")
		require.NoError(t, err)
		return resp.Header.Revision, time.Now()
	}
	load := testcluster.StartLoad(cli, testcluster.LoadOptions{Workers: 8, Namespace: "outage", Seed: 3})
	time.Sleep(3 * time.Second)

	m.Stop()
	outage := time.Now()
	time.Sleep(15 * time.Second)
	during, _ := put("/registry/pods/outage/during")
	before, _ := put("/registry/pods/outage/before-the-moment")
	time.Sleep(300 * time.Millisecond)
	moment := time.Now()
	time.Sleep(300 * time.Millisecond)
	after, _ := put("/registry/pods/outage/after-the-moment")
	time.Sleep(5 * time.Second)

	// The agent killed mid-stream, and started again while MinIO is still down.
	require.NoError(t, a.cmd.Process.Signal(syscall.SIGKILL))
	<-a.exited
	a = startAgent(t, cfg)
	require.Eventually(t, func() bool { return a.out.count("sealing the open delta segment an earlier writer left") == 1 }, 30*time.Second, 50*time.Millisecond,
		"the restarted agent, elected once the dead one's election lease expired, seals what it left")
	time.Sleep(time.Until(outage.Add(time.Minute)))
	m.Restart(t)

	load.Halt()
	last, _ := put("/registry/pods/outage/last")
	s3 := etcdguardTarget(t, s3URL)
	var chain deltaChainView
	require.Eventually(t, func() bool {
		chain = loadChainView(t, s3)
		return chain.reach >= last
	}, 90*time.Second, 250*time.Millisecond, "the chain in MinIO catches up")
	require.Empty(t, chain.problem, "one unbroken chain in MinIO")
	local := loadChainView(t, etcdguardTarget(t, "file://"+e.repo))
	require.Empty(t, local.problem, "one unbroken chain in the local target, across the agent's restart")
	require.GreaterOrEqual(t, local.reach, last)

	require.Equal(t, registryAt(t, e.c, during), restoreToRevisionAndRead(t, version, during, s3URL), "restored to a revision of the outage from MinIO")
	kv, reached := restorePointAndRead(t, version, []string{"--to-time", moment.UTC().Format(time.RFC3339Nano)}, s3URL)
	require.GreaterOrEqual(t, reached, before, "--to-time: the revision written before the moment is in")
	require.Less(t, reached, after, "--to-time: the revision written after the moment is not")
	require.Equal(t, registryAt(t, e.c, reached), kv, "restored to the moment from MinIO")
}

// TestProtectedFlow is the flow an SRE goes through, across commands, on a real 3-member TLS
// etcd 3.6 cluster: the agent protects it; a power cut takes every member's data and the agent;
// `recover` brings the cluster back from the backup and its delta log (a new cluster, bumped
// revisions); the agent, started again, sees that its backups are of another cluster, takes a
// full snapshot of this one and streams its chain; an operator takes a backup by hand
// (`snapshot save`); and `restore` builds the cluster elsewhere, as it was at a revision between
// the agent's snapshot and the hand-made one, and at the newest durable point (past the hand-made
// backup, which has no delta log): each equals the live keyspace there.
func TestProtectedFlow(t *testing.T) {
	const version = "3.6"
	e := newRecoverEnv(t, version)
	cfg := writeAgentConfig(t, e, "", "127.0.0.1:0", "0 0 1 1 *")
	b, err := os.ReadFile(cfg)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(cfg, append(b, []byte("  delta-seal-interval: 1s\n")...), 0o600))
	a := startAgent(t, cfg)
	cli, err := e.c.Client(t.Context())
	require.NoError(t, err)
	defer cli.Close()
	load := testcluster.StartLoad(cli, testcluster.LoadOptions{Workers: 8, Namespace: "flow", Seed: 4})
	time.Sleep(5 * time.Second)

	// The power cut, and every member's data lost.
	var wg sync.WaitGroup
	wg.Go(func() { _ = a.cmd.Process.Signal(syscall.SIGKILL) })
	for _, m := range e.c.Members() {
		wg.Go(func() { require.NoError(t, m.Kill()) })
	}
	wg.Wait()
	killAt := time.Now()
	load.Halt()
	<-a.exited
	for _, m := range e.c.Members() {
		require.NoError(t, os.Rename(m.DataDir, m.DataDir+".lost"))
	}
	args := []string{"recover", "--yes", "-o", "json", "--config", cfg, "--state-dir", e.state}
	for _, m := range e.members {
		args = append(args, "--member", m)
	}
	r := etcdguard(t, args...)
	require.Equal(t, 0, r.code, r.stderr)
	require.Empty(t, load.Check(keyspace(t, e.c), killAt.Add(-time.Second)).Keys, "recover loses nothing acknowledged a second before the cut")

	// The agent again, on the recovered cluster.
	cli2, err := e.c.Client(t.Context())
	require.NoError(t, err)
	defer cli2.Close()
	a = startAgent(t, cfg)
	require.Eventually(t, func() bool {
		return a.out.count("delta log streaming") >= 1 && a.out.count("scheduled snapshot stored and verified") >= 1
	},
		60*time.Second, 50*time.Millisecond, "the agent takes a full snapshot of the recovered cluster and streams its chain")
	put := func(k string) int64 {
		resp, err := cli2.Put(t.Context(), k, "after-recovery")
		require.NoError(t, err)
		return resp.Header.Revision
	}
	var between int64 // a revision in the agent's chain, before the hand-made backup
	for i := range 50 {
		if rev := put(fmt.Sprintf("/registry/pods/flow/after-%02d", i)); i == 25 {
			between = rev
		}
	}
	handMade := saveJSON(t, 0, "--config", cfg)
	var last int64
	for i := range 50 {
		last = put(fmt.Sprintf("/registry/pods/flow/later-%02d", i))
	}
	hc := &http.Client{Timeout: time.Second}
	require.Eventually(t, func() bool {
		resp, err := hc.Get(a.url + "/-/status")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var st struct {
			Delta struct {
				Durable int64 `json:"durable_revision"`
			} `json:"delta"`
		}
		return json.NewDecoder(resp.Body).Decode(&st) == nil && st.Delta.Durable >= last
	}, 30*time.Second, 50*time.Millisecond, "the agent makes the last write durable")
	require.NoError(t, a.cmd.Process.Signal(syscall.SIGTERM)) // it seals its open segment
	require.NoError(t, <-a.exited)

	local := "file://" + e.repo
	require.Equal(t, registryAt(t, e.c, between), restoreToRevisionAndRead(t, version, between, local), "elsewhere, at a revision before the hand-made backup")
	require.Equal(t, registryAt(t, e.c, handMade.Revision), restoreToRevisionAndRead(t, version, handMade.Revision, local), "elsewhere, at the hand-made backup's own revision")
	kv, reached := restorePointAndRead(t, version, nil, local)
	require.GreaterOrEqual(t, reached, last, "the newest durable point is past the hand-made backup")
	require.Equal(t, registryAt(t, e.c, reached), kv, "elsewhere, at the newest durable point")
}
