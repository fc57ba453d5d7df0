// Package bench measures etcdguard against the standard tools (etcdctl, etcdutl, sha256sum,
// gzip) on the same data in the same run, and reports the ratios. It is not part of the test
// suite: run it with
//
//	go test ./bench -run '^$' -bench . -benchtime 1x -timeout 60m
//
// ETCDGUARD_BENCH_MIB sets the size of the etcd database (default 1100 MiB). Results go to
// docs/benchmarks.md.
package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdguard/etcdguard/internal/testcluster"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

// env is what every benchmark needs: a cluster holding a large database, MinIO, the binaries.
type env struct {
	cluster   *testcluster.Cluster
	minio     *testenv.MinIOServer
	etcdguard string
	etcdctl   string
	etcdutl   string
	dir       string
	dbSize    int64
}

// benchMiB is the size of the database to benchmark on, ETCDGUARD_BENCH_MIB or 1100 MiB.
func benchMiB(b *testing.B) int {
	b.Helper()
	mib := 1100
	if v := os.Getenv("ETCDGUARD_BENCH_MIB"); v != "" {
		var err error
		if mib, err = strconv.Atoi(v); err != nil {
			b.Fatalf("ETCDGUARD_BENCH_MIB=%q: %v", v, err)
		}
	}
	return mib
}

