package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestConfigErrors: a config file that does not validate stops the agent (at start, and so that
// systemd does not restart it: RestartPreventExitStatus=2) and every other command with exit code
// 2, before etcd or a target is touched; the message names the file and what is wrong.
func TestConfigErrors(t *testing.T) {
	cases := []struct {
		name, config string
		want         []string
	}{
		{"a schedule that never fires", "agent:\n  snapshot-schedule: \"0 0 31 2 *\"\n",
			[]string{`snapshot-schedule "0 0 31 2 *" never fires`}},
		{"a negative @every", "agent:\n  snapshot-schedule: \"@every -30m\"\n",
			[]string{`snapshot-schedule "@every -30m": @every needs a positive duration`}},
	}
	for _, tc := range cases {
		for _, args := range [][]string{{"agent", "--listen-address", "127.0.0.1:0"}, {"snapshot", "save"}} {
			t.Run(tc.name+"/"+strings.Join(args[:1], " "), func(t *testing.T) {
				cfg := filepath.Join(t.TempDir(), "etcdguard.yaml")
				require.NoError(t, os.WriteFile(cfg, []byte(tc.config), 0o600))
				r := etcdguard(t, append(args, "--config", cfg)...)
				require.Equal(t, 2, r.code, r.stderr)
				require.Contains(t, r.stderr, "config file "+cfg)
				for _, w := range tc.want {
					require.Contains(t, r.stderr, w)
				}
			})
		}
	}
}
