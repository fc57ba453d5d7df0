package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestConfigErrors: a config file that does not validate stops the agent (at start, and so that
// systemd does not restart it: RestartPreventExitStatus=2) and every other command with exit code
// 2, before etcd or a target is touched; the message names the file and what is wrong, and never
// the credentials a target URL carries.
func TestConfigErrors(t *testing.T) {
	const key, secret = "AKIDLEAKED", "SECRETLEAKED"
	cases := []struct {
		name, config string
		want         []string
	}{
		{"a schedule that never fires", "agent:\n  snapshot-schedule: \"0 0 31 2 *\"\n",
			[]string{`snapshot-schedule "0 0 31 2 *" never fires`}},
		{"a negative @every", "agent:\n  snapshot-schedule: \"@every -30m\"\n",
			[]string{`snapshot-schedule "@every -30m": @every needs a positive duration`}},
		{"S3 credentials in a target URL", "targets:\n  - name: offsite\n    url: s3://" + key + ":" + secret + "@etcd-backups/prod?endpoint=http://127.0.0.1:9000\n",
			[]string{`target "offsite"`, "credentials do not belong in the URL"}},
		{"a secret in an S3 target URL's query", "targets:\n  - name: offsite\n    url: s3://etcd-backups/prod?endpoint=http://127.0.0.1:9000&secret-key=" + secret + "\n",
			[]string{`target "offsite"`, `unknown parameter "secret-key"`}},
		{"S3 credentials in a target URL's endpoint", "targets:\n  - name: offsite\n    url: s3://etcd-backups/prod?endpoint=http://" + key + ":" + secret + "@127.0.0.1:9000\n",
			[]string{`target "offsite"`, "credentials do not belong in the endpoint"}},
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
				require.NotContains(t, r.stdout+r.stderr, secret)
				require.NotContains(t, r.stdout+r.stderr, key)
			})
		}
	}
	// The same target URLs given as --target are a bad flag: exit code 2 too.
	for i, u := range []string{
		"s3://" + key + ":" + secret + "@etcd-backups/prod?endpoint=http://127.0.0.1:9000",
		"s3://etcd-backups/prod?endpoint=http://127.0.0.1:9000&secret-key=" + secret,
		"s3://etcd-backups/prod?endpoint=http://" + key + ":" + secret + "@127.0.0.1:9000",
	} {
		t.Run(fmt.Sprintf("--target with credentials %d", i), func(t *testing.T) {
			r := etcdguard(t, "snapshot", "list", "--target", u)
			require.Equal(t, 2, r.code, r.stderr)
			require.Contains(t, r.stderr, "--target")
			require.NotContains(t, r.stdout+r.stderr, secret)
			require.NotContains(t, r.stdout+r.stderr, key)
		})
	}
}
