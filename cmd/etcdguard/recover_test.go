package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io/fs"
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

	"github.com/etcdguard/etcdguard/internal/restore"
	"github.com/etcdguard/etcdguard/internal/testcluster"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

// recoverEnv is a real 3-member TLS cluster whose members etcdguard recover stops and starts
// with shell commands, as it would on hosts without systemd.
type recoverEnv struct {
	c       *testcluster.Cluster
	dir     string
	repo    string
	members []string // --member values
	state   string
}

func newRecoverEnv(t *testing.T, version string) *recoverEnv {
	t.Helper()
	e := &recoverEnv{c: startCluster(t, version), dir: t.TempDir()}
	e.repo = filepath.Join(e.dir, "repo")
	e.state = filepath.Join(e.dir, "state")
	var kill func()
	e.members, kill = testcluster.ShellMembers(e.c, e.dir)
	t.Cleanup(kill)
	return e
}

// flags are the flags every recover command of the test gets.
func (e *recoverEnv) flags() []string { return e.flagsWith(e.members...) }

// flagsWith is flags with the given --member values instead of the environment's.
func (e *recoverEnv) flagsWith(members ...string) []string {
	f := append(tlsFlags(e.c), "--target", "file://"+e.repo, "--state-dir", e.state)
	for _, m := range members {
		f = append(f, "--member", m)
	}
	return f
}

func startWriter(t *testing.T, c *testcluster.Cluster, namespace string) *testcluster.Writer {
	t.Helper()
	cli, err := c.Client(t.Context())
	require.NoError(t, err)
	t.Cleanup(func() { cli.Close() })
	return testcluster.StartWriter(context.Background(), cli, namespace)
}

// powerCut SIGKILLs every member at the same moment.
func powerCut(t *testing.T, c *testcluster.Cluster) {
	t.Helper()
	var wg sync.WaitGroup
	for _, m := range c.Members() {
		wg.Go(func() { require.NoError(t, m.Kill()) })
	}
	wg.Wait()
}

func damageDB(t *testing.T, m *testcluster.Member) {
	t.Helper()
	require.NoError(t, m.ZeroDBPages(2, 4))
}

func tearWAL(t *testing.T, m *testcluster.Member) {
	t.Helper()
	require.NoError(t, m.TearWALTail())
}

// present returns how many of keys the cluster has.
func present(t *testing.T, c *testcluster.Cluster, keys []string) int {
	t.Helper()
	cli, err := c.Client(t.Context())
	require.NoError(t, err)
	defer cli.Close()
	n := 0
	for _, k := range keys {
		resp, err := cli.Get(t.Context(), k, clientv3.WithCountOnly())
		require.NoError(t, err)
		n += int(resp.Count)
	}
	return n
}

type recoverJSON struct {
	Plan struct {
		ID     string `json:"id"`
		Path   string `json:"path"`
		Source *struct {
			Kind     string `json:"kind"`
			Member   string `json:"member"`
			Revision int64  `json:"revision"`
		} `json:"source"`
		HighWater int64 `json:"high_water"`
		Loss      struct {
			Revisions int64 `json:"revisions"`
		} `json:"loss"`
	} `json:"plan"`
	Quarantined map[string]string `json:"quarantined"`
	Verified    *struct {
		Revision int64             `json:"revision"`
		HashKV   map[string]uint32 `json:"hash_kv"`
		Leader   string            `json:"leader"`
	} `json:"verified"`
	Steps []struct {
		Name   string `json:"name"`
		Member string `json:"member"`
	} `json:"steps"`
}

func runRecover(t *testing.T, e *recoverEnv, args ...string) recoverJSON {
	t.Helper()
	r := etcdguard(t, append(append([]string{"recover", "--yes", "-o", "json"}, args...), e.flags()...)...)
	require.Equal(t, 0, r.code, r.stderr)
	var out recoverJSON
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out), r.stdout)
	require.NotNil(t, out.Verified)
	require.Len(t, out.Verified.HashKV, 3)
	return out
}

