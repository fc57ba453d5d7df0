package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/cluster"
	"github.com/etcdguard/etcdguard/internal/restore"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

// These tests reproduce the recovery defects found when etcdguard was tried as a hostile
// operator would (issue 8), each on real 3-member TLS clusters of etcd 3.5 and 3.6.

// memberFlag describes member i of the environment with some fields replaced.
func (e *recoverEnv) memberFlag(i int, set map[string]string) string {
	v := e.members[i]
	for k, val := range set {
		m, err := cluster.ParseMemberFlag(v)
		if err != nil {
			panic(err)
		}
		old := map[string]string{"data-dir": m.DataDir, "stop-command": m.StopCommand, "start-command": m.StartCommand, "peer-url": m.PeerURL}[k]
		if old != "" {
			v = strings.Replace(v, k+"="+old, k+"="+val, 1)
		} else {
			v += "," + k + "=" + val
		}
	}
	return v
}

func quarantines(t *testing.T, dataDir string) []string {
	t.Helper()
	q, err := filepath.Glob(dataDir + ".quarantine-*")
	require.NoError(t, err)
	return q
}

// TestRecoverLeavesOtherHostsAlone: a member declared on another host, with the same data dir
// and stop command as a member of this host (as every kubeadm host has), is never stopped,
// quarantined or restored from here; recover does this host's part and says what to run there.
func TestRecoverLeavesOtherHostsAlone(t *testing.T) {
	const other = "cp3.other-host.invalid"
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			t.Run("replace path: the member of this host keeps running", func(t *testing.T) {
				e := newRecoverEnv(t, version)
				loadData(t, e.c, 100, 50)
				ms := e.c.Members()
				require.NoError(t, ms[2].Kill())
				require.NoError(t, ms[0].WaitHealthy(t.Context()))
				pid := ms[0].PID()
				m3 := e.memberFlag(2, map[string]string{
					"host": other, "data-dir": ms[0].DataDir, "stop-command": fmt.Sprintf("kill -KILL %d", pid),
				})
				r := etcdguard(t, append([]string{"recover", "--yes"}, e.flagsWith(e.members[0], e.members[1], m3)...)...)
				require.Equal(t, 12, r.code, r.stderr)
				require.Contains(t, r.stderr, "on host "+other+" run: etcdguard recover apply --plan "+e.state)
				require.Contains(t, r.stderr, "--member m3")
				require.True(t, ms[0].Running(), "the member of this host was not stopped")
				require.Equal(t, pid, ms[0].PID())
				require.Empty(t, quarantines(t, ms[0].DataDir), "its data dir was not moved")
				require.NoError(t, ms[0].WaitHealthy(t.Context()), "the cluster keeps its quorum")

				// The other host does its part (here: m3 is started again), and recover run here
				// again carries the plan on and verifies the cluster.
				require.NoError(t, ms[2].Restart(t.Context()))
				r = etcdguard(t, append([]string{"recover", "--yes"}, e.flagsWith(e.members[0], e.members[1], m3)...)...)
				require.Equal(t, 0, r.code, r.stderr)
				require.Contains(t, r.stdout, "resuming recovery")
				require.Contains(t, r.stdout, "verified: 3 members healthy")
				require.Equal(t, pid, ms[0].PID(), "the member of this host was never stopped")
			})

			t.Run("restore path with --lost: one restore per data dir of this host", func(t *testing.T) {
				e := newRecoverEnv(t, version)
				damagedTwo(t, e, 0)
				ms := e.c.Members()
				m3 := e.memberFlag(2, map[string]string{"host": other, "data-dir": ms[0].DataDir})
				r := etcdguard(t, append([]string{"recover", "--yes", "--lost", "m3"}, e.flagsWith(e.members[0], e.members[1], m3)...)...)
				require.Equal(t, 12, r.code, r.stderr)
				require.Contains(t, r.stderr, "on host "+other+" run: etcdguard recover apply")
				require.Len(t, quarantines(t, ms[0].DataDir), 1, "the data dir of m1 was restored once")
				require.Len(t, quarantines(t, ms[1].DataDir), 1)
				require.Empty(t, quarantines(t, ms[2].DataDir), "m3's own data dir is not this host's business")
				marker, err := os.ReadFile(filepath.Join(filepath.Dir(ms[0].DataDir), "."+filepath.Base(ms[0].DataDir)+".etcdguard-recovery"))
				require.NoError(t, err)
				require.NotEmpty(t, bytes.TrimSpace(marker))
			})

			t.Run("apply for a member of another host is refused", func(t *testing.T) {
				e := newRecoverEnv(t, version)
				damagedTwo(t, e, 0)
				ms := e.c.Members()
				m3 := e.memberFlag(2, map[string]string{"host": other, "data-dir": ms[0].DataDir})
				planFile := filepath.Join(e.dir, "plan.json")
				r := etcdguard(t, append([]string{"recover", "plan", "--out", planFile, "--lost", "m3"}, e.flagsWith(e.members[0], e.members[1], m3)...)...)
				require.Equal(t, 0, r.code, r.stderr)
				before := treeHashes(t, ms[0].DataDir)
				r = etcdguard(t, append([]string{"recover", "apply", "--plan", planFile, "--member", "m3", "--state-dir", e.state}, tlsFlags(e.c)...)...)
				require.Equal(t, 12, r.code, r.stderr)
				require.Contains(t, r.stderr, "member m3 runs on host "+other)
				require.Equal(t, before, treeHashes(t, ms[0].DataDir), "nothing was touched")
			})
		})
	}
}

