package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestDrillCommand: `etcdguard drill` of a backup of a real 3-member TLS cluster, stored in a
// local folder and in MinIO, passes (exit 0) from the remote copy and reports the revision it
// reached; with a byte of the remote data object flipped it fails as corrupt (exit 5) and records
// the failure, which `drill --last` shows; --endpoints is refused (exit 2): a drill never
// connects to the cluster, whose revision and keys no drill changes. The scratch member is the
// test binary acting as etcdguard (its `etcd` command), as etcdguard's own executable is.
func TestDrillCommand(t *testing.T) {
	t.Setenv("ETCDGUARD_TEST_AS_MAIN", "1") // the scratch member: this binary as `etcdguard etcd`
	c := startCluster(t, "3.6")
	loadData(t, c, 300, 200)
	m, s3URL := startS3(t)
	dir := t.TempDir()
	repo, work, state := filepath.Join(dir, "repo"), filepath.Join(dir, "work"), filepath.Join(dir, "state")
	require.NoError(t, os.MkdirAll(work, 0o700))
	cfg := filepath.Join(dir, "etcdguard.yaml")
	require.NoError(t, os.WriteFile(cfg, fmt.Appendf(nil, "targets:\n  - name: local\n    url: file://%s\n  - name: s3\n    url: %q\nwork-dir: %s\nstate-dir: %s\n", repo, s3URL, work, state), 0o600))
	save := etcdguard(t, append([]string{"snapshot", "save", "--config", cfg}, tlsFlags(c)...)...)
	require.Equal(t, 0, save.code)

	cli, err := c.Client(t.Context())
	require.NoError(t, err)
	defer cli.Close()
	before, err := cli.Get(t.Context(), "", clientv3.WithPrefix())
	require.NoError(t, err)

	type report struct {
		Backup   string `json:"backup"`
		Target   string `json:"target"`
		Revision int64  `json:"revision"`
		Keys     int64  `json:"keys"`
		OK       bool   `json:"ok"`
		Reason   string `json:"reason"`
	}
	r := etcdguard(t, "drill", "--config", cfg, "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	var rep report
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep))
	require.True(t, rep.OK)
	require.Equal(t, "s3", rep.Target)
	require.Equal(t, before.Header.Revision, rep.Revision)
	require.Equal(t, before.Count, rep.Keys)

	table := etcdguard(t, "drill", "--config", cfg, "--target", "local")
	require.Equal(t, 0, table.code, table.stderr)
	require.Contains(t, table.stdout, "passed")
	require.Contains(t, table.stdout, "recovery time")

	// A flipped byte in the remote copy's data object.
	mc := m.Client(t)
	key := ""
	for o := range mc.ListObjects(t.Context(), "etcd-backups", minio.ListObjectsOptions{Prefix: "prod/snapshots/" + rep.Backup + "/", Recursive: true}) {
		require.NoError(t, o.Err)
		if strings.Contains(o.Key, "snapshot.db") {
			key = o.Key
		}
	}
	require.NotEmpty(t, key)
	obj, err := mc.GetObject(t.Context(), "etcd-backups", key, minio.GetObjectOptions{})
	require.NoError(t, err)
	data, err := io.ReadAll(obj)
	require.NoError(t, err)
	obj.Close()
	data[len(data)/3] ^= 0x01
	_, err = mc.PutObject(t.Context(), "etcd-backups", key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{})
	require.NoError(t, err)
	bad := etcdguard(t, "drill", "--config", cfg, "-o", "json")
	require.Equal(t, 5, bad.code, "a corrupt backup: exit code 5")
	require.NoError(t, json.Unmarshal([]byte(bad.stdout), &rep))
	require.False(t, rep.OK)
	require.Equal(t, "corrupt", rep.Reason)
	last := etcdguard(t, "drill", "--last", "--config", cfg)
	require.Equal(t, 0, last.code)
	require.Contains(t, last.stdout, "FAILED (corrupt)")

	refused := etcdguard(t, "drill", "--config", cfg, "--endpoints", c.Endpoints()[0])
	require.Equal(t, 2, refused.code)
	require.Contains(t, refused.stderr, "no --endpoints")

	entries, err := os.ReadDir(work)
	require.NoError(t, err)
	require.Empty(t, entries, "the drills removed everything they wrote")
	after, err := cli.Get(t.Context(), "", clientv3.WithPrefix())
	require.NoError(t, err)
	require.Equal(t, before.Header.Revision, after.Header.Revision, "no drill wrote to the live cluster")
	require.Equal(t, before.Kvs, after.Kvs)
}