func setup(b *testing.B) *env {
	b.Helper()
	mib := benchMiB(b)
	e := &env{dir: b.TempDir(), etcdctl: testenv.Etcd(b, "3.6", "etcdctl"), etcdutl: testenv.Etcd(b, "3.6", "etcdutl")}
	e.etcdguard = filepath.Join(e.dir, "etcdguard")
	if out, err := exec.Command("go", "build", "-o", e.etcdguard, "../cmd/etcdguard").CombinedOutput(); err != nil {
		b.Fatalf("build etcdguard: %v\n%s", err, out)
	}
	c, err := testcluster.Start(b.Context(), testcluster.Options{
		Size: 1, Command: []string{testenv.Etcd(b, "3.6", "etcd")}, Dir: filepath.Join(e.dir, "cluster"),
		QuotaBackendBytes: 8 << 30, ExtraArgs: []string{"--max-request-bytes=4194304"},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	e.cluster = c
	load(b, c, mib)
	e.minio = testenv.StartMinIO(b)
	e.minio.CreateBucket(b, "bench")
	e.minio.SetAWSEnv(b)
	return e
}

// load writes Kubernetes-shaped objects (JSON with a random part, so that it compresses about as
// real data does) until the database holds about mib MiB.
// loadedCluster starts a TLS-less etcd 3.6 cluster of size members in dir/cluster, with room for
// a large database, and loads mib MiB into it; it is closed when the benchmark ends.
func loadedCluster(b *testing.B, dir string, size, mib int) *testcluster.Cluster {
	b.Helper()
	c, err := testcluster.Start(b.Context(), testcluster.Options{
		Size: size, Command: []string{testenv.Etcd(b, "3.6", "etcd")}, Dir: filepath.Join(dir, "cluster"),
		QuotaBackendBytes: 8 << 30, ExtraArgs: []string{"--max-request-bytes=4194304"},
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	load(b, c, mib)
	return c
}

func load(b *testing.B, c *testcluster.Cluster, mib int) {
	b.Helper()
	cli, err := c.Client(b.Context())
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	const valueSize = 64 << 10
	total := mib << 20 / valueSize
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Go(func() {
			random := make([]byte, valueSize/4)
			for i := w * 16; i < total; i += 4 * 16 {
				var ops []clientv3.Op
				for j := i; j < min(i+16, total); j++ {
					_, _ = rand.Read(random)
					val := fmt.Sprintf(`{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"cm-%06d","namespace":"bench","labels":{"app":"bench","tier":"backend"}},"data":{"blob":"%s","text":"%s"}}`,
						j, hex.EncodeToString(random), strings.Repeat("lorem ipsum dolor sit amet ", valueSize/2/27))
					ops = append(ops, clientv3.OpPut(fmt.Sprintf("/registry/configmaps/bench/cm-%06d", j), val))
				}
				if _, err := cli.Txn(b.Context()).Then(ops...).Commit(); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
}

// timed runs a command and returns its wall time and peak anonymous memory (RssAnon, sampled
// every 5 ms; the page cache of files it maps or writes does not count).
func timed(b *testing.B, name string, args ...string) (time.Duration, int64, string) {
	b.Helper()
	d, peak, out, err := run(name, args...)
	if err != nil {
		b.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return d, peak, out
}

// timedAllowFail is timed for commands whose non-zero exit is expected (doctor reports
// problems through its exit code).
func timedAllowFail(b *testing.B, name string, args ...string) (time.Duration, int64, string) {
	b.Helper()
	d, peak, out, _ := run(name, args...)
	return d, peak, out
}

func execCommand(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

func run(name string, args ...string) (time.Duration, int64, string, error) {
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, "", err
	}
	var peak int64
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if v := rssAnon(cmd.Process.Pid); v > peak {
					peak = v
				}
			}
		}
	}()
	err := cmd.Wait()
	d := time.Since(start)
	close(done)
	<-sampled
	return d, peak, out.String(), err
}

func rssAnon(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "RssAnon:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// dropCaches writes dirty pages back, then empties the page cache, so that the next command
// reads from the disk.
func dropCaches() {
	syscall.Sync()
	_ = os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0o200)
}

// BenchmarkSnapshotSave compares, on one database of at least 1 GiB:
//   - etcdctl snapshot save alone;
//   - the by-hand pipeline: etcdctl snapshot save, etcdutl snapshot status, gzip, upload to S3;
//   - etcdguard snapshot save to a local target and MinIO, zstd, verified;
//
// then etcdguard snapshot verify of the local copy against sha256sum of the plain snapshot.
func BenchmarkSnapshotSave(b *testing.B) {
	e := setup(b)
	ep := e.cluster.Endpoints()[0]
	s3URL := "s3://bench/etcdguard?endpoint=" + e.minio.Endpoint
	results := map[string]time.Duration{}
	var guardPeak int64
	{
		plain := filepath.Join(e.dir, "etcdctl.db")
		os.Remove(plain)
		dropCaches()
		results["etcdctl"], _, _ = timed(b, e.etcdctl, "--endpoints", ep, "snapshot", "save", plain)
		st, err := os.Stat(plain)
		if err != nil {
			b.Fatal(err)
		}
		e.dbSize = st.Size()

		// By hand: save, status, gzip, upload.
		byHand := filepath.Join(e.dir, "byhand.db")
		os.Remove(byHand)
		os.Remove(byHand + ".gz")
		dropCaches()
		start := time.Now()
		timed(b, e.etcdctl, "--endpoints", ep, "snapshot", "save", byHand)
		timed(b, e.etcdutl, "snapshot", "status", byHand, "-w", "json")
		timed(b, "gzip", "-k", byHand)
		if _, err := e.minio.Client(b).FPutObject(context.Background(), "bench", "byhand/etcd.db.gz", byHand+".gz", minio.PutObjectOptions{}); err != nil {
			b.Fatal(err)
		}
		results["by hand"] = time.Since(start)

		repo := filepath.Join(e.dir, "repo")
		dropCaches()
		var guardOut string
		results["etcdguard"], guardPeak, guardOut = timed(b, e.etcdguard, "snapshot", "save", "--endpoints", ep,
			"--target", "file://"+repo, "--target", s3URL, "--work-dir", e.dir)
		fmt.Printf("etcdguard snapshot save said:\n%s\n", guardOut)

		// Verify throughput: etcdguard re-reads, decompresses and checks the local copy;
		// sha256sum only hashes the plain snapshot.
		dropCaches()
		results["sha256sum"], _, _ = timed(b, "sha256sum", plain)
		dropCaches()
		results["etcdguard verify"], _, _ = timed(b, e.etcdguard, "snapshot", "verify", "--all", "--target", "file://"+repo, "--work-dir", e.dir)
	}
	mib := float64(e.dbSize) / (1 << 20)
	ratio := func(a, b string) float64 { return results[a].Seconds() / results[b].Seconds() }
	b.ReportMetric(ratio("etcdguard", "etcdctl"), "guard/etcdctl")
	b.ReportMetric(ratio("etcdguard", "by hand"), "guard/byhand")
	b.ReportMetric(float64(guardPeak)/(1<<20), "guard-peak-RssAnon-MiB")
	summary := map[string]any{"db_mib": mib}
	for k, v := range results {
		summary[k+"_seconds"] = v.Seconds()
	}
	js, _ := json.Marshal(summary)
	fmt.Printf("\n| what | wall time | ratio |\n|---|---|---|\n")
	fmt.Printf("| etcdctl snapshot save | %.2f s | 1.00 |\n", results["etcdctl"].Seconds())
	fmt.Printf("| by hand: etcdctl save + etcdutl status + gzip + S3 upload | %.2f s | %.2f |\n", results["by hand"].Seconds(), ratio("by hand", "etcdctl"))
	fmt.Printf("| etcdguard snapshot save (local + MinIO, zstd, verified) | %.2f s | %.2f |\n", results["etcdguard"].Seconds(), ratio("etcdguard", "etcdctl"))
	fmt.Printf("\netcdguard peak RssAnon: %.1f MiB; database: %.0f MiB\n", float64(guardPeak)/(1<<20), mib)
	fmt.Printf("\n| verify | wall time | throughput |\n|---|---|---|\n")
	fmt.Printf("| sha256sum of the plain snapshot | %.2f s | %.0f MiB/s |\n", results["sha256sum"].Seconds(), mib/results["sha256sum"].Seconds())
	fmt.Printf("| etcdguard snapshot verify (local copy: sha256, zstd, trailer, bbolt check, status) | %.2f s | %.0f MiB/s |\n", results["etcdguard verify"].Seconds(), mib/results["etcdguard verify"].Seconds())
	fmt.Printf("\n%s\n", js)
}
