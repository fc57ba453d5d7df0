// Package testenv finds the real programs etcdguard's tests run against (etcd 3.5 and 3.6,
// etcdctl, etcdutl, MinIO). scripts/deps builds and caches them; tests that need one fail with
// an instruction when it is missing, rather than skipping silently.
package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

// EtcdVersions lists the etcd minor versions every real-cluster test runs against.
func EtcdVersions() []string { return []string{"3.5", "3.6"} }

// ToolsDir returns the folder scripts/deps installs binaries into.
func ToolsDir() string {
	if d := os.Getenv("ETCDGUARD_TOOLS"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "etcdguard-tools")
	}
	return filepath.Join(home, ".cache", "etcdguard", "tools")
}

// Etcd returns the path of a binary ("etcd", "etcdctl" or "etcdutl") of an etcd minor version
// ("3.5" or "3.6"), failing the test if scripts/deps has not installed it.
func Etcd(tb testing.TB, version, binary string) string {
	tb.Helper()
	return require(tb, filepath.Join(ToolsDir(), "etcd-"+version, binary))
}

// MinIO returns the path of the MinIO server binary, failing the test if it is missing.
func MinIO(tb testing.TB) string {
	tb.Helper()
	return require(tb, filepath.Join(ToolsDir(), "minio", "minio"))
}

func require(tb testing.TB, path string) string {
	tb.Helper()
	if _, err := os.Stat(path); err != nil {
		tb.Fatalf("%s is missing: run scripts/deps (or scripts/test, which runs it) to build the test binaries", path)
	}
	return path
}

// Prefix returns an S3 key prefix of tb's own, made of its name: subtests that share a bucket
// never see one another's objects (the base name of t.TempDir() repeats across subtests).
func Prefix(tb testing.TB) string {
	b := []byte(tb.Name())
	for i, c := range b {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
			b[i] = '-'
		}
	}
	return string(b)
}

// Promtool and Prometheus return the paths of Prometheus' promtool and server (Debian's
// prometheus package, which scripts/deps installs), failing the test if they are missing.
func Promtool(tb testing.TB) string {
	tb.Helper()
	return require(tb, prometheusBin("promtool"))
}

// Prometheus: see Promtool.
func Prometheus(tb testing.TB) string {
	tb.Helper()
	return require(tb, prometheusBin("prometheus"))
}

func prometheusBin(name string) string {
	if p := filepath.Join(ToolsDir(), "prometheus", name); fileExists(p) {
		return p
	}
	return filepath.Join("/usr/bin", name)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