func stepNames(out recoverJSON) []string {
	var names []string
	for _, s := range out.Steps {
		names = append(names, s.Name)
	}
	return names
}

// TestRecover plays the power cuts of issue 3 on real 3-member TLS clusters.
func TestRecover(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			t.Run("all killed, data intact: started, nothing lost", func(t *testing.T) {
				e := newRecoverEnv(t, version)
				w := startWriter(t, e.c, "intact")
				time.Sleep(500 * time.Millisecond)
				powerCut(t, e.c)
				acked := w.Halt()
				require.NotEmpty(t, acked)
				out := runRecover(t, e)
				require.Equal(t, restore.PathStart, out.Plan.Path)
				require.NotContains(t, stepNames(out), "restore")
				require.Empty(t, out.Quarantined)
				require.Equal(t, len(acked), present(t, e.c, acked), "every acknowledged write survives")
			})

			t.Run("two data dirs damaged: restored from the intact member, newer than the backup", func(t *testing.T) {
				e := newRecoverEnv(t, version)
				loadData(t, e.c, 200, 100)
				backup := saveJSON(t, 0, append([]string{"--target", "file://" + e.repo}, tlsFlags(e.c)...)...)
				w := startWriter(t, e.c, "after-backup")
				time.Sleep(700 * time.Millisecond)
				acked := w.Halt()
				time.Sleep(300 * time.Millisecond) // let the members commit their databases
				powerCut(t, e.c)
				ms := e.c.Members()
				tearWAL(t, ms[0])
				damageDB(t, ms[0])
				damageDB(t, ms[2])
				before := treeHashes(t, ms[1].DataDir)

				out := runRecover(t, e)
				require.Equal(t, restore.PathRestore, out.Plan.Path)
				require.Equal(t, "member", out.Plan.Source.Kind)
				require.Equal(t, ms[1].Name, out.Plan.Source.Member)
				require.Greater(t, out.Plan.Source.Revision, backup.Revision, "the intact member is newer than the backup")
				require.Len(t, out.Quarantined, 3)
				require.Equal(t, before, treeHashes(t, out.Quarantined[ms[1].Name]), "the source's data dir is kept intact")
				require.Equal(t, len(acked), present(t, e.c, acked), "the writes after the backup are there")
				require.Greater(t, out.Verified.Revision, out.Plan.HighWater, "revisions above anything seen before")
			})

			t.Run("one data dir deleted while two run: replaced online, nothing lost", func(t *testing.T) {
				e := newRecoverEnv(t, version)
				loadData(t, e.c, 200, 100)
				m3 := e.c.Members()[2]
				require.NoError(t, m3.Kill())
				require.NoError(t, os.RemoveAll(m3.DataDir))
				require.NoError(t, e.c.Members()[0].WaitHealthy(t.Context()), "the two others elect a leader if m3 led")
				w := startWriter(t, e.c, "degraded")
				time.Sleep(300 * time.Millisecond)
				acked := w.Halt()
				out := runRecover(t, e)
				require.Equal(t, restore.PathReplace, out.Plan.Path)
				require.Contains(t, stepNames(out), "member remove and add")
				require.Equal(t, len(acked), present(t, e.c, acked))
			})
		})
	}
}

// treeHashes returns the SHA-256 of every file under dir, by relative path.
func treeHashes(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		require.NoError(t, err)
		if d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		sum := sha256.Sum256(b)
		rel, _ := filepath.Rel(dir, p)
		out[rel] = hex.EncodeToString(sum[:])
		return nil
	}))
	return out
}

// damagedTwo loads data, takes a backup and cuts the power with two databases damaged, so that
// only a restore can bring the cluster back.
func damagedTwo(t *testing.T, e *recoverEnv, mib int) {
	t.Helper()
	loadData(t, e.c, 200, 100)
	if mib > 0 {
		loadBulk(t, e.c, mib)
	}
	saveJSON(t, 0, append([]string{"--target", "file://" + e.repo}, tlsFlags(e.c)...)...)
	powerCut(t, e.c)
	damageDB(t, e.c.Members()[0])
	damageDB(t, e.c.Members()[2])
}

