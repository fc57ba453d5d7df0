package cli

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestPointFlagsThatSayNothingAreRefused: `--to-revision 0` and `--to-time 0001-01-01T00:00:00Z`
// name a point (the operator typed one), but they were read as "no bound": the restore went to
// the newest durable point of the delta log, the opposite of the oldest point asked for.
func TestPointFlagsThatSayNothingAreRefused(t *testing.T) {
	dir := t.TempDir()
	env := Env{
		Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: io.Discard, Getenv: func(string) string { return "" }, Now: time.Now,
		Classify: func(error) (int, string) { return 1, "any other failure" },
		Notify:   func(...os.Signal) (<-chan os.Signal, func()) { return make(chan os.Signal), func() {} },
	}
	for _, point := range [][]string{
		{"--to-revision", "0"},
		{"--to-revision=0"},
		{"--to-time", "0001-01-01T00:00:00Z"},
	} {
		for _, cmd := range [][]string{
			{"restore", "latest", "--data-dir", filepath.Join(dir, "data"), "--name", "a", "--initial-cluster", "a=https://127.0.0.1:2380", "--initial-advertise-peer-urls", "https://127.0.0.1:2380"},
			{"recover", "--dry-run", "--member", "name=a,peer-url=https://127.0.0.1:2380,client-url=https://127.0.0.1:2379,data-dir=" + filepath.Join(dir, "data") + ",systemd-unit=etcd", "--state-dir", filepath.Join(dir, "state")},
		} {
			t.Run(cmd[0]+" "+strings.Join(point, " "), func(t *testing.T) {
				root := NewRootCommand(env)
				root.SetArgs(append(append(cmd, "--target", "file://"+filepath.Join(dir, "repo")), point...))
				root.SetOut(io.Discard)
				root.SetErr(io.Discard)
				err := root.ExecuteContext(t.Context())
				require.ErrorIs(t, err, ErrUsage)
				require.ErrorContains(t, err, strings.TrimPrefix(strings.SplitN(point[0], "=", 2)[0], "--"))
			})
		}
	}
}
