package bench

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
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
	c, err := testcluster.Start(b.Context(), testcluster.Options{
		Size: 1, Command: []string{testenv.Etcd(b, "3.6", "etcd")}, Dir: filepath.Join(dir, "cluster"),
		QuotaBackendBytes: 8 << 30, ExtraArgs: []string{"--max-request-bytes=4194304"},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	load(b, c, mib)
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
	dropCaches()
	catTime, _, _ := timed(b, "sh", "-c", "cat "+strings.Join(files, " ")+" > /dev/null")
	dropCaches()
	scanTime, _, out := timedAllowFail(b, guard, "doctor", "--offline", "--data-dir", m.DataDir)

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
	fmt.Printf("\ndata dir: %.0f MiB in %d files\n\n| what | wall time | throughput |\n|---|---|---|\n", mb, len(files))
	fmt.Printf("| cat of every file of the data dir | %.2f s | %.0f MiB/s |\n", catTime.Seconds(), mb/catTime.Seconds())
	fmt.Printf("| etcdguard doctor --offline --data-dir (WAL decode, page walk, bbolt check) | %.2f s | %.0f MiB/s |\n", scanTime.Seconds(), mb/scanTime.Seconds())
	fmt.Printf("\netcdguard doctor with all 3 members down (connection refused): %.2f s\n", downTime.Seconds())
	fmt.Printf("etcdguard doctor with 3 endpoints that accept and never answer (default --dial-timeout 2s): %.2f s\n", stallTime.Seconds())
	fmt.Printf("\ndoctor --offline said:\n%s\n", lastLinesOf(out, 12))
	b.ReportMetric(scanTime.Seconds()/catTime.Seconds(), "scan/cat")
	b.ReportMetric(downTime.Seconds(), "doctor-all-down-s")
	b.ReportMetric(stallTime.Seconds(), "doctor-all-hung-s")
	_ = time.Second
}

func lastLinesOf(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