// TestRecoverInterrupted kills recover half-way through a restore; running it again finishes
// the job, and every quarantined data dir is intact.
func TestRecoverInterrupted(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			e := newRecoverEnv(t, version)
			damagedTwo(t, e, 48)
			before := map[string]map[string]string{}
			for _, m := range e.c.Members() {
				before[m.Name] = treeHashes(t, m.DataDir)
			}

			self, err := os.Executable()
			require.NoError(t, err)
			cmd := exec.Command(self, append([]string{"recover", "--yes"}, e.flags()...)...)
			cmd.Env = append(os.Environ(), "ETCDGUARD_TEST_AS_MAIN=1")
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			require.NoError(t, cmd.Start())
			// Kill it once the first member is restored, while the others are being restored.
			require.Eventually(t, func() bool {
				markers, _ := filepath.Glob(filepath.Join(filepath.Dir(e.c.Members()[0].DataDir), ".*.etcdguard-recovery"))
				return len(markers) >= 1
			}, 2*time.Minute, 5*time.Millisecond, "no member was restored: %s", &out)
			require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
			_ = cmd.Wait()
			t.Logf("the first run, killed:\n%s", out.String())

			r := etcdguard(t, append([]string{"recover", "--yes"}, e.flags()...)...)
			require.Equal(t, 0, r.code, r.stderr)
			require.Contains(t, r.stdout, "resuming recovery")
			require.Contains(t, r.stdout, "verified: 3 members healthy")

			// Every member's old data dir was moved aside exactly once, and is as it was.
			for _, m := range e.c.Members() {
				q, err := filepath.Glob(m.DataDir + ".quarantine-*")
				require.NoError(t, err)
				require.Len(t, q, 1, "member %s quarantined once", m.Name)
				require.Equal(t, before[m.Name], treeHashes(t, q[0]), "the quarantined data dir of %s is intact", m.Name)
			}
			// A third run finds a healthy cluster.
			r = etcdguard(t, append([]string{"recover", "--yes"}, e.flags()...)...)
			require.Equal(t, 0, r.code, r.stderr)
			require.Contains(t, r.stdout, "path NONE")
		})
	}
}

// TestRecoverPlanApply makes a plan on one host and applies it member by member, as on three
// hosts; an apply whose snapshot does not match the plan is refused and changes nothing.
func TestRecoverPlanApply(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			e := newRecoverEnv(t, version)
			damagedTwo(t, e, 0)
			planFile := filepath.Join(e.dir, "plan.json")
			r := etcdguard(t, append([]string{"recover", "plan", "--out", planFile}, e.flags()...)...)
			require.Equal(t, 0, r.code, r.stderr)
			require.Contains(t, r.stdout, "path RESTORE")
			p, err := restore.ReadPlan(planFile)
			require.NoError(t, err)
			require.NotEmpty(t, p.Source.SHA256)
			require.NotEmpty(t, p.Token)

			// A plan whose snapshot hash differs is refused, and nothing is touched.
			bad := p
			bad.Source = &restore.Source{}
			*bad.Source = *p.Source
			bad.Source.SHA256 = strings.Repeat("0", 64)
			badFile := filepath.Join(e.dir, "bad-plan.json")
			require.NoError(t, restore.WritePlan(badFile, bad))
			m1 := e.c.Members()[0]
			before := treeHashes(t, m1.DataDir)
			r = etcdguard(t, "recover", "apply", "--plan", badFile, "--member", m1.Name, "--state-dir", filepath.Join(e.dir, "state-bad"), "--target", "file://"+e.repo)
			require.Equal(t, 9, r.code)
			require.Contains(t, r.stderr, "does not match the plan")
			require.Contains(t, r.stderr, bad.Source.SHA256)
			require.Equal(t, before, treeHashes(t, m1.DataDir), "a refused apply touches nothing")

			for _, m := range e.c.Members() {
				r = etcdguard(t, append([]string{"recover", "apply", "--plan", planFile, "--member", m.Name, "--target", "file://" + e.repo, "--state-dir", e.state}, tlsFlags(e.c)...)...)
				require.Equal(t, 0, r.code, r.stderr)
			}
			// Applying the whole plan again restores nothing twice and verifies the cluster.
			r = etcdguard(t, append([]string{"recover", "apply", "--plan", planFile, "-o", "json", "--target", "file://" + e.repo, "--state-dir", e.state}, tlsFlags(e.c)...)...)
			require.Equal(t, 0, r.code, r.stderr)
			var out recoverJSON
			require.NoError(t, json.Unmarshal([]byte(r.stdout), &out))
			require.NotNil(t, out.Verified)
			require.Len(t, out.Verified.HashKV, 3)
			require.Empty(t, out.Quarantined, "nothing quarantined twice")
		})
	}
}

