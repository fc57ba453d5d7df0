package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/snapshot"
	"github.com/etcdguard/etcdguard/internal/testcluster"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

// TestAgent runs `etcdguard agent` in-process against a real TLS etcd 3.6 and a local target,
// on a schedule of seconds: backups appear and verify, /-/ready goes from 503 to 200, a SIGHUP
// with a broken config keeps the old schedule and a good one replaces it, and cancelling (what
// SIGTERM does) stops it within seconds, exit 0, with no partial file, lock or scratch folder left.
func TestAgent(t *testing.T) {
	c, err := testcluster.Start(t.Context(), testcluster.Options{
		Size: 1, TLS: true, Command: []string{testenv.Etcd(t, "3.6", "etcd")}, Dir: t.TempDir(),
	})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	ec, err := c.Client(t.Context())
	require.NoError(t, err)
	val := strings.Repeat("v", 64<<10)
	for i := 0; i < 256; i++ { // 16 MiB, so that streaming a snapshot takes a moment
		_, err := ec.Put(t.Context(), fmt.Sprintf("/registry/configmaps/agent/cm-%03d", i), val)
		require.NoError(t, err)
	}
	require.NoError(t, ec.Close())

	dir := t.TempDir()
	backups, work := filepath.Join(dir, "backups"), filepath.Join(dir, "work")
	require.NoError(t, os.Mkdir(work, 0o700))
	ports, err := testcluster.FreePorts(1)
	require.NoError(t, err)
	listen := fmt.Sprintf("127.0.0.1:%d", ports[0])
	cfgFile := filepath.Join(dir, "etcdguard.yaml")
	writeConfig := func(schedule string) {
		cfg := fmt.Sprintf("endpoints: [%s]\ncacert: %s\ncert: %s\nkey: %s\nwork-dir: %s\ntargets:\n  - name: local\n    url: file://%s\nagent:\n  snapshot-schedule: %q\n  listen-address: %s\n",
			strings.Join(c.Endpoints(), ", "), c.CAFile, c.ClientCertFile, c.ClientKeyFile, work, backups, schedule, listen)
		require.NoError(t, os.WriteFile(cfgFile, []byte(cfg), 0o600))
	}
	writeConfig("*/1 * * * * *")

	logs := &testenv.Logs{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log("the agent's log:\n" + logs.String())
		}
	})
	hup := make(chan os.Signal, 1)
	env := Env{
		Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: logs, Getenv: func(string) string { return "" }, Now: time.Now,
		Classify: func(error) (int, string) { return 1, "any other failure" },
		Notify:   func(...os.Signal) (<-chan os.Signal, func()) { return hup, func() {} },
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	root := NewRootCommand(env)
	root.SetArgs([]string{"agent", "--config", cfgFile})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()

	url := "http://" + listen
	var sawNotReady bool
	require.Eventually(t, func() bool {
		code, body, err := httpGet(url + "/-/ready")
		if err != nil {
			return false
		}
		if code == http.StatusServiceUnavailable {
			sawNotReady = true
			// Before its own election completes (milliseconds, more on a loaded machine) the
			// agent stands by with no writer known.
			require.True(t, strings.HasPrefix(body, "not ready: no verified backup in the targets yet") ||
				strings.HasPrefix(body, "not ready: standing by, and no agent is the delta writer yet"), body)
		}
		return code == http.StatusOK
	}, 30*time.Second, 20*time.Millisecond)
	require.True(t, sawNotReady, "/-/ready answered 503 before the first backup")
	code, _, err := httpGet(url + "/-/healthy")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)

	storedCount := func() int { return logs.Count("scheduled snapshot stored and verified") }
	require.Eventually(t, func() bool { return storedCount() >= 3 }, 30*time.Second, 50*time.Millisecond)

	// A broken config is rejected and the old schedule goes on.
	writeConfig("every now and then")
	hup <- syscall.SIGHUP
	require.Eventually(t, func() bool { return logs.Count("config reload rejected") == 1 }, 10*time.Second, 20*time.Millisecond)
	n := storedCount()
	require.Eventually(t, func() bool { return storedCount() >= n+2 }, 15*time.Second, 50*time.Millisecond, "the old schedule goes on")
	// A good one replaces it.
	writeConfig("*/2 * * * * *")
	hup <- syscall.SIGHUP
	require.Eventually(t, func() bool { return logs.Count(`msg="config reloaded" snapshot_schedule="*/2 * * * * *"`) == 1 }, 60*time.Second, 20*time.Millisecond)

	// Cancel while a snapshot streams, if one can be caught.
	streaming := logs.Count("taking snapshot")
	caught := waitFor(func() bool { return logs.Count("taking snapshot") > streaming }, 5*time.Second)
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err, "a stopped agent exits 0")
	case <-time.After(5 * time.Second):
		t.Fatal("the agent did not stop within 5 s")
	}
	out := logs.String()
	require.Contains(t, out, "agent stopped")
	t.Logf("cancelled while a snapshot streamed: %v; the run was stopped: %v", caught && strings.Count(out, "taking snapshot") > strings.Count(out, "scheduled snapshot stored"),
		strings.Contains(out, "scheduled snapshot stopped: the agent is stopping"))
	for _, secret := range []string{val[:64], "PRIVATE KEY"} {
		require.NotContains(t, out, secret)
	}

	// Nothing partial is left: every backup folder has its manifest, no lock, no scratch folder.
	require.NoError(t, filepath.WalkDir(backups, func(p string, d fs.DirEntry, err error) error {
		require.NoError(t, err)
		require.NotContains(t, d.Name(), ".partial-", p)
		if d.IsDir() && filepath.Dir(p) == filepath.Join(backups, "snapshots") {
			require.FileExists(t, filepath.Join(p, "manifest.json"), "backup folder without a manifest")
		}
		return nil
	}))
	locks, err := os.ReadDir(filepath.Join(backups, "locks"))
	if !errors.Is(err, fs.ErrNotExist) {
		require.NoError(t, err)
		require.Empty(t, locks, "lock files left")
	}
	left, err := os.ReadDir(work)
	require.NoError(t, err)
	require.Empty(t, left, "scratch folders left")

	// The backups are real: each verifies.
	target, err := repository.ParseTarget("file://" + backups)
	require.NoError(t, err)
	cat, err := snapshot.Load(t.Context(), []repository.Target{target})
	require.NoError(t, err)
	defer cat.Close()
	require.GreaterOrEqual(t, len(cat.Entries), 5)
	verifyDir := t.TempDir()
	for _, e := range cat.Entries {
		m := e.Manifest
		require.Positive(t, m.Revision)
		require.Equal(t, 256+1, m.Status.TotalKey, "the keys written and the delta writer's election key")
		require.NotEmpty(t, m.Verification.Checks)
		rep, err := snapshot.Verify(t.Context(), slog.New(slog.DiscardHandler), e.Copies[0], nil, verifyDir)
		require.NoError(t, err, m.ID)
		require.True(t, rep.OK)
	}
}

func httpGet(url string) (int, string, error) {
	cl := http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func waitFor(cond func() bool, d time.Duration) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return false
}

// TestAgentHelp shows the agent's help with an example and its signals.
func TestAgentHelp(t *testing.T) {
	var out bytes.Buffer
	root := NewRootCommand(Env{Stdout: &out, Stderr: &out, Getenv: func(string) string { return "" }, Now: time.Now, ExitCodes: "  0  success\n"})
	root.SetArgs([]string{"agent", "--help"})
	require.NoError(t, root.Execute())
	for _, want := range []string{"Examples:", "etcdguard agent --config /etc/etcdguard/etcdguard.yaml", "/-/ready", "SIGHUP", "--listen-address", "Exit codes:"} {
		require.Contains(t, out.String(), want)
	}
}
