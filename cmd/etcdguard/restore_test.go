package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdguard/etcdguard/internal/testenv"
)

// TestRestoreUnderWatch restores a 3-member TLS cluster from a backup, with etcdguard's restore,
// under a client watching it: members of etcd 3.5 and 3.6 start on the restored data dirs, the
// watch opened before the restore is cancelled as compacted, every revision after the restore is
// above every revision before it, the keys are those of the backup, and the old data dirs are
// kept, moved aside.
func TestRestoreUnderWatch(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			c := startCluster(t, version)
			loadData(t, c, 300, 100)
			repo := filepath.Join(t.TempDir(), "repo")
			m := saveJSON(t, 0, append([]string{"--target", "file://" + repo}, tlsFlags(c)...)...)
			want := readAll(t, c, m.Revision)

			cli, err := c.Client(t.Context())
			require.NoError(t, err)
			defer cli.Close()
			// Writes after the backup: they are lost by the restore, and their revisions are the
			// ones Kubernetes must never see again.
			var highest int64
			for i := range 50 {
				resp, err := cli.Put(t.Context(), fmt.Sprintf("/registry/events/ns/after-%d", i), "lost")
				require.NoError(t, err)
				highest = resp.Header.Revision
			}
			watch := cli.Watch(clientv3.WithRequireLeader(t.Context()), "/registry/", clientv3.WithPrefix(), clientv3.WithRev(highest+1))

			for _, mem := range c.Members() {
				require.NoError(t, mem.Kill())
			}
			for _, mem := range c.Members() {
				// Without --quarantine, a data dir that holds data is refused and left alone.
				args := []string{"restore", "latest", "--target", "file://" + repo, "--data-dir", mem.DataDir, "--name", mem.Name,
					"--initial-cluster", c.InitialCluster(), "--initial-cluster-token", "restored-" + version,
					"--initial-advertise-peer-urls", mem.PeerURL}
				r := etcdguard(t, args...)
				require.Equal(t, 9, r.code)
				require.Contains(t, r.stderr, "--quarantine")
				require.DirExists(t, filepath.Join(mem.DataDir, "member", "wal"))

				r = etcdguard(t, append(args, "--quarantine", "-o", "json")...)
				require.Equal(t, 0, r.code, r.stderr)
				var rep struct {
					Bump   uint64 `json:"bump"`
					Member struct {
						Quarantined string `json:"quarantined"`
					} `json:"member"`
				}
				require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep))
				require.GreaterOrEqual(t, rep.Bump, uint64(1_000_000))
				require.DirExists(t, filepath.Join(rep.Member.Quarantined, "member", "wal"), "the old data dir is kept")
				info, err := os.Stat(mem.DataDir)
				require.NoError(t, err)
				require.Equal(t, os.FileMode(0o700), info.Mode().Perm())
			}
			// Members of a restored cluster need each other for quorum: start them together.
			var wg sync.WaitGroup
			errs := make([]error, len(c.Members()))
			for i, mem := range c.Members() {
				wg.Go(func() { errs[i] = mem.Restart(t.Context()) })
			}
			wg.Wait()
			require.NoError(t, errors.Join(errs...))

			// The watch opened before the restore ends, cancelled as compacted.
			var compacted int64
			require.Eventually(t, func() bool {
				select {
				case resp, ok := <-watch:
					if !ok {
						return true
					}
					if resp.CompactRevision > 0 {
						compacted = resp.CompactRevision
					}
					return resp.Canceled || compacted > 0
				default:
					return false
				}
			}, 30*time.Second, 50*time.Millisecond)
			require.Greater(t, compacted, highest, "the watch learns of a compaction above every revision it saw")

			got := readAll(t, c, 0)
			require.Equal(t, want, got, "the keys are those of the backup")
			resp, err := cli.Put(t.Context(), "/registry/events/ns/after-restore", "new")
			require.NoError(t, err)
			require.Greater(t, resp.Header.Revision, highest, "revisions after the restore are above every revision before it")
		})
	}
}

// TestRestoreLatestSkipsBadCopies: 'latest' is the newest backup whose copy verifies; a corrupt
// copy is skipped with a message and the next older backup is used.
func TestRestoreLatestSkipsBadCopies(t *testing.T) {
	c := startCluster(t, "3.6")
	loadData(t, c, 100, 50)
	repo := filepath.Join(t.TempDir(), "repo")
	older := saveJSON(t, 0, append([]string{"--target", "file://" + repo}, tlsFlags(c)...)...)
	loadData(t, c, 100, 50)
	newer := saveJSON(t, 0, append([]string{"--target", "file://" + repo}, tlsFlags(c)...)...)
	f := filepath.Join(repo, filepath.FromSlash(newer.Data))
	data, err := os.ReadFile(f)
	require.NoError(t, err)
	data[len(data)/3] ^= 0x40
	require.NoError(t, os.WriteFile(f, data, 0o600))

	m := c.Members()[0]
	dataDir := filepath.Join(t.TempDir(), "restored")
	r := etcdguard(t, "restore", "latest", "--target", "file://"+repo, "--data-dir", dataDir, "--name", m.Name,
		"--initial-cluster", c.InitialCluster(), "--initial-advertise-peer-urls", m.PeerURL, "-o", "json")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stderr, "skipping a copy that failed its checks")
	require.Contains(t, r.stderr, newer.ID)
	var rep struct {
		Backup  string   `json:"backup"`
		Skipped []string `json:"skipped"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep))
	require.Equal(t, older.ID, rep.Backup)
	require.Len(t, rep.Skipped, 1)
	require.DirExists(t, filepath.Join(dataDir, "member", "wal"))
}
