package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/testcluster"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

func (b *lockedBuffer) count(s string) int { return strings.Count(b.String(), s) }

// TestAgentSignals runs `etcdguard agent` as its own process and sends it real signals: SIGHUP
// with a broken config keeps it running on the old one, SIGTERM stops it with exit code 0.
func TestAgentSignals(t *testing.T) {
	c, err := testcluster.Start(t.Context(), testcluster.Options{
		Size: 1, TLS: true, Command: []string{testenv.Etcd(t, "3.6", "etcd")}, Dir: t.TempDir(),
	})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	dir := t.TempDir()
	ports, err := testcluster.FreePorts(1)
	require.NoError(t, err)
	cfgFile := filepath.Join(dir, "etcdguard.yaml")
	write := func(schedule string) {
		cfg := fmt.Sprintf("endpoints: [%s]\ncacert: %s\ncert: %s\nkey: %s\nwork-dir: %s\ntargets:\n  - name: local\n    url: file://%s\nagent:\n  snapshot-schedule: %q\n",
			c.Endpoints()[0], c.CAFile, c.ClientCertFile, c.ClientKeyFile, dir, filepath.Join(dir, "backups"), schedule)
		require.NoError(t, os.WriteFile(cfgFile, []byte(cfg), 0o600))
	}
	write("*/1 * * * * *")
	self, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(self, "agent", "--config", cfgFile, "--listen-address", fmt.Sprintf("127.0.0.1:%d", ports[0]))
	cmd.Env = append(os.Environ(), "ETCDGUARD_TEST_AS_MAIN=1")
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			t.Log("the agent's output:\n" + out.String())
		}
	})
	stored := func() int { return out.count("scheduled snapshot stored and verified") }
	require.Eventually(t, func() bool { return stored() >= 1 }, 30*time.Second, 20*time.Millisecond)

	write("every now and then")
	require.NoError(t, cmd.Process.Signal(syscall.SIGHUP))
	require.Eventually(t, func() bool { return out.count("config reload rejected") == 1 }, 10*time.Second, 20*time.Millisecond)
	n := stored()
	require.Eventually(t, func() bool { return stored() >= n+1 }, 10*time.Second, 20*time.Millisecond, "still running on the old config")

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-exited:
		require.NoError(t, err, "SIGTERM: exit code 0")
	case <-time.After(10 * time.Second):
		t.Fatal("the agent did not stop within 10 s of SIGTERM")
	}
	require.Contains(t, out.String(), "agent stopped")
}
