package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/etcdx"
	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/snapshot"
	"github.com/etcdguard/etcdguard/internal/testcluster"
	"github.com/etcdguard/etcdguard/internal/testenv"
	"github.com/etcdguard/etcdguard/internal/testrepo"
)

// TestPruneCrash kills `etcdguard prune` (SIGKILL, as a power cut) at each kind of step boundary
// of a removal, then runs it again: the second run takes over the dead run's lock, finishes, and
// leaves exactly what the policy keeps (the newest backup, and an older one whose delta chain is
// open), every backup left verifies, and no lock, chain or backup folder of a removed backup is
// left. internal/prune's TestPruneCrashAtEveryStep stops at every single boundary in process.
func TestPruneCrash(t *testing.T) {
	c, err := testcluster.Start(t.Context(), testcluster.Options{Size: 1, Command: []string{testenv.Etcd(t, "3.6", "etcd")}, Dir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	template := filepath.Join(t.TempDir(), "template")
	tg := repository.Target{Name: "ssd", URL: "file://" + template}
	require.NoError(t, tg.Normalize())
	now := time.Now()
	var backups []repository.Manifest
	for i := range 4 {
		at := now.Add(-time.Duration(4-i) * 24 * time.Hour)
		res, err := snapshot.Save(t.Context(), snapshot.SaveOptions{Etcd: etcdx.Config{Endpoints: c.Endpoints()}, Targets: []repository.Target{tg}, WorkDir: t.TempDir(), Now: func() time.Time { return at }})
		require.NoError(t, err)
		backups = append(backups, res.Manifest)
	}
	repo, err := repository.Open(t.Context(), tg)
	require.NoError(t, err)
	testrepo.WriteChain(t, repo, backups[0], 2, true)
	testrepo.WriteChain(t, repo, backups[1], 2, false) // open: kept
	testrepo.WriteChain(t, repo, backups[2], 2, true)
	testrepo.WriteChain(t, repo, backups[3], 1, false) // the writer's, now
	repo.Close()
	kept := []string{backups[1].ID, backups[3].ID}

	for _, point := range []string{"prune/segment-manifest-removed", "prune/segment-data-removed", "prune/base-manifest-removed", "prune/base-data-removed", "prune/chain-end-removed"} {
		t.Run(point, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "repo")
			testenv.CopyTree(t, template, dir)
			cfg := filepath.Join(t.TempDir(), "etcdguard.yaml")
			require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf("targets:\n  - name: ssd\n    url: file://%s\n    keep: {last: 1}\n", dir)), 0o600))
			crashAt(t, point, "prune", "--config", cfg)
			locks, _ := filepath.Glob(filepath.Join(dir, "locks", "*"))
			require.Len(t, locks, 1, "the killed run's lock is left")

			r := etcdguard(t, "prune", "--config", cfg)
			require.Equal(t, 0, r.code, r.stderr)
			require.Contains(t, r.stderr, "taking over a stale repository lock")
			r = etcdguard(t, "snapshot", "verify", "--all", "--config", cfg)
			require.Equal(t, 0, r.code, r.stderr)
			r = etcdguard(t, "snapshot", "list", "--config", cfg, "-o", "json")
			require.Equal(t, 0, r.code, r.stderr)
			var listed struct {
				Backups []struct {
					ID string `json:"id"`
				} `json:"backups"`
			}
			require.NoError(t, json.Unmarshal([]byte(r.stdout), &listed))
			var ids []string
			for _, b := range listed.Backups {
				ids = append(ids, b.ID)
			}
			require.Equal(t, kept, ids)
			for _, sub := range []string{"snapshots", "deltas"} {
				entries, err := os.ReadDir(filepath.Join(dir, sub))
				require.NoError(t, err)
				var names []string
				for _, e := range entries {
					names = append(names, e.Name())
				}
				require.Equal(t, kept, names, "%s holds the kept backups only", sub)
			}
			locks, _ = filepath.Glob(filepath.Join(dir, "locks", "*"))
			require.Empty(t, locks)
		})
	}
}
