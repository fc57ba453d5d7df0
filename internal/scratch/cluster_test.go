package scratch_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdguard/etcdguard/internal/scratch"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

// start starts a cluster that is closed when the test ends.
func start(t *testing.T, opts scratch.Options) *scratch.Cluster {
	t.Helper()
	c, err := scratch.Start(t.Context(), opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return c
}

// client returns a client that is closed when the test ends.
func client(t *testing.T, newClient func(context.Context) (*clientv3.Client, error)) *clientv3.Client {
	t.Helper()
	cli, err := newClient(t.Context())
	require.NoError(t, err)
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// requireValue reads key through cli with a linearizable read and checks its value.
func requireValue(t *testing.T, cli *clientv3.Client, key, want string) {
	t.Helper()
	resp, err := cli.Get(t.Context(), key)
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 1)
	require.Equal(t, want, string(resp.Kvs[0].Value))
}

func TestCluster(t *testing.T) {
	tests := []struct {
		name string
		size int
		tls  bool
		// crash kills the first member with SIGKILL; otherwise it is stopped with SIGTERM.
		crash bool
	}{
		{name: "3 members TLS crash", size: 3, tls: true, crash: true},
		{name: "1 member plain stop", size: 1, tls: false, crash: false},
	}
	for _, version := range testenv.EtcdVersions() {
		for _, tt := range tests {
			t.Run(version+"/"+tt.name, func(t *testing.T) {
				dir := t.TempDir()
				c := start(t, scratch.Options{
					Size:    tt.size,
					TLS:     tt.tls,
					Command: []string{testenv.Etcd(t, version, "etcd")},
					Dir:     dir,
				})

				members := c.Members()
				require.Len(t, members, tt.size)
				scheme := "http://"
				if tt.tls {
					scheme = "https://"
				}
				for i, m := range members {
					require.True(t, m.Running(), m.Name)
					require.True(t, strings.HasPrefix(m.ClientURL, scheme), m.ClientURL)
					require.Equal(t, m.ClientURL, c.Endpoints()[i])
					require.Contains(t, c.InitialCluster(), m.Name+"="+m.PeerURL)
					require.Equal(t, filepath.Join(dir, m.Name), m.DataDir)
					require.DirExists(t, m.DataDir)
					log, err := os.ReadFile(filepath.Join(dir, m.Name+".log"))
					require.NoError(t, err)
					require.Contains(t, string(log), m.Name, "member output goes to its log file")
				}
				require.NotEmpty(t, c.Token())
				if tt.tls {
					for _, f := range []string{c.CAFile, c.ClientCertFile, c.ClientKeyFile} {
						st, err := os.Stat(f)
						require.NoError(t, err)
						require.Equal(t, os.FileMode(0o600), st.Mode().Perm(), f)
					}
				}

				cli := client(t, c.Client)
				_, err := cli.Put(t.Context(), "greeting", "hello")
				require.NoError(t, err)
				requireValue(t, cli, "greeting", "hello")

				victim := members[0]
				if tt.crash {
					require.NoError(t, victim.Kill())
				} else {
					require.NoError(t, victim.Stop(t.Context()))
				}
				require.False(t, victim.Running())
				require.Zero(t, victim.PID())

				if tt.size >= 3 {
					// The others still form a quorum: once they have a leader (the victim may
					// have been it), writes and linearizable reads work.
					require.NoError(t, members[1].WaitHealthy(t.Context()))
					survivor := client(t, members[1].Client)
					_, err = survivor.Put(t.Context(), "greeting", "still here")
					require.NoError(t, err)
					requireValue(t, survivor, "greeting", "still here")
				}

				require.NoError(t, victim.Restart(t.Context()))
				require.True(t, victim.Running())
				want := "hello"
				if tt.size >= 3 {
					want = "still here" // the restarted member caught up
				}
				requireValue(t, client(t, victim.Client), "greeting", want)
				require.NoError(t, c.WaitHealthy(t.Context()))

				require.NoError(t, c.Close())
				require.NoError(t, c.Close(), "Close twice")
				for _, m := range members {
					require.False(t, m.Running(), m.Name)
				}
			})
		}
	}
}

func TestClusterRefusesBadClientCertificates(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run(version, func(t *testing.T) {
			c := start(t, scratch.Options{
				TLS:     true,
				Command: []string{testenv.Etcd(t, version, "etcd")},
				Dir:     t.TempDir(),
			})
			stranger, err := scratch.NewPKI(filepath.Join(t.TempDir(), "other-ca"))
			require.NoError(t, err)
			now := time.Now()

			tests := []struct {
				name     string
				issuer   *scratch.PKI
				from, to time.Time
				// reason is what the member logs when it refuses the certificate; empty
				// when the certificate is good.
				reason string
			}{
				{name: "valid", issuer: c.PKI, from: now.Add(-time.Hour), to: now.Add(time.Hour)},
				{name: "expired", issuer: c.PKI, from: now.Add(-48 * time.Hour), to: now.Add(-24 * time.Hour), reason: "is after"},
				{name: "not-yet-valid", issuer: c.PKI, from: now.Add(24 * time.Hour), to: now.Add(48 * time.Hour), reason: "is before"},
				{name: "other-ca", issuer: stranger, from: now.Add(-time.Hour), to: now.Add(time.Hour), reason: "unknown authority"},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					t.Parallel()
					certFile, keyFile, err := tt.issuer.IssueClient(tt.name, tt.from, tt.to)
					require.NoError(t, err)
					tlsConfig, err := scratch.ClientTLS(c.CAFile, certFile, keyFile)
					require.NoError(t, err)
					cfg := c.ClientConfig()
					cfg.TLS = tlsConfig
					cli, err := clientv3.New(cfg)
					require.NoError(t, err)
					defer cli.Close()

					// A refused client sees only a deadline, so a refusal takes the whole
					// wait: keep it short. The member's log below shows why the call failed,
					// and the "valid" case shows the same call succeeds with a good certificate.
					wait := 2 * time.Second
					if tt.reason == "" {
						wait = 30 * time.Second
					}
					ctx, cancel := context.WithTimeout(t.Context(), wait)
					defer cancel()
					_, err = cli.Get(ctx, "anything")
					if tt.reason == "" {
						require.NoError(t, err)
						return
					}
					require.Error(t, err)
					// The member says why: it rejected the TLS handshake, for this reason.
					log, err := os.ReadFile(c.Members()[0].LogFile)
					require.NoError(t, err)
					var rejections []string
					for _, line := range strings.Split(string(log), "\n") {
						if strings.Contains(line, "rejected connection on client endpoint") {
							rejections = append(rejections, line)
						}
					}
					require.NotEmpty(t, rejections)
					require.Contains(t, strings.Join(rejections, "\n"), tt.reason)
				})
			}
		})
	}
}

