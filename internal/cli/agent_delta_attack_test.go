package cli

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/testenv"
)

// TestAgentRefusesAnOfflineDeltaTarget: agent.delta-target naming an offline target (a medium
// that may be absent, which the default choice of delta target already passes over) is a config
// error. It was accepted, and while the medium was absent the agent exited at start (exit 1) with
// the delta log's "open target" error, taking the scheduled snapshots to the other targets down
// with it, and systemd restarted it every 10 s for ever.
func TestAgentRefusesAnOfflineDeltaTarget(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "etcdguard.yaml")
	cfg := fmt.Sprintf("endpoints: [https://127.0.0.1:1]\ntargets:\n  - name: disk\n    url: file://%s\n  - name: usb\n    url: file://%s\n    offline: true\nagent:\n  delta-target: usb\n  listen-address: 127.0.0.1:0\n",
		filepath.Join(dir, "disk"), filepath.Join(dir, "usb-not-mounted"))
	require.NoError(t, os.WriteFile(cfgFile, []byte(cfg), 0o600))
	logs := &testenv.Logs{}
	env := Env{
		Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: logs, Getenv: func(string) string { return "" }, Now: time.Now,
		Classify: func(error) (int, string) { return 1, "any other failure" },
		Notify:   func(...os.Signal) (<-chan os.Signal, func()) { return make(chan os.Signal), func() {} },
	}
	root := NewRootCommand(env)
	root.SetArgs([]string{"agent", "--config", cfgFile})
	root.SetOut(io.Discard)
	root.SetErr(io.Discard)
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(t.Context()) }()
	select {
	case err := <-done:
		require.ErrorIs(t, err, ErrUsage, "log:\n%s", logs)
		require.ErrorContains(t, err, "offline")
	case <-time.After(20 * time.Second):
		t.Fatalf("the agent runs with an offline delta target; log:\n%s", logs)
	}
}
