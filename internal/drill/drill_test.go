package drill

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdguard/etcdguard/internal/deltalog"
	"github.com/etcdguard/etcdguard/internal/etcdx"
	"github.com/etcdguard/etcdguard/internal/failpoint"
	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/snapshot"
	"github.com/etcdguard/etcdguard/internal/testcluster"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

// etcdguardBin is the etcdguard binary built for the tests: its `etcd` command runs the scratch
// members, as os.Executable() does in etcdguard itself.
var etcdguardBin string

// childEnv names the environment variable that makes the test binary a drill of its own (see
// runChild), for the tests that kill a drill.
const childEnv = "ETCDGUARD_DRILL_TEST_CHILD"

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(runChild(spec))
	}
	dir, err := os.MkdirTemp("", "etcdguard-drill-test-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	etcdguardBin = os.Getenv("ETCDGUARD_BIN")
	if etcdguardBin == "" {
		etcdguardBin = filepath.Join(dir, "etcdguard")
		if out, err := exec.Command("go", "build", "-o", etcdguardBin, "github.com/etcdguard/etcdguard/cmd/etcdguard").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build etcdguard: %v\n%s", err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// childSpec is what a drill run as a child process is given.
type childSpec struct {
	Targets    []repository.Target
	WorkDir    string
	StateDir   string
	EtcdBinary string
	KillAt     string // the failpoint at which the child SIGKILLs itself
}

// runChild runs one drill and SIGKILLs itself at the failpoint spec names.
func runChild(spec string) int {
	var s childSpec
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	failpoint.Arm(func(name string) {
		if name == s.KillAt {
			fmt.Fprintln(os.Stderr, "failpoint", name, "reached: killing the drill")
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	})
	o := Options{Targets: s.Targets, WorkDir: s.WorkDir, StateDir: s.StateDir, EtcdBinary: s.EtcdBinary, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	if _, err := Run(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// fixture is a live 3-member TLS cluster, a backup of it in a local target and in MinIO, and
// the delta log a real writer streamed after it, shipped to MinIO.
type fixture struct {
	c        *testcluster.Cluster
	cli      *clientv3.Client
	minio    *testenv.MinIOServer
	bucket   string
	prefix   string
	targets  []repository.Target
	base     repository.Manifest
	lastRev  int64 // the last revision written, and in the delta log
	liveKeys int64 // the keys the cluster holds at lastRev
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := t.Context()
	c, err := testcluster.Start(ctx, testcluster.Options{Size: 3, TLS: true, Command: []string{testenv.Etcd(t, "3.6", "etcd")}, Dir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	cli, err := c.Client(context.Background()) // read from a cleanup too, after t.Context ends
	require.NoError(t, err)
	t.Cleanup(func() { cli.Close() })
	f := &fixture{c: c, cli: cli, bucket: "drill", prefix: testenv.Prefix(t)}
	for i := range 200 {
		_, err := cli.Put(ctx, fmt.Sprintf("/registry/pods/ns/p%03d", i), strings.Repeat("v", 512))
		require.NoError(t, err)
	}
	lease, err := cli.Grant(ctx, 3600)
	require.NoError(t, err)
	_, err = cli.Put(ctx, "/registry/leases/kube-node-lease/n1", "held", clientv3.WithLease(lease.ID))
	require.NoError(t, err)

	f.minio = testenv.StartMinIO(t)
	f.minio.CreateBucket(t, f.bucket)
	f.minio.SetAWSEnv(t)
	local := repository.Target{Name: "local", URL: "file://" + filepath.Join(t.TempDir(), "repo")}
	s3 := repository.Target{Name: "s3", URL: fmt.Sprintf("s3://%s/%s?endpoint=%s&region=us-east-1", f.bucket, f.prefix, f.minio.Endpoint)}
	f.targets, err = repository.NormalizeTargets([]repository.Target{local, s3})
	require.NoError(t, err)
	ecfg := etcdx.Config{Endpoints: c.Endpoints(), CACert: c.CAFile, Cert: c.ClientCertFile, Key: c.ClientKeyFile}
	saved, err := snapshot.Save(ctx, snapshot.SaveOptions{Etcd: ecfg, Targets: f.targets, WorkDir: t.TempDir(), Codec: repository.Codec{Compression: repository.CompressionZstd}})
	require.NoError(t, err)
	f.base = saved.Manifest

	// The delta log: a real writer on the local target, shipped to MinIO as the agent ships it.
	localRepo, err := repository.Open(ctx, f.targets[0])
	require.NoError(t, err)
	t.Cleanup(func() { localRepo.Close() })
	wcli, err := ecfg.ClusterClient(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { wcli.Close() })
	logs := &testenv.Logs{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("delta writer's and shipper's log:\n%s", logs)
		}
	})
	lg := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	sh := deltalog.NewShipper(localRepo, f.targets[1], lg, nil)
	shipCtx, stopShip := context.WithCancel(ctx)
	shipped := make(chan error, 1)
	go func() { shipped <- sh.Run(shipCtx) }()
	var durable atomic.Int64
	streamCtx, stopStream := context.WithCancel(ctx)
	streamed := make(chan error, 1)
	go func() {
		_, err := deltalog.Stream(streamCtx, deltalog.StreamOptions{
			Client: wcli, Local: localRepo, SealInterval: 300 * time.Millisecond, Logger: lg,
			Codec:     repository.Codec{Compression: repository.CompressionZstd},
			OnDurable: func(p deltalog.Progress) { durable.Store(p.Revision) },
			OnSealed:  sh.Sealed,
		}, f.base, nil)
		streamed <- err
	}()
	for i := range 150 {
		var err error
		switch i % 5 {
		case 0, 1, 2:
			_, err = cli.Put(ctx, fmt.Sprintf("/registry/pods/ns/p%03d", (i*7)%260), fmt.Sprintf("after-%d", i))
		case 3:
			_, err = cli.Delete(ctx, fmt.Sprintf("/registry/pods/ns/p%03d", (i*3)%200))
		case 4:
			_, err = cli.Txn(ctx).Then(
				clientv3.OpPut(fmt.Sprintf("/registry/txn/a%03d", i), "a"),
				clientv3.OpPut(fmt.Sprintf("/registry/txn/b%03d", i), "b"),
			).Commit()
		}
		require.NoError(t, err)
		if i == 75 {
			time.Sleep(700 * time.Millisecond) // more than one segment
		}
	}
	resp, err := cli.Get(ctx, "", clientv3.WithPrefix(), clientv3.WithCountOnly())
	require.NoError(t, err)
	f.lastRev, f.liveKeys = resp.Header.Revision, resp.Count
	require.Eventually(t, func() bool { return durable.Load() >= f.lastRev }, 30*time.Second, 20*time.Millisecond, "the delta log reaches the last write")
	stopStream()
	require.NoError(t, <-streamed)
	sh.Notify(f.base.ID)
	require.Eventually(t, func() bool { return sh.Shipped(f.base.ID) >= f.lastRev }, 30*time.Second, 20*time.Millisecond, "MinIO holds the whole delta log")
	stopShip()
	require.NoError(t, <-shipped)
	sh.Close()
	return f
}

// liveState is what the tests compare before and after a drill: the live cluster's revision and
// keys. A drill must change neither.
func (f *fixture) liveState(t *testing.T) (int64, map[string]string) {
	t.Helper()
	resp, err := f.cli.Get(context.Background(), "", clientv3.WithPrefix()) // also from a cleanup, after t.Context ends
	require.NoError(t, err)
	kvs := map[string]string{}
	for _, kv := range resp.Kvs {
		kvs[string(kv.Key)] = string(kv.Value) + "@" + strconv.FormatInt(kv.ModRevision, 10)
	}
	return resp.Header.Revision, kvs
}

// options are a drill's options for the fixture, with a work dir and state dir of their own.
func (f *fixture) options(t *testing.T) Options {
	return Options{
		Targets: f.targets, WorkDir: t.TempDir(), StateDir: t.TempDir(), EtcdBinary: etcdguardBin,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

// objectKey returns the MinIO key of the first object whose name, under the fixture's prefix,
// starts with under and ends with suffix.
func (f *fixture) objectKey(t *testing.T, under, suffix string) string {
	t.Helper()
	for o := range f.minio.Client(t).ListObjects(t.Context(), f.bucket, minio.ListObjectsOptions{Prefix: f.prefix + "/" + under, Recursive: true}) {
		require.NoError(t, o.Err)
		if strings.HasSuffix(o.Key, suffix) {
			return o.Key
		}
	}
	t.Fatalf("no object %s*%s in MinIO", under, suffix)
	return ""
}

// flipByte flips one byte in the middle of a MinIO object, as damage on the remote copy would,
// and returns the function that puts the original back.
func (f *fixture) flipByte(t *testing.T, key string) (restore func()) {
	t.Helper()
	mc := f.minio.Client(t)
	obj, err := mc.GetObject(t.Context(), f.bucket, key, minio.GetObjectOptions{})
	require.NoError(t, err)
	orig, err := io.ReadAll(obj)
	require.NoError(t, err)
	obj.Close()
	bad := bytes.Clone(orig)
	bad[len(bad)/2] ^= 0x40
	put := func(data []byte) {
		_, err := mc.PutObject(context.Background(), f.bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{})
		require.NoError(t, err)
	}
	put(bad)
	return func() { put(orig) }
}

// children returns the processes whose parent is this one and whose command line mentions dir.
func children(t *testing.T, dir string) []int {
	t.Helper()
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cmdline, []byte(dir)) {
			continue
		}
		if st, err := procStat(pid); err == nil && st.state != "Z" {
			out = append(out, pid)
		}
	}
	return out
}

type stat struct {
	state      string
	ppid, nice int
}

// procStat reads a process's state, parent and niceness from /proc/PID/stat.
func procStat(pid int) (stat, error) {
	return readStat(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
}

func readStat(path string) (stat, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return stat{}, err
	}
	// The command, field 2, is in parentheses and may hold spaces: fields after it.
	rest := string(b[bytes.LastIndexByte(b, ')')+2:])
	f := strings.Fields(rest)
	// rest starts at field 3 (state); ppid is field 4, nice field 19.
	ppid, _ := strconv.Atoi(f[1])
	nice, _ := strconv.Atoi(f[16])
	return stat{state: f[0], ppid: ppid, nice: nice}, nil
}

// leftovers returns what the drills left in a work dir.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestDrill drills a real backup of a 3-member TLS etcd 3.6 cluster and its real delta log from
// MinIO: the drill passes at the log's last revision; a flipped byte of the data object, then of
// a delta segment, fails it as corrupt; a drill interrupted at each step boundary, or SIGKILLed,
// leaves nothing behind and the next one passes; a budget too small refuses it. No drill changes
// the live cluster, which a drill cannot reach: it is given no endpoint.
func TestDrill(t *testing.T) {
	f := newFixture(t)
	liveRev, liveKVs := f.liveState(t)
	t.Cleanup(func() {
		rev, kvs := f.liveState(t)
		require.Equal(t, liveRev, rev, "no drill wrote to the live cluster")
		require.Equal(t, liveKVs, kvs, "no drill changed the live cluster's keys")
	})
	var liveURLs []string
	for _, m := range f.c.Members() {
		liveURLs = append(liveURLs, m.ClientURL, m.PeerURL, m.MetricsURL)
	}

	t.Run("passes from the remote copy", func(t *testing.T) {
		o := f.options(t)
		var pid int
		var member stat
		var threads []stat
		var environ, cmdline []byte
		o.AfterStep = func(s Step) {
			if s != StepStart {
				return
			}
			pids := children(t, o.WorkDir)
			require.Len(t, pids, 1, "one scratch member runs")
			pid = pids[0]
			var err error
			member, err = procStat(pid)
			require.NoError(t, err)
			tasks, _ := filepath.Glob(filepath.Join("/proc", strconv.Itoa(pid), "task", "*", "stat"))
			for _, task := range tasks {
				if st, err := readStat(task); err == nil {
					threads = append(threads, st)
				}
			}
			environ, _ = os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "environ"))
			cmdline, _ = os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
		}
		res, err := Run(t.Context(), o)
		require.NoError(t, err)
		require.True(t, res.OK)
		require.Equal(t, "s3", res.Target, "the remote target, by default")
		require.Equal(t, f.base.ID, res.Backup)
		require.Equal(t, f.base.Revision, res.BackupRevision)
		require.Equal(t, f.lastRev, res.Revision, "the delta log's newest durable revision")
		require.Positive(t, res.Segments)
		require.Positive(t, res.Events)
		require.Equal(t, f.liveKeys, res.Keys, "the member served the live cluster's key count at that revision")
		require.Contains(t, res.Checks, "replayed events = segment manifests' events")
		require.Contains(t, res.Checks, "member keys = restored db keys")
		require.Positive(t, res.Durations.Fetch)
		require.Positive(t, res.Durations.Restore)
		require.Positive(t, res.Durations.Start)
		require.Equal(t, res.Durations.Fetch+res.Durations.Restore+res.Durations.Start, res.Durations.Recovery)
		t.Logf("drill: %+v", res)

		// The scratch member ran at the budget's priority, from the etcdguard binary, on ports
		// of its own; it is gone, and so is everything the drill wrote.
		require.Equal(t, os.Getpid(), member.ppid)
		require.Equal(t, 19, member.nice, "the scratch member runs at nice 19")
		require.NotEmpty(t, threads)
		for _, th := range threads {
			require.Equal(t, 19, th.nice, "every thread of the scratch member runs at nice 19")
		}
		require.Contains(t, strings.Split(string(environ), "\x00"), "GOMAXPROCS=1")
		args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		require.Equal(t, []string{etcdguardBin, "etcd"}, args[:2], "etcdguard's embedded etcd server")
		for _, u := range liveURLs {
			require.NotContains(t, string(cmdline), u, "the scratch member has nothing of the live cluster's addresses")
		}
		_, err = os.Stat(filepath.Join("/proc", strconv.Itoa(pid)))
		require.ErrorIs(t, err, os.ErrNotExist, "the scratch member is gone")
		require.Empty(t, leftovers(t, o.WorkDir), "the drill removed everything it wrote")

		last, age, err := Last(o.StateDir, time.Now())
		require.NoError(t, err)
		require.True(t, last.OK)
		require.Equal(t, res.Revision, last.Revision)
		require.Less(t, age, time.Minute)
		st, err := os.Stat(filepath.Join(o.StateDir, "drills"))
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o700), st.Mode().Perm())
		files, _ := filepath.Glob(filepath.Join(o.StateDir, "drills", "*.json"))
		require.Len(t, files, 1)
		st, err = os.Stat(files[0])
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	})

	t.Run("the local target and the backup, named", func(t *testing.T) {
		o := f.options(t)
		o.Target, o.Backup = "local", f.base.ID
		res, err := Run(t.Context(), o)
		require.NoError(t, err)
		require.Equal(t, "local", res.Target)
		require.Equal(t, f.lastRev, res.Revision, "the local target's log reaches as far")
	})

	t.Run("a flipped byte of the data object", func(t *testing.T) {
		restore := f.flipByte(t, f.objectKey(t, "snapshots/"+f.base.ID+"/", ".zst"))
		defer restore()
		o := f.options(t)
		res, err := Run(t.Context(), o)
		require.ErrorIs(t, err, ErrFailed)
		require.ErrorIs(t, err, snapshot.ErrCorrupt, "exit code 5, integrity")
		require.False(t, res.OK)
		require.Equal(t, ReasonCorrupt, res.Reason)
		require.Zero(t, res.Durations.Restore, "nothing was restored")
		last, _, err := Last(o.StateDir, time.Now())
		require.NoError(t, err)
		require.False(t, last.OK)
		require.Equal(t, ReasonCorrupt, last.Reason)
		require.Empty(t, leftovers(t, o.WorkDir))
	})

	t.Run("a flipped byte of a delta segment", func(t *testing.T) {
		restore := f.flipByte(t, f.objectKey(t, "deltas/"+f.base.ID+"/", ".delta.zst"))
		defer restore()
		o := f.options(t)
		res, err := Run(t.Context(), o)
		require.ErrorIs(t, err, ErrFailed)
		require.ErrorIs(t, err, snapshot.ErrCorrupt)
		require.Equal(t, ReasonCorrupt, res.Reason)
		require.Positive(t, res.Durations.Fetch, "the full backup was fetched and passed")
		require.Empty(t, children(t, o.WorkDir), "no member was started")
		require.Empty(t, leftovers(t, o.WorkDir))
		last, _, err := Last(o.StateDir, time.Now())
		require.NoError(t, err)
		require.Equal(t, ReasonCorrupt, last.Reason)
	})

	t.Run("interrupted at each step boundary", func(t *testing.T) {
		work := t.TempDir()
		for _, at := range []Step{StepFetch, StepRestore, StepStart, StepCheck} {
			ctx, cancel := context.WithCancel(t.Context())
			o := f.options(t)
			o.WorkDir = work
			o.AfterStep = func(s Step) {
				if s == at {
					cancel()
				}
			}
			res, err := Run(ctx, o)
			cancel()
			if at == StepCheck {
				require.NoError(t, err, "interrupted after its last check, the drill has passed")
			} else {
				require.ErrorIs(t, err, context.Canceled, "interrupted after %s", at)
				require.Equal(t, ReasonInterrupted, res.Reason)
			}
			require.Empty(t, leftovers(t, work), "nothing left after an interruption after %s", at)
			require.Empty(t, children(t, work))
		}
		o := f.options(t)
		o.WorkDir = work
		res, err := Run(t.Context(), o)
		require.NoError(t, err, "the next drill passes")
		require.Equal(t, f.lastRev, res.Revision)
	})

	t.Run("SIGKILLed: the next drill sweeps what it left", func(t *testing.T) {
		work := t.TempDir()
		for _, at := range []string{"drill/after-restore", "drill/after-start"} {
			o := f.options(t)
			o.WorkDir = work
			spec, err := json.Marshal(childSpec{Targets: o.Targets, WorkDir: work, StateDir: o.StateDir, EtcdBinary: etcdguardBin, KillAt: at})
			require.NoError(t, err)
			self, err := os.Executable()
			require.NoError(t, err)
			cmd := exec.Command(self)
			cmd.Env = append(os.Environ(), childEnv+"="+string(spec))
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			require.ErrorAs(t, err, &exit, "%s", out)
			require.Equal(t, syscall.SIGKILL, exit.Sys().(syscall.WaitStatus).Signal(), "%s", out)
			require.Len(t, leftovers(t, work), 1, "a killed drill leaves its scratch folder (plain etcd data)")
			require.Eventually(t, func() bool { return len(children(t, work)) == 0 }, 10*time.Second, 50*time.Millisecond,
				"the scratch member died with the drill (killed at %s)", at)

			res, err := Run(t.Context(), o)
			require.NoError(t, err, "the next drill passes")
			require.True(t, res.OK)
			require.Empty(t, leftovers(t, work), "and removed the killed drill's folder")
		}
	})

	t.Run("over its budget", func(t *testing.T) {
		o := f.options(t)
		o.Budget.Margin = 1 << 60 // more than any disk: the need exceeds the free space
		res, err := Run(t.Context(), o)
		require.ErrorIs(t, err, ErrBudget)
		require.ErrorIs(t, err, ErrFailed)
		require.Equal(t, ReasonBudget, res.Reason)
		require.Zero(t, res.Durations.Fetch, "nothing was fetched")
		require.Empty(t, leftovers(t, o.WorkDir))

		o = f.options(t)
		o.Budget.Free = func(string) (int64, error) { return o.Budget.Need(f.base, nil) - 1, nil }
		_, err = Run(t.Context(), o)
		require.ErrorIs(t, err, ErrBudget, "one byte short of the backup alone")
	})

	// Last: it takes a newer backup, which the drills above must not see.
	t.Run("a backup without a delta log, whose lease expires on the scratch member", func(t *testing.T) {
		ctx := t.Context()
		lease, err := f.cli.Grant(ctx, 3)
		require.NoError(t, err)
		_, err = f.cli.Put(ctx, "/registry/masterleases/10.0.0.1", "short", clientv3.WithLease(lease.ID))
		require.NoError(t, err)
		ecfg := etcdx.Config{Endpoints: f.c.Endpoints(), CACert: f.c.CAFile, Cert: f.c.ClientCertFile, Key: f.c.ClientKeyFile}
		saved, err := snapshot.Save(ctx, snapshot.SaveOptions{Etcd: ecfg, Targets: f.targets, WorkDir: t.TempDir()})
		require.NoError(t, err)
		_, err = f.cli.Revoke(ctx, lease.ID)
		require.NoError(t, err)
		liveRev, liveKVs = f.liveState(t) // the test's own writes; the drill's must be none

		o := f.options(t)
		o.Backup = saved.Manifest.ID
		o.AfterStep = func(s Step) {
			if s == StepStart {
				time.Sleep(6 * time.Second) // the restored lease's 3 s run out on the member's clock
			}
		}
		res, err := Run(ctx, o)
		require.NoError(t, err)
		require.Equal(t, saved.Manifest.Revision, res.Revision, "no delta log: the backup's own revision")
		require.Zero(t, res.Segments)
		require.Contains(t, res.Checks, "restored db keys = manifest total_key")
		require.Equal(t, int64(saved.Manifest.Status.TotalKey), res.Keys)
		require.NotEmpty(t, res.Notes, "the lease's expiry is noted")
		require.Contains(t, res.Notes[len(res.Notes)-1], "leases expired on the scratch member")
	})
}

func TestChooseTarget(t *testing.T) {
	local := repository.Target{Name: "local", URL: "file:///var/backups/etcd"}
	tape := repository.Target{Name: "tape", URL: "file:///mnt/ltfs/etcd", Offline: true}
	s3 := repository.Target{Name: "s3", URL: "s3://b/p"}
	cases := []struct {
		name    string
		targets []repository.Target
		pick    string
		want    string
		note    bool
		err     bool
	}{
		{"the first remote", []repository.Target{local, tape, s3}, "", "s3", false, false},
		{"named", []repository.Target{local, s3}, "local", "local", false, false},
		{"only local folders", []repository.Target{local, tape}, "", "local", true, false},
		{"an unknown name", []repository.Target{local, s3}, "nas", "", false, true},
		{"none", nil, "", "", false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, note, err := chooseTarget(c.targets, c.pick)
			if c.err {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, c.want, got.Name)
			require.Equal(t, c.note, note != "")
		})
	}
}

func TestHistory(t *testing.T) {
	state := t.TempDir()
	_, _, err := Last(state, time.Now())
	require.ErrorIs(t, err, ErrNoDrill)
	t0 := time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)
	for i := range 5 {
		r := Result{Backup: fmt.Sprintf("b%d", i), Started: t0.Add(time.Duration(i) * time.Hour), Finished: t0.Add(time.Duration(i)*time.Hour + time.Minute), OK: i != 3}
		if !r.OK {
			r.Reason = ReasonCheck
		}
		_, err := Record(state, r, 3)
		require.NoError(t, err)
	}
	// Something else in the folder is ignored, and so is a damaged newest file.
	require.NoError(t, os.WriteFile(filepath.Join(state, "drills", "notes.txt"), []byte("x"), 0o600))
	h, err := History(state)
	require.NoError(t, err)
	require.Len(t, h, 3, "the newest three are kept")
	require.Equal(t, []string{"b4", "b3", "b2"}, []string{h[0].Backup, h[1].Backup, h[2].Backup})
	last, age, err := Last(state, t0.Add(5*time.Hour))
	require.NoError(t, err)
	require.Equal(t, "b4", last.Backup)
	require.Equal(t, 59*time.Minute, age)
	require.NoError(t, os.WriteFile(filepath.Join(state, "drills", t0.Add(9*time.Hour).Format(historyLayout)+".json"), []byte("{"), 0o600))
	last, _, err = Last(state, t0.Add(10*time.Hour))
	require.NoError(t, err)
	require.Equal(t, "b4", last.Backup, "a damaged file does not hide the drills before it")
	_, err = History(state)
	require.Error(t, err, "History names the damaged file")
}