func TestStartReportsMemberLog(t *testing.T) {
	// A member that exits at once: Start fails, quoting what the member wrote.
	_, err := scratch.Start(t.Context(), scratch.Options{
		Command:   []string{testenv.Etcd(t, "3.6", "etcd")},
		Dir:       t.TempDir(),
		ExtraArgs: []string{"--no-such-flag"},
	})
	require.Error(t, err)
	require.Contains(t, err.Error(), "no-such-flag")
	require.Contains(t, err.Error(), "m1.log")
}

func TestStartRetriesWhenAPortIsTaken(t *testing.T) {
	// The first run of the member fails the way etcd does when a port it was given was taken
	// meanwhile; Start must try again with new ports rather than fail.
	marker := filepath.Join(t.TempDir(), "failed-once")
	script := `marker=$1 etcd=$2
shift 2
if [ ! -e "$marker" ]; then
  touch "$marker"
  echo '{"level":"warn","msg":"failed to start etcd","error":"listen tcp 127.0.0.1:1: bind: address already in use"}' >&2
  exit 1
fi
exec "$etcd" "$@"`
	c := start(t, scratch.Options{
		Command: []string{"/bin/sh", "-c", script, "sh", marker, testenv.Etcd(t, "3.6", "etcd")},
		Dir:     t.TempDir(),
	})
	require.FileExists(t, marker, "the first attempt ran")
	log, err := os.ReadFile(c.Members()[0].LogFile)
	require.NoError(t, err)
	require.Contains(t, string(log), "address already in use", "the log keeps the failed attempt")

	cli := client(t, c.Client)
	_, err = cli.Put(t.Context(), "k", "v")
	require.NoError(t, err)
	requireValue(t, cli, "k", "v")
}

// TestMembersDieWithTheirParent runs itself as a child process that starts a cluster and
// prints the members' process ids, kills that child, and checks the members are gone too.
func TestMembersDieWithTheirParent(t *testing.T) {
	if dir := os.Getenv("TESTCLUSTER_HELPER_DIR"); dir != "" {
		c, err := scratch.Start(t.Context(), scratch.Options{
			Size:    3,
			Command: []string{testenv.Etcd(t, "3.6", "etcd")},
			Dir:     dir,
		})
		require.NoError(t, err)
		for _, m := range c.Members() {
			fmt.Printf("pid %d\n", m.PID())
		}
		time.Sleep(time.Hour) // until killed
		return
	}

	helper := exec.Command(os.Args[0], "-test.run=^TestMembersDieWithTheirParent$", "-test.v")
	helper.Env = append(os.Environ(), "TESTCLUSTER_HELPER_DIR="+t.TempDir())
	helper.Stderr = os.Stderr
	out, err := helper.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, helper.Start())
	t.Cleanup(func() { _ = helper.Process.Kill(); _ = helper.Wait() })

	var pids []int
	lines := bufio.NewScanner(out)
	for len(pids) < 3 && lines.Scan() {
		var pid int
		if _, err := fmt.Sscanf(lines.Text(), "pid %d", &pid); err == nil {
			pids = append(pids, pid)
		}
	}
	require.Len(t, pids, 3, "the helper reports its members")
	for _, pid := range pids {
		require.True(t, alive(pid), "member %d runs before its parent dies", pid)
	}

	require.NoError(t, helper.Process.Signal(syscall.SIGKILL))
	_ = helper.Wait()
	for _, pid := range pids {
		require.Eventually(t, func() bool { return !alive(pid) }, 30*time.Second, 50*time.Millisecond,
			"member %d outlived its parent", pid)
	}
}

// alive reports whether process pid exists and is not a zombie (a container's init may never
// reap the orphans it inherits).
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses: "pid (comm) S ...".
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
