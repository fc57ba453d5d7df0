package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/testcluster"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

// secretMarker is written into every value; no log line may ever contain it, nor any key.
const secretMarker = "TOPSECRET-b64payload"

// logs collects everything etcdguard wrote to stderr in this test binary, to check that no key
// or value of etcd ever appears in a log line.
var logs = &lockedBuffer{}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type result struct {
	code           int
	stdout, stderr string
}

// etcdguard runs the CLI in-process, as main does, and returns its exit code and output.
func etcdguard(t *testing.T, args ...string) result {
	t.Helper()
	return etcdguardAt(t, time.Now, args...)
}

// etcdguardAt is etcdguard with a clock: tests play clock skew, certificate expiry and days
// passing.
func etcdguardAt(t *testing.T, now func() time.Time, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := runAt(args, &out, &errb, now)
	logs.Write(errb.Bytes())
	t.Logf("etcdguard %s (at %s)\n-> exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), now().UTC().Format(time.RFC3339), code, out.String(), errb.String())
	return result{code, out.String(), errb.String()}
}

func startCluster(t *testing.T, version string) *testcluster.Cluster {
	t.Helper()
	c, err := testcluster.Start(t.Context(), testcluster.Options{
		Size: 3, TLS: true, Command: []string{testenv.Etcd(t, version, "etcd")}, Dir: t.TempDir(),
	})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// loadData writes n Kubernetes-shaped keys, each value carrying secretMarker and padding bytes.
func loadData(t *testing.T, c *testcluster.Cluster, n, valueSize int) {
	t.Helper()
	cli, err := c.Client(t.Context())
	require.NoError(t, err)
	defer cli.Close()
	pad := strings.Repeat("x", valueSize)
	resources := []string{"pods", "secrets", "configmaps", "deployments"}
	for lo := 0; lo < n; lo += 100 {
		var ops []clientv3.Op
		for i := lo; i < min(lo+100, n); i++ {
			key := fmt.Sprintf("/registry/%s/ns-%d/obj-%05d", resources[i%len(resources)], i%7, i)
			ops = append(ops, clientv3.OpPut(key, fmt.Sprintf(`{"data":"%s-%d","pad":"%s"}`, secretMarker, i, pad)))
		}
		_, err := cli.Txn(t.Context()).Then(ops...).Commit()
		require.NoError(t, err)
	}
	// Some history: deletes and overwrites, so that the key count differs from the revision.
	_, err = cli.Delete(t.Context(), "/registry/pods/ns-0/", clientv3.WithPrefix())
	require.NoError(t, err)
	_, err = cli.Put(t.Context(), "/registry/secrets/ns-1/obj-00001", secretMarker+"-overwritten")
	require.NoError(t, err)
}

func tlsFlags(c *testcluster.Cluster) []string {
	return []string{"--endpoints", c.Endpoints()[0], "--cacert", c.CAFile, "--cert", c.ClientCertFile, "--key", c.ClientKeyFile}
}

func startS3(t *testing.T) (*testenv.MinIOServer, string) {
	t.Helper()
	m := testenv.StartMinIO(t)
	m.CreateBucket(t, "etcd-backups")
	m.SetAWSEnv(t)
	return m, "s3://etcd-backups/prod?endpoint=" + m.Endpoint + "&region=us-east-1"
}

type listOutput struct {
	Backups []struct {
		ID         string   `json:"id"`
		Copies     []string `json:"copies"`
		Revision   int64    `json:"revision"`
		VerifiedAt string   `json:"verified_at"`
	} `json:"backups"`
	Unreadable map[string]string `json:"unreadable_targets"`
}

func list(t *testing.T, args ...string) listOutput {
	t.Helper()
	r := etcdguard(t, append([]string{"snapshot", "list", "-o", "json"}, args...)...)
	require.Equal(t, 0, r.code, r.stderr)
	var out listOutput
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out))
	return out
}

