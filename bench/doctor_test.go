package bench

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/etcdguard/etcdguard/internal/testcluster"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

// BenchmarkDoctor measures, on a data dir holding a database of at least 1 GiB:
//   - the offline scan (etcdguard doctor --offline --data-dir: WAL decode, page walk, bbolt
//     check) against reading the same files with cat, page cache dropped before each;
//   - how long doctor takes to answer when every member of a 3-member cluster is down (its
//     endpoint checks run in parallel, each bounded by the dial timeout).
func BenchmarkDoctor(b *testing.B) {
	mib := benchMiB(b)
	dir := b.TempDir()
	c := loadedCluster(b, dir, 1, mib)
	m := c.Members()[0]
	if err := m.Kill(); err != nil {
		b.Fatal(err)
	}
	if keep := os.Getenv("ETCDGUARD_BENCH_KEEP_DATADIR"); keep != "" {
		if out, err := execCommand("cp", "-a", m.DataDir, keep); err != nil {
			b.Fatalf("keep the data dir: %v %s", err, out)
		}
	}
	guard := filepath.Join(dir, "etcdguard")
	if out, err := execCommand("go", "build", "-o", guard, "../cmd/etcdguard"); err != nil {
		b.Fatalf("build etcdguard: %v\n%s", err, out)
	}
	var files []string
	_ = filepath.Walk(m.DataDir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	var size int64
	for _, f := range files {
		st, _ := os.Stat(f)
		size += st.Size()
	}
	// The disk of a shared VM is noisy (the same cat of a cold file takes 0.6 s one minute and
	// 1.9 s the next): the two are timed in turns, cold, and compared by their medians.
	rounds := benchRounds(b)
	catArgs := []string{"-c", "cat " + strings.Join(files, " ") + " > /dev/null"}
	// ETCDGUARD_BENCH_BASELINE names another etcdguard binary (an earlier build) to time in the
	// same turns, for a before-and-after on the same disk at the same time.
	baseline := os.Getenv("ETCDGUARD_BENCH_BASELINE")
	var catTimes, scanTimes, baseTimes []time.Duration
	var out string
	for range rounds {
		dropCaches()
		d, _, _ := timed(b, "sh", catArgs...)
		catTimes = append(catTimes, d)
		dropCaches()
		d, _, out = timedAllowFail(b, guard, "doctor", "--offline", "--data-dir", m.DataDir)
		scanTimes = append(scanTimes, d)
		if baseline != "" {
			dropCaches()
			d, _, _ = timedAllowFail(b, baseline, "doctor", "--offline", "--data-dir", m.DataDir)
			baseTimes = append(baseTimes, d)
		}
	}
	// Warm: the files in the page cache, so that what is left is the work on the CPU.
	catWarm, _, _ := timed(b, "sh", catArgs...)
	scanWarm, scanPeak, _ := timedAllowFail(b, guard, "doctor", "--offline", "--data-dir", m.DataDir)
	catTime, scanTime := median(catTimes), median(scanTimes)

	// Every member of a 3-member cluster down.
	c3, err := testcluster.Start(b.Context(), testcluster.Options{Size: 3, Command: []string{testenv.Etcd(b, "3.6", "etcd")}, Dir: filepath.Join(dir, "three")})
	if err != nil {
		b.Fatal(err)
	}
	eps := strings.Join(c3.Endpoints(), ",")
	for _, mm := range c3.Members() {
		_ = mm.Kill()
	}
	downTime, _, _ := timedAllowFail(b, guard, "doctor", "--endpoints", eps)
	c3.Close()

	// Three endpoints that accept connections and never answer (hosts that hang after a power
	// cut): every check waits for its timeout, all of them at once.
	var stalled []string
	for range 3 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		go func() {
			for {
				conn, err := l.Accept()
				if err != nil {
					return
				}
				defer conn.Close()
			}
		}()
		stalled = append(stalled, "https://"+l.Addr().String())
	}
	stallTime, _, _ := timedAllowFail(b, guard, "doctor", "--endpoints", strings.Join(stalled, ","))

	mb := float64(size) / (1 << 20)
	fmt.Printf("\ndata dir: %.0f MiB in %d files; cold: page cache dropped before each run, %d runs each, in turns\n\n", mb, len(files), rounds)
	fmt.Printf("| what | cold, median | cold, each run | throughput (median) | warm |\n|---|---|---|---|---|\n")
	fmt.Printf("| cat of every file of the data dir | %.2f s | %s | %.0f MiB/s | %.2f s |\n", catTime.Seconds(), seconds(catTimes), mb/catTime.Seconds(), catWarm.Seconds())
	fmt.Printf("| etcdguard doctor --offline --data-dir (WAL decode, page walk, bbolt check) | %.2f s | %s | %.0f MiB/s | %.2f s |\n",
		scanTime.Seconds(), seconds(scanTimes), mb/scanTime.Seconds(), scanWarm.Seconds())
	if baseline != "" {
		baseWarm, _, _ := timedAllowFail(b, baseline, "doctor", "--offline", "--data-dir", m.DataDir)
		fmt.Printf("| %s doctor --offline --data-dir (ETCDGUARD_BENCH_BASELINE) | %.2f s | %s | %.0f MiB/s | %.2f s |\n",
			baseline, median(baseTimes).Seconds(), seconds(baseTimes), mb/median(baseTimes).Seconds(), baseWarm.Seconds())
	}
	fmt.Printf("\ndoctor --offline (cold, median) / cat (cold, median): %.2fx; peak RssAnon of doctor --offline: %d MiB\n",
		scanTime.Seconds()/catTime.Seconds(), scanPeak>>20)
	fmt.Printf("\netcdguard doctor with all 3 members down (connection refused): %.2f s\n", downTime.Seconds())
	fmt.Printf("etcdguard doctor with 3 endpoints that accept and never answer (default --dial-timeout 2s): %.2f s\n", stallTime.Seconds())
	fmt.Printf("\ndoctor --offline said:\n%s\n", lastLinesOf(out, 12))
	b.ReportMetric(scanTime.Seconds()/catTime.Seconds(), "scan/cat")
	b.ReportMetric(downTime.Seconds(), "doctor-all-down-s")
	b.ReportMetric(stallTime.Seconds(), "doctor-all-hung-s")
}

// benchRounds is how many times a cold comparison runs each side (ETCDGUARD_BENCH_ROUNDS).
func benchRounds(b *testing.B) int {
	b.Helper()
	n := 5
	if v := os.Getenv("ETCDGUARD_BENCH_ROUNDS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			b.Fatalf("ETCDGUARD_BENCH_ROUNDS=%q: want a positive number", v)
		}
	}
	return n
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func seconds(ds []time.Duration) string {
	var parts []string
	for _, d := range ds {
		parts = append(parts, fmt.Sprintf("%.2f", d.Seconds()))
	}
	return strings.Join(parts, ", ")
}

func lastLinesOf(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