// TestRecoverStalePlan: a plan whose run failed before touching anything (no age identity for an
// encrypted backup) is not carried on once the cluster has changed (brought back by hand, new
// keys), nor once it is older than --max-plan-age; --new-plan sets it aside.
func TestRecoverStalePlan(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			e := newRecoverEnv(t, version)
			id, err := age.GenerateX25519Identity()
			require.NoError(t, err)
			idFile := filepath.Join(e.dir, "backup.key")
			require.NoError(t, os.WriteFile(idFile, []byte(id.String()+"\n"), 0o600))
			loadData(t, e.c, 200, 100)
			saveJSON(t, 0, append([]string{"--target", "file://" + e.repo, "--age-recipient", id.Recipient().String()}, tlsFlags(e.c)...)...)
			powerCut(t, e.c)
			for _, m := range e.c.Members() {
				damageDB(t, m)
			}

			r := etcdguard(t, append([]string{"recover", "--yes"}, e.flags()...)...)
			require.NotEqual(t, 0, r.code, "without the identity the backup cannot be read")
			plans, _ := filepath.Glob(filepath.Join(e.state, "recovery-*.json"))
			require.Len(t, plans, 1, "an unfinished plan is kept")

			// Too old: refused whatever the cluster looks like.
			later := func() time.Time { return time.Now().Add(13 * time.Hour) }
			var out, errb bytes.Buffer
			code := runAt(append([]string{"recover", "--yes", "--age-identity", idFile}, e.flags()...), &out, &errb, later)
			require.Equal(t, 9, code, errb.String())
			require.Contains(t, errb.String(), "more than 12h0m0s")
			require.Contains(t, errb.String(), "--new-plan")

			// The operator brings the cluster back by hand and writes new keys.
			restoreByHand(t, e, "/registry/configmaps/ns/written-after-the-hand-restore", "--age-identity", idFile)
			byHand := map[string][]string{}
			for _, m := range e.c.Members() {
				byHand[m.Name] = quarantines(t, m.DataDir)
			}

			r = etcdguard(t, append([]string{"recover", "--yes", "--age-identity", idFile}, e.flags()...)...)
			require.Equal(t, 9, r.code, r.stderr)
			require.Contains(t, r.stderr, "the cluster changed since the recovery plan")
			require.Contains(t, r.stderr, "when planned it did not answer; data dir damaged")
			require.Contains(t, r.stderr, "now it answered with a leader")
			for _, m := range e.c.Members() {
				require.True(t, m.Running(), "member %s was not stopped", m.Name)
				require.Equal(t, byHand[m.Name], quarantines(t, m.DataDir), "member %s's data dir was not moved again", m.Name)
			}
			require.Equal(t, 1, present(t, e.c, []string{"/registry/configmaps/ns/written-after-the-hand-restore"}), "the new key is still there")

			// A new plan finds the healthy cluster; the stale plan is kept, set aside.
			r = etcdguard(t, append([]string{"recover", "--yes", "--new-plan", "--age-identity", idFile}, e.flags()...)...)
			require.Equal(t, 0, r.code, r.stderr)
			require.Contains(t, r.stdout, "path NONE")
			require.Contains(t, r.stdout, "unfinished plan set aside")
			set, _ := filepath.Glob(filepath.Join(e.state, "recovery-*.superseded.json"))
			require.Len(t, set, 1)
		})
	}
}

// TestRestoreRefusesRunningMember: restore --quarantine never moves the data dir of a running
// etcd (it would keep acknowledging writes into the moved folder).
func TestRestoreRefusesRunningMember(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			c := startCluster(t, version)
			loadData(t, c, 100, 50)
			repo := filepath.Join(t.TempDir(), "repo")
			saveJSON(t, 0, append([]string{"--target", "file://" + repo}, tlsFlags(c)...)...)
			m := c.Members()[0]
			r := etcdguard(t, "restore", "latest", "--target", "file://"+repo, "--data-dir", m.DataDir, "--name", m.Name,
				"--initial-cluster", c.InitialCluster(), "--initial-advertise-peer-urls", m.PeerURL, "--quarantine")
			require.Equal(t, 9, r.code, r.stderr)
			require.Contains(t, r.stderr, "locked by a running process")
			require.Empty(t, quarantines(t, m.DataDir))
			require.True(t, m.Running())
			require.NoError(t, m.WaitHealthy(t.Context()))
		})
	}
}

