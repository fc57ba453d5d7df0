package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/failpoint"
	"github.com/etcdguard/etcdguard/internal/restore"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

// armFailpoint makes this process (the test binary acting as etcdguard) kill itself with SIGKILL,
// as a power cut would, the first time it reaches the failpoint name.
func armFailpoint(name string) {
	if name == "" {
		return
	}
	failpoint.Arm(func(at string) {
		if at != name {
			return
		}
		fmt.Fprintf(os.Stderr, "failpoint %s reached: killing etcdguard\n", at)
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	})
}

// crashAt runs etcdguard as its own process, killed with SIGKILL at the failpoint; it fails the
// test if the process was not killed there (a failpoint that is never reached tests nothing).
func crashAt(t *testing.T, point string, args ...string) string {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), "ETCDGUARD_TEST_AS_MAIN=1", "ETCDGUARD_FAILPOINT="+point)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	t.Logf("etcdguard %s, crashed at %s:\n%s", strings.Join(args, " "), point, out.String())
	require.Contains(t, out.String(), "failpoint "+point+" reached", "the run reached the failpoint")
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit)
	require.Equal(t, syscall.SIGKILL, exit.Sys().(syscall.WaitStatus).Signal())
	return out.String()
}

// TestRecoverCrashAtEveryStep kills recover at every step boundary of each path in turn, then
// runs it again: the second run completes, every old data dir was moved aside exactly once and
// is as it was, and nothing half-built is left beside the data dirs. The points alternate between
// etcd 3.5 and 3.6, so that each is crossed on one version and both versions are covered.
func TestRecoverCrashAtEveryStep(t *testing.T) {
	versions := testenv.EtcdVersions()
	restorePoints := []string{
		"recover/plan-saved", "recover/source-copied", "recover/after-fetch-source", "recover/after-stop",
		"restore/staging-built", "restore/quarantined", "restore/marked", "recover/after-restore",
		"recover/after-start", "recover/after-wait-for-quorum", "recover/after-verify",
	}
	replacePoints := []string{
		"recover/plan-saved", "recover/after-stop", "recover/after-quarantine", "recover/after-member-remove-and-add",
		"recover/after-start", "recover/after-wait-for-member", "recover/after-verify",
	}
	for i, point := range restorePoints {
		version := versions[i%len(versions)]
		t.Run("restore path/"+point+"/etcd-"+version, func(t *testing.T) {
			e := newRecoverEnv(t, version)
			damagedTwo(t, e, 0)
			before := map[string]map[string]string{}
			for _, m := range e.c.Members() {
				before[m.Name] = treeHashes(t, m.DataDir)
			}
			crashAt(t, point, append([]string{"recover", "--yes"}, e.flags()...)...)
			out := runRecover(t, e)
			require.Equal(t, restore.PathRestore, out.Plan.Path)
			for _, m := range e.c.Members() {
				q, err := filepath.Glob(m.DataDir + ".quarantine-*")
				require.NoError(t, err)
				require.Len(t, q, 1, "member %s quarantined once", m.Name)
				require.Equal(t, before[m.Name], treeHashes(t, q[0]), "the quarantined data dir of %s is intact", m.Name)
				staging, _ := filepath.Glob(filepath.Join(filepath.Dir(m.DataDir), "."+filepath.Base(m.DataDir)+".etcdguard-restore-*"))
				require.Empty(t, staging, "no half-built restore is left")
			}
			requireStateClean(t, e)
		})
	}
	for i, point := range replacePoints {
		version := versions[(i+1)%len(versions)]
		t.Run("replace path/"+point+"/etcd-"+version, func(t *testing.T) {
			e := newRecoverEnv(t, version)
			loadData(t, e.c, 200, 100)
			m3 := e.c.Members()[2]
			require.NoError(t, m3.Kill())
			damageDB(t, m3.DataDir)
			before := treeHashes(t, m3.DataDir)
			require.NoError(t, e.c.Members()[0].WaitHealthy(t.Context()))
			w := startWriter(t, e.c, "replace-crash")
			crashAt(t, point, append([]string{"recover", "--yes"}, e.flags()...)...)
			acked := w.Halt()
			out := runRecover(t, e)
			require.Equal(t, restore.PathReplace, out.Plan.Path)
			q, err := filepath.Glob(m3.DataDir + ".quarantine-*")
			require.NoError(t, err)
			require.Len(t, q, 1, "the damaged member is quarantined once")
			require.Equal(t, before, treeHashes(t, q[0]), "its old data dir is intact")
			require.Equal(t, len(acked), present(t, e.c, acked), "every acknowledged write survives")
			requireStateClean(t, e)
		})
	}
}

// requireStateClean checks that a finished recovery left its plan done and no scratch copy of
// its source in the state dir.
func requireStateClean(t *testing.T, e *recoverEnv) {
	t.Helper()
	done, _ := filepath.Glob(filepath.Join(e.state, "recovery-*.done.json"))
	require.Len(t, done, 1, "one finished plan")
	src, _ := filepath.Glob(filepath.Join(e.state, "*.db*"))
	require.Empty(t, src, "no copy of the source is left")
}
