package bench

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/etcdguard/etcdguard/internal/drill"
	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

// BenchmarkDrill compares, on one backup of a database of ETCDGUARD_BENCH_DRILL_MIB (default
// 300 MiB) in a local target, with the page cache warm and then dropped before each:
//   - one `etcdutl snapshot restore` of the backup as a plain file (fetched beforehand);
//   - one restore drill (drill.Run, library call): fetch and check the backup from the target,
//     restore it into the scratch data dir, start etcdguard's embedded etcd on it at nice 19, the
//     idle I/O class and GOMAXPROCS=1, check it.
//
// The ratio that compares like with like is the drill's restore step (etcd's restore code on the
// fetched plain file) against etcdutl's restore of the same file.
func BenchmarkDrill(b *testing.B) {
	mib := benchEnvInt(b, "ETCDGUARD_BENCH_DRILL_MIB", 300)
	dir := b.TempDir()
	c := loadedCluster(b, dir, 1, mib)
	etcdutl := testenv.Etcd(b, "3.6", "etcdutl")
	guard := buildEtcdguard(b, dir)
	target := repository.Target{Name: "local", URL: "file://" + filepath.Join(dir, "repo"), Media: "disk"}
	timed(b, guard, "snapshot", "save", "--endpoints", c.Endpoints()[0], "--target", target.URL, "--work-dir", dir)
	plain := filepath.Join(dir, "snapshot.db")
	timed(b, guard, "snapshot", "get", "latest", "--output", plain, "--target", target.URL, "--work-dir", dir)
	st, err := os.Stat(plain)
	if err != nil {
		b.Fatal(err)
	}
	work := filepath.Join(dir, "work")
	if err := os.MkdirAll(work, 0o700); err != nil {
		b.Fatal(err)
	}

	restoreOnce := func(name string) time.Duration {
		d, _, _ := timed(b, etcdutl, "snapshot", "restore", plain, "--data-dir", filepath.Join(dir, name),
			"--name", "m1", "--initial-cluster", "m1=http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
			"--initial-cluster-token", "bench-"+name)
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			b.Fatal(err)
		}
		return d
	}
	drillOnce := func() drill.Result {
		res, err := drill.Run(b.Context(), drill.Options{
			Targets: []repository.Target{target}, WorkDir: work, EtcdBinary: guard, Logger: slog.New(slog.DiscardHandler),
		})
		if err != nil {
			b.Fatal(err)
		}
		return res
	}

	// Warm: every file read is in the page cache (run each once first).
	restoreOnce("warm-up")
	drillOnce()
	warmUtl := restoreOnce("warm")
	warm := drillOnce()

	// Cold: the page cache dropped (dirty pages written back first) before each.
	cold := dropAllCaches()
	coldUtl := restoreOnce("cold")
	dropAllCaches()
	coldDrill := drillOnce()

	sec := func(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }
	ratio := func(d, of time.Duration) string { return fmt.Sprintf("%.2f", d.Seconds()/of.Seconds()) }
	b.ReportMetric(warm.Durations.Restore.Seconds()/warmUtl.Seconds(), "drill-restore/etcdutl-warm")
	b.ReportMetric(coldDrill.Durations.Restore.Seconds()/coldUtl.Seconds(), "drill-restore/etcdutl-cold")
	fmt.Printf("\ndatabase: %.0f MiB; revision %d, %d keys; page cache dropped: %v\n", float64(st.Size())/(1<<20), warm.Revision, warm.Keys, cold)
	fmt.Printf("\n| what | warm | ratio | cold | ratio |\n|---|---|---|---|---|\n")
	fmt.Printf("| etcdutl snapshot restore of the plain file | %s | 1.00 | %s | 1.00 |\n", sec(warmUtl), sec(coldUtl))
	for _, r := range []struct {
		what       string
		warm, cold time.Duration
	}{
		{"drill: restore step (etcd's restore of the fetched file, into the scratch data dir)", warm.Durations.Restore, coldDrill.Durations.Restore},
		{"drill: fetch and check the backup from the target", warm.Durations.Fetch, coldDrill.Durations.Fetch},
		{"drill: start the scratch member (nice 19, idle I/O, GOMAXPROCS=1) until healthy", warm.Durations.Start, coldDrill.Durations.Start},
		{"drill: checks (restored db status; member revision and key count)", warm.Durations.Check, coldDrill.Durations.Check},
		{"drill: recovery time (fetch + restore + start)", warm.Durations.Recovery, coldDrill.Durations.Recovery},
		{"drill: whole drill", warm.Durations.Total, coldDrill.Durations.Total},
	} {
		fmt.Printf("| %s | %s | %s | %s | %s |\n", r.what, sec(r.warm), ratio(r.warm, warmUtl), sec(r.cold), ratio(r.cold, coldUtl))
	}
}

// dropAllCaches writes dirty pages back and empties the page cache, dentries and inodes
// (drop_caches 3); it reports whether the kernel let it (root only).
func dropAllCaches() bool {
	syscall.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200) == nil
}
