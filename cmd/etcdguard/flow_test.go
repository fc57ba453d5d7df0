package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/restore"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

// TestRecoverBackupRestoreFlow is what an operator runs after a power cut, across commands: the
// cluster is recovered by the restore path (every database damaged, so from the backup, with the
// Kubernetes-safe revision bump); a backup is taken of the recovered cluster right away, as the
// report says, and verified; that backup restores a new cluster elsewhere (other hosts' ports and
// data dirs, another CA), which serves the same keys and is backed up in turn.
func TestRecoverBackupRestoreFlow(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			// The power cut: every database damaged; only the backup is left.
			e := newRecoverEnv(t, version)
			loadData(t, e.c, 300, 100)
			first := saveJSON(t, 0, append([]string{"--target", "file://" + e.repo}, tlsFlags(e.c)...)...)
			want := readAll(t, e.c, first.Revision)
			powerCut(t, e.c)
			for _, m := range e.c.Members() {
				damageDB(t, m)
			}
			out := runRecover(t, e)
			require.Equal(t, restore.PathRestore, out.Plan.Path)
			require.Equal(t, "backup", out.Plan.Source.Kind)
			require.Greater(t, out.Verified.Revision, first.Revision+int64(restore.MinBump)-1, "revisions were bumped")
			require.Equal(t, want, readAll(t, e.c, 0), "the recovered cluster serves the backup's keys")

			// A backup right after the recovery: it must be taken and verify (the bump's entry is
			// part of every snapshot of the recovered cluster from now on).
			second := saveJSON(t, 0, append([]string{"--target", "file://" + e.repo}, tlsFlags(e.c)...)...)
			require.Equal(t, 1, second.Status.BumpKeys, "the bump's empty key is counted, as etcdutl counts it")
			r := etcdguard(t, "snapshot", "verify", second.ID, "--target", "file://"+e.repo)
			require.Equal(t, 0, r.code, r.stderr)
			file := filepath.Join(t.TempDir(), "second.db")
			r = etcdguard(t, "snapshot", "get", second.ID, "--output", file, "--target", "file://"+e.repo)
			require.Equal(t, 0, r.code, r.stderr)
			etcdutl, err := exec.CommandContext(t.Context(), testenv.Etcd(t, "3.6", "etcdutl"), "snapshot", "status", file, "-w", "json").CombinedOutput()
			require.NoError(t, err, "etcdutl reads the backup of the recovered cluster: %s", etcdutl)

			// A new cluster elsewhere, its disks gone: recovered from the recovered cluster's
			// backup.
			e2 := newRecoverEnv(t, version)
			powerCut(t, e2.c)
			for _, m := range e2.c.Members() {
				require.NoError(t, os.RemoveAll(m.DataDir))
			}
			flags := append(tlsFlags(e2.c), "--target", "file://"+e.repo, "--state-dir", e2.state)
			for _, m := range e2.members {
				flags = append(flags, "--member", m)
			}
			r = etcdguard(t, append([]string{"recover", "--yes"}, flags...)...)
			require.Equal(t, 0, r.code, r.stderr)
			require.Contains(t, r.stdout, "backup "+second.ID)
			require.Contains(t, r.stdout, "verified: 3 members healthy")
			require.Equal(t, want, readAll(t, e2.c, 0), "the new cluster serves the same keys")

			// And that cluster is backed up in turn.
			third := saveJSON(t, 0, append([]string{"--target", "file://" + e2.repo}, tlsFlags(e2.c)...)...)
			require.Greater(t, third.Revision, second.Revision, "bumped again above the source")
			r = etcdguard(t, "snapshot", "verify", third.ID, "--target", "file://"+e2.repo)
			require.Equal(t, 0, r.code, r.stderr)
		})
	}
}