func saveJSON(t *testing.T, wantCode int, args ...string) repository.Manifest {
	t.Helper()
	r := etcdguard(t, append([]string{"snapshot", "save", "-o", "json"}, args...)...)
	require.Equal(t, wantCode, r.code, r.stderr)
	var out struct {
		Manifest repository.Manifest `json:"manifest"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out), r.stdout)
	return out.Manifest
}

// TestBackupRoundTrip is the foundation's main promise, on etcd 3.5 and 3.6: a backup of a
// 3-member TLS cluster lands in a local, an offline and an S3 target, verifies, comes back as a
// file etcdutl agrees with, and restores into a member that serves the same keys.
func TestBackupRoundTrip(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			c := startCluster(t, version)
			loadData(t, c, 2000, 200)
			_, s3URL := startS3(t)
			repo := filepath.Join(t.TempDir(), "repo")
			tape := filepath.Join(t.TempDir(), "tape")
			require.NoError(t, os.Mkdir(tape, 0o700))
			targets := []string{"--target", "file://" + repo, "--target", "file://" + tape + "?offline=true&media=tape", "--target", s3URL}
			flags := append(tlsFlags(c), targets...)

			m := saveJSON(t, 0, flags...)
			require.Len(t, m.Targets, 3)
			for _, tr := range m.Targets {
				require.Equal(t, repository.StateStored, tr.State, tr.Error)
			}
			require.NotEmpty(t, m.Source.Reason)
			require.Contains(t, m.Source.Reason, "highest applied index")

			l := list(t, targets...)
			require.Len(t, l.Backups, 1)
			require.Equal(t, m.ID, l.Backups[0].ID)
			require.ElementsMatch(t, []string{"local", "tape", "s3"}, l.Backups[0].Copies)
			require.Equal(t, m.Verification.At.Format("2006-01-02T15:04:05Z"), l.Backups[0].VerifiedAt)
			require.Equal(t, []string{"etcd-sha256-trailer", "bbolt-check", "status"}, m.Verification.Checks)

			r := etcdguard(t, append([]string{"snapshot", "verify", "--all"}, targets...)...)
			require.Equal(t, 0, r.code, r.stderr)
			require.Contains(t, r.stdout, "3 copies checked, 0 bad")

			// Each target alone gives a good copy.
			for _, tg := range []string{"file://" + repo, "file://" + tape + "?offline=true", s3URL} {
				out := filepath.Join(t.TempDir(), "snap.db")
				r = etcdguard(t, "snapshot", "get", m.ID, "--output", out, "--target", tg)
				require.Equal(t, 0, r.code, r.stderr)
			}
			out := filepath.Join(t.TempDir(), "snapshot.db")
			r = etcdguard(t, "snapshot", "get", "latest", "--output", out, "--target", s3URL)
			require.Equal(t, 0, r.code, r.stderr)
			r = etcdguard(t, "snapshot", "get", "latest", "--output", out, "--target", s3URL)
			require.Equal(t, 2, r.code, "an existing file is never overwritten")

			// etcdutl agrees with the manifest. etcdutl 3.6 is used for both versions: 3.5's
			// counts every bbolt key of every bucket as a "key", 3.6's counts live etcd keys, as
			// etcdguard does (and 3.6's etcdutl reads 3.5 snapshots).
			etcdutl := testenv.Etcd(t, "3.6", "etcdutl")
			st := etcdutlStatus(t, etcdutl, out)
			require.Equal(t, m.Status.Hash, st.Hash)
			require.Equal(t, m.Revision, st.Revision)
			require.Equal(t, m.Status.TotalKey, st.TotalKey)
			require.Equal(t, m.Status.TotalSize, st.TotalSize)

			// etcdutl restores it, and a member started on it serves the keys as they were.
			want := readAll(t, c, m.Revision)
			got := restoreAndRead(t, version, out)
			require.Equal(t, len(want), len(got))
			require.Equal(t, want, got)

			// A plain etcdctl snapshot: etcdguard's status agrees with etcdutl's.
			plain := filepath.Join(t.TempDir(), "etcdctl.db")
			outb, err := exec.CommandContext(t.Context(), testenv.Etcd(t, version, "etcdctl"), "snapshot", "save", plain,
				"--endpoints", c.Endpoints()[1], "--cacert", c.CAFile, "--cert", c.ClientCertFile, "--key", c.ClientKeyFile).CombinedOutput()
			require.NoError(t, err, string(outb))
			r = etcdguard(t, "snapshot", "status", plain, "-o", "json")
			require.Equal(t, 0, r.code, r.stderr)
			var fst struct {
				Trailer string `json:"etcd_trailer"`
				Status  struct {
					Hash     uint32 `json:"hash"`
					Revision int64  `json:"revision"`
					TotalKey int    `json:"total_key"`
				} `json:"status"`
			}
			require.NoError(t, json.Unmarshal([]byte(r.stdout), &fst))
			ust := etcdutlStatus(t, etcdutl, plain)
			require.Equal(t, "ok", fst.Trailer)
			require.Equal(t, ust.Hash, fst.Status.Hash)
			require.Equal(t, ust.Revision, fst.Status.Revision)
			require.Equal(t, ust.TotalKey, fst.Status.TotalKey)

			// etcdctl's environment variables work in place of the flags.
			t.Setenv("ETCDCTL_ENDPOINTS", strings.Join(c.Endpoints(), ","))
			t.Setenv("ETCDCTL_CACERT", c.CAFile)
			t.Setenv("ETCDCTL_CERT", c.ClientCertFile)
			t.Setenv("ETCDCTL_KEY", c.ClientKeyFile)
			r = etcdguard(t, "snapshot", "save", "--target", "file://"+repo)
			require.Equal(t, 0, r.code, r.stderr)
			require.Len(t, list(t, "--target", "file://"+repo).Backups, 2)

			checkPermissions(t, repo)
			checkPermissions(t, tape)
			requireNoSecrets(t, logs.String())
		})
	}
}

type utlStatus struct {
	Hash      uint32 `json:"hash"`
	Revision  int64  `json:"revision"`
	TotalKey  int    `json:"totalKey"`
	TotalSize int64  `json:"totalSize"`
}

func etcdutlStatus(t *testing.T, etcdutl, file string) utlStatus {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), etcdutl, "snapshot", "status", file, "-w", "json").Output()
	require.NoError(t, err)
	var st utlStatus
	require.NoError(t, json.Unmarshal(out, &st), string(out))
	return st
}

func readAll(t *testing.T, c *testcluster.Cluster, rev int64) map[string]string {
	t.Helper()
	cli, err := c.Client(t.Context())
	require.NoError(t, err)
	defer cli.Close()
	resp, err := cli.Get(t.Context(), "", clientv3.WithPrefix(), clientv3.WithRev(rev))
	require.NoError(t, err)
	kv := map[string]string{}
	for _, x := range resp.Kvs {
		kv[string(x.Key)] = string(x.Value)
	}
	return kv
}

// restoreAndRead restores a snapshot file with etcdutl, starts a single member on it, and reads
// every key.
func restoreAndRead(t *testing.T, version, file string) map[string]string {
	t.Helper()
	ports := freePorts(t, 3)
	peer := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	dataDir := filepath.Join(t.TempDir(), "restored")
	out, err := exec.CommandContext(t.Context(), testenv.Etcd(t, version, "etcdutl"), "snapshot", "restore", file,
		"--data-dir", dataDir, "--name", "r1", "--initial-cluster", "r1="+peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster-token", "restored").CombinedOutput()
	require.NoError(t, err, string(out))
	return serveAndRead(t, version, dataDir, "restored", ports, "")
}

// serveAndRead starts a one-member etcd named r1 on a restored data dir, with the restore's
// token and the ports (peer, client, metrics), and reads every key under prefix.
func serveAndRead(t *testing.T, version, dataDir, token string, ports []int, prefix string) map[string]string {
	t.Helper()
	peer := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	client := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	etcd := exec.Command(testenv.Etcd(t, version, "etcd"), "--name", "r1", "--data-dir", dataDir,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "r1="+peer,
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-metrics-urls", fmt.Sprintf("http://127.0.0.1:%d", ports[2]), "--initial-cluster-token", token)
	elog := &lockedBuffer{}
	etcd.Stdout, etcd.Stderr = elog, elog
	require.NoError(t, etcd.Start())
	t.Cleanup(func() { _ = etcd.Process.Kill(); _ = etcd.Wait() })
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{client}, DialTimeout: 5 * time.Second})
	require.NoError(t, err)
	defer cli.Close()
	var resp *clientv3.GetResponse
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		resp, err = cli.Get(ctx, prefix, clientv3.WithPrefix())
		return err == nil
	}, 30*time.Second, 200*time.Millisecond, "restored member never served: %v\n%s", err, elog)
	kv := map[string]string{}
	for _, x := range resp.Kvs {
		kv[string(x.Key)] = string(x.Value)
	}
	return kv
}

// freePorts returns ports nothing listens on, drawn as testcluster draws them (below the
// ephemeral range, where outgoing connections cannot take them meanwhile).
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	ports, err := testcluster.FreePorts(n)
	require.NoError(t, err)
	return ports
}

// checkPermissions asserts that every file under dir is 0600 and every folder 0700.
func checkPermissions(t *testing.T, dir string) {
	t.Helper()
	n := 0
	require.NoError(t, filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		require.NoError(t, err)
		info, err := d.Info()
		require.NoError(t, err)
		if path == dir {
			return nil
		}
		n++
		if d.IsDir() {
			require.Equal(t, fs.FileMode(0o700), info.Mode().Perm(), path)
		} else {
			require.Equal(t, fs.FileMode(0o600), info.Mode().Perm(), path)
		}
		return nil
	}))
	require.Positive(t, n)
}

func strconvItoa(i int) string { return fmt.Sprint(i) }

func execCommand(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), name, args...).CombinedOutput()
	return string(out), err
}

// requireNoSecrets fails if any key or value written by the tests appears in etcdguard's output,
// plain or hex-encoded (as bbolt prints keys).
func requireNoSecrets(t *testing.T, out string) {
	t.Helper()
	for _, s := range []string{secretMarker, "/registry/"} {
		require.NotContains(t, out, s)
		require.NotContains(t, strings.ToLower(out), hex.EncodeToString([]byte(s)))
	}
}
