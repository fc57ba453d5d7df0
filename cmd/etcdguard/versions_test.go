package main

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/testenv"
)

// TestManifestVersions: a backup's manifest records the source's server version (etcd_version,
// what the member's Status reports) and the snapshot's storage version (status.version, what
// etcdutl snapshot status reports; 3.6 snapshots have one), on etcd 3.5 and 3.6. restore reads
// both for its version-skew checks.
func TestManifestVersions(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			c := startCluster(t, version)
			loadData(t, c, 50, 10)
			cli, err := c.Client(t.Context())
			require.NoError(t, err)
			defer cli.Close()
			// etcd 3.6 writes its storage version into the database some seconds after the
			// cluster version is decided (its storage version monitor); until then the database
			// records none, and Status reports the version it infers from the schema (3.5.0). A
			// snapshot taken then has no storage version while the member, asked a moment later,
			// may report 3.6.0. Wait until every member reports its own minor version.
			require.Eventually(t, func() bool {
				for _, ep := range c.Endpoints() {
					st, err := cli.Status(t.Context(), ep)
					if err != nil || (version != "3.5" && !strings.HasPrefix(st.StorageVersion, version+".")) {
						return false
					}
				}
				return true
			}, 60*time.Second, 200*time.Millisecond, "every member has written its storage version")
			repo := filepath.Join(t.TempDir(), "repo")
			m := saveJSON(t, 0, append([]string{"--target", "file://" + repo}, tlsFlags(c)...)...)

			st, err := cli.Status(t.Context(), m.Source.Endpoint)
			require.NoError(t, err)
			require.Equal(t, st.Version, m.EtcdVersion, "etcd_version is the member's server version")
			require.Equal(t, st.StorageVersion, m.StorageVersion, "storage_version is what the member reports")

			out := filepath.Join(t.TempDir(), "snapshot.db")
			r := etcdguard(t, "snapshot", "get", m.ID, "--output", out, "--target", "file://"+repo)
			require.Equal(t, 0, r.code, r.stderr)
			raw, err := exec.CommandContext(t.Context(), testenv.Etcd(t, "3.6", "etcdutl"), "snapshot", "status", out, "-w", "json").Output()
			require.NoError(t, err)
			var ust struct {
				Version string `json:"version"`
			}
			require.NoError(t, json.Unmarshal(raw, &ust), string(raw))
			require.Equal(t, ust.Version, m.Status.Version, "status.version is etcdutl's")
			t.Logf("etcd %s: etcd_version %q, status.version %q, storage_version %q", version, m.EtcdVersion, m.Status.Version, m.StorageVersion)
		})
	}
}
