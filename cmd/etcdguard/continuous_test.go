package main

import (
	"encoding/json"
	"fmt"
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
