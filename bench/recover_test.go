package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdguard/etcdguard/internal/cluster"
	"github.com/etcdguard/etcdguard/internal/etcdx"
	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/restore"
	"github.com/etcdguard/etcdguard/internal/testcluster"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

// memberControl lets the recovery stop and start the benchmark's members, which the benchmark
// runs itself.
type memberControl struct{ m *testcluster.Member }

func (c memberControl) Describe() string { return "benchmark" }

func (c memberControl) Stop(ctx context.Context) error {
	if !c.m.Running() {
		return nil
	}
	return c.m.Stop(ctx)
}

func (c memberControl) Start(ctx context.Context, _ cluster.StartEnv) error {
	go func() { _ = c.m.Restart(context.WithoutCancel(ctx)) }()
	return nil
}

// BenchmarkRecover compares, on one backup of a database of at least 1 GiB of a 3-member
// cluster:
//   - one etcdutl snapshot restore (the unit of the aim);
//   - by hand: three etcdutl snapshot restore runs, one after the other, then starting the three
//     members and waiting until they serve;
//   - etcdguard recover, restore path: fetch and verify the backup, stop, quarantine, restore the
//     three members in parallel with a revision bump, start, verify (HashKV on every member).
func BenchmarkRecover(b *testing.B) {
	mib := benchMiB(b)
	dir := b.TempDir()
	c := loadedCluster(b, dir, 3, mib)
	etcdutl := testenv.Etcd(b, "3.6", "etcdutl")
	etcd := testenv.Etcd(b, "3.6", "etcd")

	// The backup every contender restores from.
	repoDir := filepath.Join(dir, "repo")
	target := repository.Target{Name: "local", URL: "file://" + repoDir, Media: "disk"}
	guard := filepath.Join(dir, "etcdguard")
	if out, err := exec.Command("go", "build", "-o", guard, "../cmd/etcdguard").CombinedOutput(); err != nil {
		b.Fatalf("build etcdguard: %v\n%s", err, out)
	}
	timed(b, guard, "snapshot", "save", "--endpoints", c.Endpoints()[0], "--target", target.URL, "--work-dir", dir)
	plain := filepath.Join(dir, "snapshot.db")
	timed(b, guard, "snapshot", "get", "latest", "--output", plain, "--target", target.URL, "--work-dir", dir)
	st, _ := os.Stat(plain)

	// The power cut: every member down, every data dir unusable (moved away).
	for _, m := range c.Members() {
		if err := m.Kill(); err != nil {
			b.Fatal(err)
		}
		if err := os.Rename(m.DataDir, m.DataDir+".lost"); err != nil {
			b.Fatal(err)
		}
	}

	// One etcdutl restore.
	dropCaches()
	one, _, _ := timed(b, etcdutl, "snapshot", "restore", plain, "--data-dir", filepath.Join(dir, "one"),
		"--name", "m1", "--initial-cluster", c.InitialCluster(), "--initial-advertise-peer-urls", c.Members()[0].PeerURL,
		"--initial-cluster-token", "bench-one")

	// By hand: three restores one after the other, then start the members and wait.
	dropCaches()
	start := time.Now()
	var procs []*exec.Cmd
	hand := filepath.Join(dir, "by-hand")
	for _, m := range c.Members() {
		timed(b, etcdutl, "snapshot", "restore", plain, "--data-dir", filepath.Join(hand, m.Name),
			"--name", m.Name, "--initial-cluster", c.InitialCluster(), "--initial-advertise-peer-urls", m.PeerURL,
			"--initial-cluster-token", "bench-hand", "--bump-revision", "1000000", "--mark-compacted")
	}
	restoreHand := time.Since(start)
	for _, m := range c.Members() {
		args := []string{}
		for _, a := range m.StartArgs() {
			if strings.HasPrefix(a, "--data-dir=") {
				a = "--data-dir=" + filepath.Join(hand, m.Name)
			}
			args = append(args, a)
		}
		cmd := exec.Command(etcd, append(args, "--initial-cluster="+c.InitialCluster(), "--initial-cluster-token=bench-hand")...)
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		procs = append(procs, cmd)
	}
	waitServing(b, c.Endpoints())
	byHand := time.Since(start)
	for _, p := range procs {
		_ = p.Process.Kill()
		_ = p.Wait()
	}

	// etcdguard recover, restore path.
	r := &restore.Recoverer{
		Etcd: etcdx.Config{}, Targets: []repository.Target{target}, StateDir: filepath.Join(dir, "state"),
		WorkDir: dir, Controllers: map[string]cluster.Controller{},
	}
	for _, m := range c.Members() {
		r.Cluster.Members = append(r.Cluster.Members, cluster.Member{Name: m.Name, PeerURL: m.PeerURL, ClientURL: m.ClientURL,
			DataDir: m.DataDir, StartCommand: "-", StopCommand: "-"})
		r.Controllers[m.Name] = memberControl{m}
	}
	dropCaches()
	start = time.Now()
	plan, err := r.Plan(b.Context())
	if err != nil {
		b.Fatal(err)
	}
	planned := time.Since(start)
	rep, err := r.Apply(b.Context(), plan, nil)
	if err != nil {
		b.Fatal(err)
	}
	guardTotal := time.Since(start)

	b.ReportMetric(guardTotal.Seconds()/one.Seconds(), "recover/one-etcdutl")
	b.ReportMetric(byHand.Seconds()/one.Seconds(), "byhand/one-etcdutl")
	fmt.Printf("\ndatabase: %.0f MiB; plan path %s\n", float64(st.Size())/(1<<20), plan.Path)
	fmt.Printf("\n| what | wall time | ratio to one etcdutl restore |\n|---|---|---|\n")
	fmt.Printf("| one etcdutl snapshot restore | %.2f s | 1.00 |\n", one.Seconds())
	fmt.Printf("| by hand: 3 etcdutl restores in a row (%.2f s), then start 3 members and wait | %.2f s | %.2f |\n", restoreHand.Seconds(), byHand.Seconds(), byHand.Seconds()/one.Seconds())
	fmt.Printf("| etcdguard recover (restore path, verified) | %.2f s | %.2f |\n", guardTotal.Seconds(), guardTotal.Seconds()/one.Seconds())
	fmt.Printf("\netcdguard recover, by step (steps run for members in parallel overlap):\n\n| step | member | time |\n|---|---|---|\n")
	fmt.Printf("| assess and plan | | %.2f s |\n", planned.Seconds())
	for _, s := range rep.Steps {
		fmt.Printf("| %s | %s | %.2f s |\n", s.Name, s.Member, s.Elapsed.Seconds())
	}
}

func waitServing(b *testing.B, endpoints []string) {
	b.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(b.Context(), 2*time.Second)
		_, err = cli.Get(ctx, "x")
		cancel()
		if err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.Fatalf("members never served: %v", err)
}