// TestRecoverCleansPaths: data dirs given with a trailing slash are the same data dirs: the
// restore markers go beside them, and a second run finds the cluster healthy instead of
// restoring again.
func TestRecoverCleansPaths(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			e := newRecoverEnv(t, version)
			damagedTwo(t, e, 0)
			var members []string
			for i, m := range e.c.Members() {
				members = append(members, e.memberFlag(i, map[string]string{"data-dir": m.DataDir + "/"}))
			}
			r := etcdguard(t, append([]string{"recover", "--yes"}, e.flagsWith(members...)...)...)
			require.Equal(t, 0, r.code, r.stderr)
			for _, m := range e.c.Members() {
				require.Len(t, quarantines(t, m.DataDir), 1)
				require.NoFileExists(t, filepath.Join(m.DataDir, "."+filepath.Base(m.DataDir)+".etcdguard-recovery"), "no marker inside the data dir")
				inside, _ := filepath.Glob(filepath.Join(m.DataDir, ".*etcdguard*"))
				require.Empty(t, inside, "nothing of etcdguard's inside the data dir")
			}
			r = etcdguard(t, append([]string{"recover", "--yes"}, e.flagsWith(members...)...)...)
			require.Equal(t, 0, r.code, r.stderr)
			require.Contains(t, r.stdout, "path NONE")
		})
	}
}

// TestRecoverPlanFiles: plan files are checked before they are used: an id that is not an
// etcdguard id never names a file, and a damaged unfinished plan names itself and does not block
// --new-plan.
func TestRecoverPlanFiles(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			e := newRecoverEnv(t, version)
			damagedTwo(t, e, 0)
			planFile := filepath.Join(e.dir, "plan.json")
			r := etcdguard(t, append([]string{"recover", "plan", "--out", planFile}, e.flags()...)...)
			require.Equal(t, 0, r.code, r.stderr)
			p, err := restore.ReadPlan(planFile)
			require.NoError(t, err)

			t.Run("a plan id with ../ writes nothing outside --state-dir", func(t *testing.T) {
				evil := p
				evil.ID = "../../escaped"
				evilFile := filepath.Join(e.dir, "evil.json")
				require.NoError(t, restore.WritePlan(evilFile, evil))
				state := filepath.Join(e.dir, "deep", "a", "state")
				r := etcdguard(t, append([]string{"recover", "apply", "--plan", evilFile, "--state-dir", state}, tlsFlags(e.c)...)...)
				require.Equal(t, 2, r.code, r.stderr)
				require.Contains(t, r.stderr, "is not an etcdguard id")
				require.NoFileExists(t, filepath.Join(e.dir, "deep", "recovery-..", "escaped.json"))
				escaped, _ := filepath.Glob(filepath.Join(e.dir, "deep", "*escaped*"))
				require.Empty(t, escaped)
				require.NoDirExists(t, state)
			})

			t.Run("a damaged unfinished plan names itself and --new-plan sets it aside", func(t *testing.T) {
				require.NoError(t, os.MkdirAll(e.state, 0o700))
				damaged := filepath.Join(e.state, "recovery-20261201T000000Z-deadbeef.json")
				require.NoError(t, os.WriteFile(damaged, []byte(`{"format": 1, "id": "20261201T0`), 0o600))
				r := etcdguard(t, append([]string{"recover", "--yes"}, e.flags()...)...)
				require.Equal(t, 9, r.code, r.stderr)
				require.Contains(t, r.stderr, damaged)
				require.Contains(t, r.stderr, "--new-plan")
				r = etcdguard(t, append([]string{"recover", "--yes", "--new-plan"}, e.flags()...)...)
				require.Equal(t, 0, r.code, r.stderr)
				kept, err := os.ReadFile(strings.TrimSuffix(damaged, ".json") + ".superseded.json")
				require.NoError(t, err)
				require.Equal(t, `{"format": 1, "id": "20261201T0`, string(kept), "the damaged plan is kept as it was")
			})
		})
	}
}

// TestRecoverRefusesZombieMembers: a member of the old cluster that the description leaves out
// (here a learner added and never started) is found before anything is changed: the members'
// databases record it. After a recovery, the verification also checks that the member list is
// exactly the planned one (memberListProblems, table-tested in internal/restore; every recovery
// test here passes through it).
func TestRecoverRefusesZombieMembers(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			e := newRecoverEnv(t, version)
			loadData(t, e.c, 100, 50)
			cli, err := e.c.Client(t.Context())
			require.NoError(t, err)
			defer cli.Close()
			// etcd refuses a new member until its members have been connected for a few seconds.
			require.Eventually(t, func() bool {
				_, err = cli.MemberAddAsLearner(t.Context(), []string{"https://127.0.0.1:9"})
				return err == nil
			}, 30*time.Second, 500*time.Millisecond)
			time.Sleep(300 * time.Millisecond) // let the members commit their databases
			powerCut(t, e.c)
			before := map[string]map[string]string{}
			for _, m := range e.c.Members() {
				before[m.Name] = treeHashes(t, m.DataDir)
			}

			r := etcdguard(t, append([]string{"recover", "--yes"}, e.flags()...)...)
			require.Equal(t, 9, r.code, r.stderr)
			require.Contains(t, r.stderr, "https://127.0.0.1:9")
			for _, m := range e.c.Members() {
				require.Equal(t, before[m.Name], treeHashes(t, m.DataDir), "nothing was touched")
			}
		})
	}
}
