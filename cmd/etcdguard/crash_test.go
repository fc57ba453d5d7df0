package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/failpoint"
	"github.com/etcdguard/etcdguard/internal/restore"
	"github.com/etcdguard/etcdguard/internal/testcluster"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

// armFailpoint makes this process (the test binary acting as etcdguard) kill itself with SIGKILL,
// as a power cut would, the first time it reaches the failpoint name; with signal "INT" it sends
// itself SIGINT instead, as an operator's Ctrl-C at that moment, and goes on.
func armFailpoint(name, signal string) {
	if name == "" {
		return
	}
	var once sync.Once
	failpoint.Arm(func(at string) {
		if at != name {
			return
		}
		if signal == "INT" {
			once.Do(func() {
				fmt.Fprintf(os.Stderr, "failpoint %s reached: interrupting etcdguard\n", at)
				_ = syscall.Kill(os.Getpid(), syscall.SIGINT)
				time.Sleep(100 * time.Millisecond) // let the signal be delivered
			})
			return
		}
		fmt.Fprintf(os.Stderr, "failpoint %s reached: killing etcdguard\n", at)
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	})
}

// interruptAt runs etcdguard as its own process, interrupted (SIGINT) at the failpoint, and
// returns its exit code and output; it fails the test if the failpoint was not reached.
func interruptAt(t *testing.T, point string, args ...string) (int, string) {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), "ETCDGUARD_TEST_AS_MAIN=1", "ETCDGUARD_FAILPOINT="+point, "ETCDGUARD_FAILPOINT_SIGNAL=INT")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	t.Logf("etcdguard %s, interrupted at %s:\n%s", strings.Join(args, " "), point, out.String())
	require.Contains(t, out.String(), "failpoint "+point+" reached", "the run reached the failpoint")
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), out.String()
	}
	require.NoError(t, err)
	return 0, out.String()
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
				q := quarantines(t, m.DataDir)
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
			// Damaged for certain: zeroed pages may be free ones, a flipped WAL record is not.
			damageDB(t, m3)
			_, _, err := testcluster.FlipWALRecord(m3.DataDir, 0)
			require.NoError(t, err)
			before := treeHashes(t, m3.DataDir)
			require.NoError(t, e.c.Members()[0].WaitHealthy(t.Context()))
			w := startWriter(t, e.c, "replace-crash")
			crashAt(t, point, append([]string{"recover", "--yes"}, e.flags()...)...)
			acked := w.Halt()
			out := runRecover(t, e)
			require.Equal(t, restore.PathReplace, out.Plan.Path)
			q := quarantines(t, m3.DataDir)
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

// TestSaveCrashAtEveryStep kills snapshot save at every step boundary in turn (a local target and
// MinIO), then runs it again: the second run succeeds, takes over the dead run's lock, leaves no
// scratch snapshot, partial file or incomplete upload, every data object left has its manifest,
// and every backup that counts verifies.
func TestSaveCrashAtEveryStep(t *testing.T) {
	points := []string{
		"save/targets-locked", "save/cleaned-up", "save/mid-stream", "save/streamed", "save/verified",
		"save/manifest-written", "save/manifests-written",
	}
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			c := startCluster(t, version)
			loadData(t, c, 300, 100)
			loadBulk(t, c, 4)
			minio, s3URL := startS3(t)
			for _, point := range points {
				t.Run(point, func(t *testing.T) {
					repo := filepath.Join(t.TempDir(), "repo")
					work := t.TempDir()
					prefix := "crash-" + strings.ReplaceAll(point, "/", "-")
					s3Target := strings.Replace(s3URL, "/prod?", "/"+prefix+"?", 1)
					flags := append([]string{"--target", "file://" + repo, "--target", s3Target, "--work-dir", work}, tlsFlags(c)...)
					crashAt(t, point, append([]string{"snapshot", "save"}, flags...)...)

					r := etcdguard(t, append([]string{"snapshot", "save"}, flags...)...)
					require.Equal(t, 0, r.code, r.stderr)
					r = etcdguard(t, "snapshot", "verify", "--all", "--target", "file://"+repo, "--target", s3Target)
					require.Equal(t, 0, r.code, r.stderr)

					scratch, _ := os.ReadDir(work)
					require.Empty(t, scratch, "no scratch snapshot is left")
					locks, _ := filepath.Glob(filepath.Join(repo, "locks", "*"))
					require.Empty(t, locks, "no lock is left")
					partial, _ := filepath.Glob(filepath.Join(repo, "snapshots", "*", "*.partial-*"))
					require.Empty(t, partial, "no partial file is left")
					dirs, _ := filepath.Glob(filepath.Join(repo, "snapshots", "*"))
					for _, d := range dirs {
						require.FileExists(t, filepath.Join(d, "manifest.json"), "every backup folder left is complete")
					}
					mc := minio.Client(t)
					ids := map[string]bool{}
					manifests := map[string]bool{}
					for obj := range mc.ListObjects(t.Context(), "etcd-backups", minio7ListOptions(prefix+"/snapshots/")) {
						require.NoError(t, obj.Err)
						id := strings.Split(strings.TrimPrefix(obj.Key, prefix+"/snapshots/"), "/")[0]
						ids[id] = true
						if strings.HasSuffix(obj.Key, "/manifest.json") {
							manifests[id] = true
						}
					}
					require.Equal(t, ids, manifests, "every backup left in S3 is complete")
					for u := range mc.ListIncompleteUploads(t.Context(), "etcd-backups", prefix+"/", true) {
						require.NoError(t, u.Err)
						require.Fail(t, "an incomplete multipart upload is left in S3", u.Key)
					}
				})
			}
		})
	}
}
