package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdguard/etcdguard/internal/testcluster"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

// etcdbrctl returns the path of gardener/etcd-backup-restore's etcdbrctl, or skips the benchmark
// saying how to build it: ETCDGUARD_ETCDBRCTL, or the link scripts/etcdbrctl makes in the tools
// folder.
func etcdbrctl(b *testing.B) string {
	b.Helper()
	path := os.Getenv("ETCDGUARD_ETCDBRCTL")
	if path == "" {
		path = filepath.Join(testenv.ToolsDir(), "etcdbrctl")
	}
	if _, err := os.Stat(path); err != nil {
		msg := fmt.Sprintf("%s skipped: etcdbrctl is not built (%v). It is not served by the Go module proxy: clone github.com/gardener/etcd-backup-restore and run scripts/etcdbrctl CLONE, or set ETCDGUARD_ETCDBRCTL", b.Name(), err)
		fmt.Println(msg) // a skip's reason is shown only with -v
		b.Skip(msg)
	}
	return path
}

// killEtcdbrctl is one power cut with `etcdbrctl snapshot` backing the cluster up to its Local
// store (full snapshot at start, then a delta snapshot every period), and `etcdbrctl restore` of
// one member, started and read. A restore that fails is reported with its output and counts as
// losing everything since the full snapshot.
func killEtcdbrctl(b *testing.B, bin, dir, period string, run time.Duration) killResult {
	b.Helper()
	p := newProtected(b, dir, nil, "", "", testcluster.Options{})
	home := filepath.Join(dir, "home") // the Local store lives under $HOME/<store-container>
	if err := os.MkdirAll(home, 0o700); err != nil {
		b.Fatal(err)
	}
	env := append(os.Environ(), "HOME="+home)
	logFile := filepath.Join(dir, "etcdbrctl-snapshot.log")
	logf, err := os.Create(logFile)
	if err != nil {
		b.Fatal(err)
	}
	defer logf.Close()
	snap := exec.Command(bin, "snapshot", "--storage-provider=Local", "--store-container=store",
		"--endpoints="+strings.Join(p.c.Endpoints(), ","),
		"--cacert="+p.c.CAFile, "--cert="+p.c.ClientCertFile, "--key="+p.c.ClientKeyFile,
		"--insecure-transport=false", "--insecure-skip-tls-verify=false",
		"--schedule=0 0 1 1 *", "--delta-snapshot-period="+period)
	snap.Env, snap.Stdout, snap.Stderr = env, logf, logf
	snap.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := snap.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = snap.Wait(); close(exited) }()
	b.Cleanup(func() { _ = snap.Process.Kill(); <-exited })
	// Its full snapshot is written in place: a cut before it is complete leaves a truncated
	// file that its restore refuses. The load starts after it, as etcdguard's after its agent
	// is ready.
	deadline := time.Now().Add(90 * time.Second)
	for !fileContains(logFile, "Successfully saved full snapshot") {
		select {
		case <-exited:
			b.Fatalf("etcdbrctl snapshot exited before its full snapshot:\n%s", tail(logFile))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.Fatalf("etcdbrctl snapshot saved no full snapshot in 90 s:\n%s", tail(logFile))
		}
	}

	cli := p.client(b)
	load := testcluster.StartLoad(cli, testcluster.LoadOptions{Workers: 48, Namespace: "kill", Seed: uint64(time.Now().UnixNano()), Rate: deltaLoadRate})
	started := time.Now()
	time.Sleep(run)
	killAt := p.powerCut(b, snap.Process)
	<-exited
	load.Halt()
	acked, _ := load.Acked()
	deltas := countFiles(filepath.Join(home, "store"), "Incr-")
	r := killResult{run: run, acked: acked}

	ports, err := testcluster.FreePorts(3)
	if err != nil {
		b.Fatal(err)
	}
	peer := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	client := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	dataDir := filepath.Join(dir, "restored")
	restore := exec.Command(bin, "restore", "--storage-provider=Local", "--store-container=store",
		"--data-dir="+dataDir, "--name=r1", "--initial-cluster=r1="+peer, "--initial-advertise-peer-urls="+peer,
		"--initial-cluster-token=etcdbrctl-restore")
	restore.Env = env
	restore.Dir = dir
	start := time.Now()
	out, err := restore.CombinedOutput()
	took := time.Since(start)
	if err != nil {
		// Nothing after the full snapshot is back.
		r.loss, r.failed = killAt.Sub(started), true
		r.note = fmt.Sprintf("etcdbrctl restore FAILED after %s (%v): counted as losing the whole load; %d delta snapshots in the store; its output ends:\n%s",
			took.Round(time.Millisecond), err, deltas, lastLines(string(out), 15))
		p.close()
		return r
	}

	etcd := exec.Command(testenv.Etcd(b, "3.6", "etcd"), "--name=r1", "--data-dir="+dataDir,
		"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer, "--initial-cluster=r1="+peer,
		"--listen-client-urls="+client, "--advertise-client-urls="+client,
		fmt.Sprintf("--listen-metrics-urls=http://127.0.0.1:%d", ports[2]), "--initial-cluster-token=etcdbrctl-restore")
	etcdLog, err := os.Create(filepath.Join(dir, "restored.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer etcdLog.Close()
	etcd.Stdout, etcd.Stderr = etcdLog, etcdLog
	etcd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := etcd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = etcd.Process.Kill(); _ = etcd.Wait() }()
	rcli, err := clientv3.New(clientv3.Config{Endpoints: []string{client}, DialTimeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer rcli.Close()
	state := keyspace(b, rcli)
	lost := load.Check(state, killAt)
	r.lost, r.checked = len(lost.Keys), lost.Checked
	if !lost.OldestAckAt.IsZero() {
		r.loss = killAt.Sub(lost.OldestAckAt)
	}
	rev := int64(0)
	if resp, err := rcli.Get(context.Background(), "health", clientv3.WithCountOnly()); err == nil {
		rev = resp.Header.Revision
	}
	r.note = fmt.Sprintf("etcdbrctl restore (%s) of one member from the full snapshot and %d delta snapshots, at revision %d", took.Round(time.Millisecond), deltas, rev)
	p.close()
	return r
}

func fileContains(path, s string) bool {
	b, err := os.ReadFile(path)
	return err == nil && strings.Contains(string(b), s)
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	return lastLines(string(b), 30)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

// countFiles counts the files under dir whose name starts with prefix.
func countFiles(dir, prefix string) int {
	n := 0
	_ = filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasPrefix(d.Name(), prefix) {
			n++
		}
		return nil
	})
	return n
}
