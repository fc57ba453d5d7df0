package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdguard/etcdguard/internal/etcdx"
	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/snapshot"
	"github.com/etcdguard/etcdguard/internal/testcluster"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

// TestMain lets the test binary act as etcdguard itself when ETCDGUARD_TEST_AS_MAIN is set, so
// that tests can run it as a separate process and kill it.
func TestMain(m *testing.M) {
	if os.Getenv("ETCDGUARD_TEST_AS_MAIN") == "1" {
		armFailpoint(os.Getenv("ETCDGUARD_FAILPOINT"), os.Getenv("ETCDGUARD_FAILPOINT_SIGNAL"))
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	// What a host's own PKI holds must not decide the tests' exit codes.
	os.Setenv("ETCDGUARD_PKI_DIR", "/nonexistent/etcdguard-test-pki")
	os.Exit(m.Run())
}

// loadBulk writes about mib MiB of values, so that streaming a snapshot takes a while.
func loadBulk(t *testing.T, c *testcluster.Cluster, mib int) {
	t.Helper()
	cli, err := c.Client(t.Context())
	require.NoError(t, err)
	defer cli.Close()
	val := strings.Repeat(secretMarker, 100<<10/len(secretMarker)) // ~100 KiB
	for i := 0; i < mib*10; i += 8 {
		var ops []clientv3.Op
		for j := i; j < i+8; j++ {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("/registry/configmaps/bulk/cm-%05d", j), val))
		}
		_, err := cli.Txn(t.Context()).Then(ops...).Commit()
		require.NoError(t, err)
	}
}

// TestSaveInterrupted kills things mid-stream: etcdguard itself (the next run cleans up and
// succeeds), and the source member (the save is retried on another member).
func TestSaveInterrupted(t *testing.T) {
	c := startCluster(t, "3.6")
	loadBulk(t, c, 96)

	t.Run("etcdguard SIGKILLed mid-save", func(t *testing.T) {
		repo := filepath.Join(t.TempDir(), "repo")
		self, err := os.Executable()
		require.NoError(t, err)
		args := append([]string{"snapshot", "save", "--compression", "none", "--target", "file://" + repo}, tlsFlags(c)...)
		cmd := exec.Command(self, args...)
		cmd.Env = append(os.Environ(), "ETCDGUARD_TEST_AS_MAIN=1")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		require.NoError(t, cmd.Start())
		// Kill it once part of the data object is on disk.
		var partial string
		require.Eventually(t, func() bool {
			files, _ := filepath.Glob(filepath.Join(repo, "snapshots", "*", "snapshot.db.partial-*"))
			for _, f := range files {
				if st, err := os.Stat(f); err == nil && st.Size() > 0 {
					partial = f
					return true
				}
			}
			return false
		}, 60*time.Second, time.Millisecond, "no partial upload appeared: %s", &out)
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		_ = cmd.Wait()
		requireNoSecrets(t, out.String())
		locks, _ := filepath.Glob(filepath.Join(repo, "locks", "*"))
		require.NotEmpty(t, locks, "the killed run left its lock behind")
		require.Empty(t, list(t, "--target", "file://"+repo).Backups, "an interrupted backup is never listed")

		r := etcdguard(t, append([]string{"snapshot", "save", "--compression", "none", "--target", "file://" + repo}, tlsFlags(c)...)...)
		require.Equal(t, 0, r.code, r.stderr)
		require.Contains(t, r.stderr, "taking over a stale repository lock")
		require.Contains(t, r.stderr, "removed objects of incomplete backups")
		_, err = os.Stat(partial)
		require.ErrorIs(t, err, os.ErrNotExist, "the partial upload was cleaned up")
		l := list(t, "--target", "file://"+repo)
		require.Len(t, l.Backups, 1)
		dirs, _ := filepath.Glob(filepath.Join(repo, "snapshots", "*"))
		require.Len(t, dirs, 1, "only the complete backup is left")
		r = etcdguard(t, "snapshot", "verify", "--all", "--target", "file://"+repo)
		require.Equal(t, 0, r.code)
	})

	t.Run("source member SIGKILLed mid-stream", func(t *testing.T) {
		repo := filepath.Join(t.TempDir(), "repo")
		target, err := repository.ParseTarget("file://" + repo)
		require.NoError(t, err)
		rec := &sourceRecorder{}
		var once sync.Once
		var killed string
		res, err := snapshot.Save(t.Context(), snapshot.SaveOptions{
			Etcd: etcdx.Config{
				Endpoints: c.Endpoints(), CACert: c.CAFile, Cert: c.ClientCertFile, Key: c.ClientKeyFile,
			},
			Targets: []repository.Target{target},
			Codec:   repository.Codec{Compression: repository.CompressionZstd},
			Logger:  slog.New(rec),
			Progress: func(done, _ int64) {
				if done < 1<<20 {
					return
				}
				once.Do(func() {
					ep := rec.last()
					for _, m := range c.Members() {
						if m.ClientURL == ep {
							killed = ep
							require.NoError(t, m.Kill())
						}
					}
				})
			},
		})
		require.NoError(t, err)
		require.NotEmpty(t, killed)
		require.Len(t, res.Attempts, 2)
		require.Equal(t, killed, res.Attempts[0].Endpoint)
		require.NotEmpty(t, res.Attempts[0].Error)
		require.NotEqual(t, killed, res.Manifest.Source.Endpoint)
		require.Contains(t, res.Manifest.Source.Reason, "retry after "+killed)

		r := etcdguard(t, "snapshot", "verify", "--all", "--target", "file://"+repo)
		require.Equal(t, 0, r.code, r.stderr)
		requireNoSecrets(t, rec.text())
	})
}

