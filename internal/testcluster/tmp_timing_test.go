package testcluster_test

import (
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/etcdguard/etcdguard/internal/testcluster"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

func TestTmpTiming(t *testing.T) {
	for _, v := range testenv.EtcdVersions {
		for _, size := range []int{1, 3} {
			t0 := time.Now()
			c, err := testcluster.Start(t.Context(), testcluster.Options{Size: size, TLS: true, Command: []string{testenv.Etcd(t, v, "etcd")}, Dir: t.TempDir(),
				Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
			if err != nil {
				t.Fatal(err)
			}
			t1 := time.Now()
			m := c.Members()[0]
			if err := m.Kill(); err != nil {
				t.Fatal(err)
			}
			t2 := time.Now()
			if err := m.Restart(t.Context()); err != nil {
				t.Fatal(err)
			}
			t3 := time.Now()
			if err := m.Stop(t.Context()); err != nil {
				t.Fatal(err)
			}
			t4 := time.Now()
			c.Close()
			t.Logf("%s size %d: start %v kill %v restart %v stop %v close %v", v, size, t1.Sub(t0), t2.Sub(t1), t3.Sub(t2), t4.Sub(t3), time.Since(t4))
		}
	}
}
