package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/restore"
	"github.com/etcdguard/etcdguard/internal/snapshot"
	"github.com/etcdguard/etcdguard/internal/testcluster"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

// restoreClusterFrom stops every member of c, restores each one's data dir from the backup id
// in repo with etcdguard restore (the old data dirs quarantined, revisions bumped), and starts
// them together. It returns the bump the restore applied.
func restoreClusterFrom(t *testing.T, c *testcluster.Cluster, repo, id, token string) uint64 {
	t.Helper()
	for _, mem := range c.Members() {
		require.NoError(t, mem.Kill())
	}
	var bump uint64
	for _, mem := range c.Members() {
		r := etcdguard(t, "restore", id, "--target", "file://"+repo, "--data-dir", mem.DataDir, "--name", mem.Name,
			"--initial-cluster", c.InitialCluster(), "--initial-cluster-token", token,
			"--initial-advertise-peer-urls", mem.PeerURL, "--quarantine", "-o", "json")
		require.Equal(t, 0, r.code, r.stderr)
		var rep struct {
			Bump uint64 `json:"bump"`
		}
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep))
		require.Positive(t, rep.Bump)
		bump = rep.Bump
	}
	var wg sync.WaitGroup
	errs := make([]error, len(c.Members()))
	for i, mem := range c.Members() {
		wg.Go(func() { errs[i] = mem.Restart(t.Context()) })
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	return bump
}

// TestBackupAfterBumpedRestore: etcdutl's revision bump leaves an entry with an empty value at
// the bumped revision. A cluster restored that way (Kubernetes-safe, the default) must still be
// backed up: the save verifies, etcdguard's status agrees with etcdutl's on the new backup, and
// that backup itself restores (bumped again) into a cluster serving the same keys.
func TestBackupAfterBumpedRestore(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			c := startCluster(t, version)
			loadData(t, c, 200, 50)
			repo := filepath.Join(t.TempDir(), "repo")
			first := saveJSON(t, 0, append([]string{"--target", "file://" + repo}, tlsFlags(c)...)...)
			bump := restoreClusterFrom(t, c, repo, first.ID, "bumped-once-"+version)

			// Writes after the restore, so the bump's entry is not the newest revision.
			cli, err := c.Client(t.Context())
			require.NoError(t, err)
			for i := range 20 {
				_, err := cli.Put(t.Context(), fmt.Sprintf("/registry/configmaps/ns/after-restore-%d", i), secretMarker)
				require.NoError(t, err)
			}
			cli.Close()
			want := readAll(t, c, 0)

			second := saveJSON(t, 0, append([]string{"--target", "file://" + repo}, tlsFlags(c)...)...)
			require.Greater(t, second.Revision, first.Revision+int64(bump), "the backup is of the bumped cluster")

			file := filepath.Join(t.TempDir(), "second.db")
			r := etcdguard(t, "snapshot", "get", second.ID, "--output", file, "--target", "file://"+repo)
			require.Equal(t, 0, r.code, r.stderr)
			r = etcdguard(t, "snapshot", "status", file, "-o", "json")
			require.Equal(t, 0, r.code, r.stderr)
			var fst struct {
				Status struct {
					Hash     uint32 `json:"hash"`
					Revision int64  `json:"revision"`
					TotalKey int    `json:"total_key"`
				} `json:"status"`
			}
			require.NoError(t, json.Unmarshal([]byte(r.stdout), &fst))
			ust := etcdutlStatus(t, testenv.Etcd(t, "3.6", "etcdutl"), file)
			require.Equal(t, ust.Hash, fst.Status.Hash)
			require.Equal(t, ust.Revision, fst.Status.Revision)
			require.Equal(t, ust.TotalKey, fst.Status.TotalKey)
			require.Equal(t, second.Status.Hash, ust.Hash, "the manifest agrees with etcdutl")
			require.Equal(t, second.Status.TotalKey, ust.TotalKey)
			require.Equal(t, len(want)+1, ust.TotalKey, "etcdutl counts the bump's entry as a key")

			restoreClusterFrom(t, c, repo, second.ID, "bumped-twice-"+version)
			require.Equal(t, want, readAll(t, c, 0), "the second backup serves the keys it was taken with")
			requireNoSecrets(t, logs.String())
		})
	}
}

// TestRestoreBumpBounds: --bump-revision may raise a real snapshot's revision up to 2^53 and no
// further; a bump of 2^63-1, or one that would wrap the revision past it, is a usage error
// (exit 2) naming the flag, and no data dir is created.
func TestRestoreBumpBounds(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			c := startCluster(t, version)
			loadData(t, c, 100, 20)
			repo := filepath.Join(t.TempDir(), "repo")
			m := saveJSON(t, 0, append([]string{"--target", "file://" + repo}, tlsFlags(c)...)...)
			file := filepath.Join(t.TempDir(), "snapshot.db")
			r := etcdguard(t, "snapshot", "get", m.ID, "--output", file, "--target", "file://"+repo)
			require.Equal(t, 0, r.code, r.stderr)
			rev := m.Revision
			require.Positive(t, rev)

			largest := uint64(restore.MaxBumpedRevision - rev)
			cases := []struct {
				name   string
				bump   uint64
				code   int
				stderr []string
			}{
				{"2^63-1", math.MaxInt64, 2, []string{"--bump-revision 9223372036854775807", "wrap around"}},
				{"wraps past 2^63-1", uint64(math.MaxInt64-rev) + 1, 2, []string{fmt.Sprintf("--bump-revision %d", uint64(math.MaxInt64-rev)+1), "wrap around"}},
				{"one past 2^53", largest + 1, 2, []string{fmt.Sprintf("--bump-revision %d", largest+1), fmt.Sprintf("the largest bump for this snapshot is %d", largest)}},
				{"up to 2^53", largest, 0, nil},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					mem := c.Members()[0]
					parent := t.TempDir()
					dataDir := filepath.Join(parent, "member")
					r := etcdguard(t, "restore", file, "--data-dir", dataDir, "--name", mem.Name, "--initial-cluster", c.InitialCluster(),
						"--initial-advertise-peer-urls", mem.PeerURL, "--bump-revision", fmt.Sprint(tc.bump))
					require.Equal(t, tc.code, r.code, r.stderr)
					for _, s := range tc.stderr {
						require.Contains(t, r.stderr, s)
					}
					if tc.code != 0 {
						entries, err := os.ReadDir(parent)
						require.NoError(t, err)
						require.Empty(t, entries, "a refused restore leaves nothing behind")
						return
					}
					st, err := snapshot.ReadStatus(t.Context(), filepath.Join(dataDir, "member", "snap", "db"))
					require.NoError(t, err)
					require.Equal(t, restore.MaxBumpedRevision, st.Revision, "the revision went up to 2^53, not around")
				})
			}
		})
	}
}