// startSave runs `etcdguard snapshot save` as a subprocess and returns once part of the data
// object is stored in the local target repo, so that a signal sent then arrives mid-stream.
func startSave(t *testing.T, repo string, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	self, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(self, append([]string{"snapshot", "save", "--compression", "none", "--target", "file://" + repo}, args...)...)
	cmd.Env = append(os.Environ(), "ETCDGUARD_TEST_AS_MAIN=1")
	out := &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	require.Eventually(t, func() bool {
		files, _ := filepath.Glob(filepath.Join(repo, "snapshots", "*", "snapshot.db.partial-*"))
		for _, f := range files {
			if st, err := os.Stat(f); err == nil && st.Size() > 0 {
				return true
			}
		}
		return false
	}, 60*time.Second, time.Millisecond, "no partial upload appeared: %s", out)
	return cmd, out
}

// TestSaveSignals stops `snapshot save` mid-stream with signals, on etcd 3.6 with a local and
// an S3 (MinIO) target. SIGINT and SIGTERM exit with 130 (they exited with 8, "stored in no
// target") and leave nothing behind; SIGKILL leaves the plain scratch snapshot, which the next
// run sweeps (it stayed on disk, one more per crash).
func TestSaveSignals(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			c := startCluster(t, version)
			loadBulk(t, c, 96)
			minio, s3URL := startS3(t)

			for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
				t.Run(sig.String(), func(t *testing.T) {
					repo := filepath.Join(t.TempDir(), "repo")
					work := t.TempDir()
					prefix := testenv.Prefix(t)
					s3Target := strings.Replace(s3URL, "/prod?", "/"+prefix+"?", 1)
					cmd, out := startSave(t, repo, append([]string{"--target", s3Target, "--work-dir", work}, tlsFlags(c)...)...)
					require.NoError(t, cmd.Process.Signal(sig))
					err := cmd.Wait()
					var exitErr *exec.ExitError
					require.ErrorAs(t, err, &exitErr, "%s", out)
					require.Equal(t, 130, exitErr.ExitCode(), "%s", out)
					require.Contains(t, out.String(), "Error: interrupted by a signal")
					requireNoSecrets(t, out.String())

					left, _ := filepath.Glob(filepath.Join(repo, "snapshots", "*", "*"))
					require.Empty(t, left, "no partial file is left in the local target")
					locks, _ := filepath.Glob(filepath.Join(repo, "locks", "*"))
					require.Empty(t, locks, "the lock is released")
					scratch, _ := os.ReadDir(work)
					require.Empty(t, scratch, "the scratch snapshot is removed")
					mc := minio.Client(t)
					for obj := range mc.ListObjects(t.Context(), "etcd-backups", minio7ListOptions(prefix+"/")) {
						require.NoError(t, obj.Err)
						require.Fail(t, "an object is left in S3", obj.Key)
					}
					for u := range mc.ListIncompleteUploads(t.Context(), "etcd-backups", prefix+"/", true) {
						require.NoError(t, u.Err)
						require.Fail(t, "an incomplete multipart upload is left in S3", u.Key)
					}
				})
			}

			t.Run("SIGKILL, then the next run sweeps the scratch snapshot", func(t *testing.T) {
				repo := filepath.Join(t.TempDir(), "repo")
				work := t.TempDir()
				// A live run's scratch folder (this process's): never swept.
				live, remove, err := snapshot.MakeScratch(work, "save")
				require.NoError(t, err)
				t.Cleanup(remove)
				cmd, out := startSave(t, repo, append([]string{"--work-dir", work}, tlsFlags(c)...)...)
				require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
				_ = cmd.Wait()
				var killed []string
				dirs, _ := filepath.Glob(filepath.Join(work, "etcdguard-save-*"))
				for _, d := range dirs {
					if d != live {
						killed = append(killed, d)
					}
				}
				require.Len(t, killed, 1, "the killed run left its scratch folder: %s", out)
				st, err := os.Stat(filepath.Join(killed[0], "snapshot.db"))
				require.NoError(t, err)
				require.Positive(t, st.Size(), "with a plain snapshot in it")

				r := etcdguard(t, append([]string{"snapshot", "save", "--compression", "none", "--target", "file://" + repo, "--work-dir", work}, tlsFlags(c)...)...)
				require.Equal(t, 0, r.code, r.stderr)
				require.Contains(t, r.stderr, "removed scratch folders of interrupted runs")
				_, err = os.Stat(killed[0])
				require.ErrorIs(t, err, os.ErrNotExist, "the killed run's scratch folder is gone")
				require.DirExists(t, live, "a live run's scratch folder is left alone")
				require.Len(t, list(t, "--target", "file://"+repo).Backups, 1)
			})
		})
	}
}

// sourceRecorder is a slog handler that remembers the endpoint of the last "taking snapshot".
type sourceRecorder struct {
	mu       sync.Mutex
	endpoint string
	all      strings.Builder
}

func (s *sourceRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (s *sourceRecorder) WithAttrs([]slog.Attr) slog.Handler       { return s }
func (s *sourceRecorder) WithGroup(string) slog.Handler            { return s }
func (s *sourceRecorder) Handle(_ context.Context, r slog.Record) error {
	s.mu.Lock()
	s.all.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		s.all.WriteString(" " + a.Key + "=" + a.Value.String())
		return true
	})
	s.all.WriteString("\n")
	s.mu.Unlock()
	if r.Message != "taking snapshot" {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "endpoint" {
			s.mu.Lock()
			s.endpoint = a.Value.String()
			s.mu.Unlock()
		}
		return true
	})
	return nil
}

func (s *sourceRecorder) text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.all.String()
}

func (s *sourceRecorder) last() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.endpoint
}

func minio7ListOptions(prefix string) minio.ListObjectsOptions {
	return minio.ListObjectsOptions{Prefix: prefix, Recursive: true}
}