// TestRecoverBadInput: each mistake in the description gives a clear error and changes nothing.
func TestRecoverBadInput(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			e := newRecoverEnv(t, version)
			damagedTwo(t, e, 0)
			snapshotDirs := func() map[string]map[string]string {
				out := map[string]map[string]string{}
				for _, m := range e.c.Members() {
					out[m.Name] = treeHashes(t, m.DataDir)
				}
				return out
			}
			before := snapshotDirs()
			withMember := func(i int, edit func(string) string) []string {
				f := append(tlsFlags(e.c), "--target", "file://"+e.repo, "--state-dir", e.state)
				for j, m := range e.members {
					if j == i {
						m = edit(m)
					}
					f = append(f, "--member", m)
				}
				return f
			}
			m2 := e.c.Members()[1]
			planFile := filepath.Join(e.dir, "plan.json")
			require.Equal(t, 0, etcdguard(t, append([]string{"recover", "plan", "--out", planFile}, e.flags()...)...).code)

			cases := []struct {
				name string
				args []string
				code int
				want string
			}{
				{"unknown member name", []string{"recover", "apply", "--plan", planFile, "--member", "m9", "--state-dir", e.state}, 9, `member "m9" is not in the plan`},
				{"a data dir that does not exist", append([]string{"recover", "--yes"}, withMember(1, func(s string) string {
					return strings.Replace(s, "data-dir="+m2.DataDir, "data-dir=/nonexistent/etcd/m2", 1)
				})...), 9, "the folder of data-dir /nonexistent/etcd/m2 does not exist"},
				{"a backup id that does not exist", []string{"restore", "20991231T000000Z-deadbeef", "--target", "file://" + e.repo,
					"--data-dir", m2.DataDir, "--name", m2.Name, "--initial-cluster", e.c.InitialCluster(), "--initial-advertise-peer-urls", m2.PeerURL, "--quarantine"}, 7, "no target holds backup"},
				{"peer URLs that disagree with the data dirs", append([]string{"recover", "--yes"}, withMember(1, func(s string) string {
					return strings.Replace(s, "peer-url="+m2.PeerURL, "peer-url=https://127.0.0.1:1", 1)
				})...), 9, "records the members' peer URLs as"},
				{"--lost names no member", append([]string{"recover", "--yes", "--lost", "m9"}, e.flags()...), 9, `--lost "m9": no member has that name`},
				{"member without a way to start it", []string{"recover", "--yes", "--member", "name=m1,peer-url=https://127.0.0.1:1,client-url=https://127.0.0.1:2,data-dir=/tmp/m1"}, 2, "exactly one of systemd-unit"},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					r := etcdguard(t, tc.args...)
					require.Equal(t, tc.code, r.code, r.stderr)
					require.Contains(t, r.stderr, tc.want)
					require.Equal(t, before, snapshotDirs(), "nothing was touched")
					q, _ := filepath.Glob(filepath.Join(filepath.Dir(m2.DataDir), "*.quarantine-*"))
					require.Empty(t, q)
				})
			}
		})
	}
}
