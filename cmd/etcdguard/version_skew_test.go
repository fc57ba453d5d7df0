package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/testcluster"
)

// TestRestoreVersionSkew: a backup of etcd 3.6 restored over the data dir of a 3.5 member is a
// downgrade: refused (exit 9) with nothing moved, unless --allow-version-skew. A 3.5 backup
// restored over a 3.6 member's data dir goes on with a warning. Without a data dir to read,
// --etcd-version tells the version, and without either the restore goes on with a note.
func TestRestoreVersionSkew(t *testing.T) {
	type backup struct {
		c    *testcluster.Cluster
		repo string
		id   string
	}
	backups := map[string]backup{}
	for _, version := range []string{"3.5", "3.6"} {
		c := startCluster(t, version)
		loadData(t, c, 100, 20)
		repo := filepath.Join(t.TempDir(), "repo")
		m := saveJSON(t, 0, append([]string{"--target", "file://" + repo}, tlsFlags(c)...)...)
		backups[version] = backup{c, repo, m.ID}
		// The member whose data dir is replaced is stopped, as restore asks.
		require.NoError(t, c.Members()[0].Kill())
	}

	cases := []struct {
		name    string
		backup  string // the version of the cluster the backup is taken from
		over    string // the version whose member's data dir is replaced; "" for an empty dir
		args    []string
		code    int
		stderr  []string
		verdict string
	}{
		{"3.6 backup over a 3.5 data dir: refused", "3.6", "3.5", nil, 9, []string{"downgrade", "etcd 3.6 backup restored for etcd 3.5", "--allow-version-skew", "nothing was changed"}, ""},
		{"3.6 backup over a 3.5 data dir, allowed", "3.6", "3.5", []string{"--allow-version-skew"}, 0, []string{"warning", "allowed by --allow-version-skew"}, "warning"},
		{"3.5 backup over a 3.6 data dir: a warning", "3.5", "3.6", nil, 0, []string{"warning", "etcd 3.5 backup restored for etcd 3.6"}, "warning"},
		{"3.6 backup over a 3.6 data dir", "3.6", "3.6", nil, 0, nil, "ok"},
		{"3.6 backup for --etcd-version 3.5: refused", "3.6", "", []string{"--etcd-version", "3.5.35"}, 9, []string{"downgrade"}, ""},
		{"3.6 backup, version not known: a note", "3.6", "", nil, 0, []string{"note", "--etcd-version"}, "unknown"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := backups[tc.backup]
			mem := b.c.Members()[0]
			dataDir := filepath.Join(t.TempDir(), "empty")
			if tc.over != "" {
				// A copy of the stopped member's data dir, so that every case starts from it.
				dataDir = filepath.Join(t.TempDir(), "member")
				require.NoError(t, os.CopyFS(dataDir, os.DirFS(backups[tc.over].c.Members()[0].DataDir)))
			}
			parent := filepath.Dir(dataDir)
			before := treeHashes(t, parent)
			args := append([]string{"restore", b.id, "--target", "file://" + b.repo, "--data-dir", dataDir, "--name", mem.Name,
				"--initial-cluster", b.c.InitialCluster(), "--initial-advertise-peer-urls", mem.PeerURL, "--quarantine", "-o", "json"}, tc.args...)
			r := etcdguard(t, args...)
			require.Equal(t, tc.code, r.code, r.stderr)
			for _, s := range tc.stderr {
				require.Contains(t, r.stderr, s)
			}
			if tc.code != 0 {
				require.Equal(t, before, treeHashes(t, parent), "a refused restore moves and writes nothing")
				entries, err := os.ReadDir(parent)
				require.NoError(t, err)
				require.Len(t, entries, min(len(before), 1), "no quarantine, no half-built restore")
				return
			}
			if tc.verdict == "ok" {
				require.NotContains(t, r.stderr, "warning")
			}
			var rep struct {
				VersionSkew struct {
					Verdict string `json:"verdict"`
					Backup  string `json:"backup_version"`
					Target  string `json:"target_version"`
				} `json:"version_skew"`
			}
			require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep))
			require.Equal(t, tc.verdict, rep.VersionSkew.Verdict)
			require.True(t, strings.HasPrefix(rep.VersionSkew.Backup, tc.backup+"."), rep.VersionSkew.Backup)
			if tc.over != "" {
				require.True(t, strings.HasPrefix(rep.VersionSkew.Target, tc.over+"."), rep.VersionSkew.Target)
			}
			require.DirExists(t, filepath.Join(dataDir, "member", "wal"))
		})
	}
}
