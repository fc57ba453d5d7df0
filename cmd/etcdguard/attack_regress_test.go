package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/restore"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

// These reproduce what a hostile-operator review of the issue 8 fixes found, on real 3-member TLS
// clusters of etcd 3.5 and 3.6.

// restoreByHand is what an operator does without etcdguard recover: restore every member from
// the latest backup, start them, and write a new key.
func restoreByHand(t *testing.T, e *recoverEnv, key string, extra ...string) {
	t.Helper()
	for _, m := range e.c.Members() {
		r := etcdguard(t, append([]string{"restore", "latest", "--target", "file://" + e.repo, "--data-dir", m.DataDir, "--name", m.Name,
			"--initial-cluster", e.c.InitialCluster(), "--initial-advertise-peer-urls", m.PeerURL, "--quarantine"}, extra...)...)
		require.Equal(t, 0, r.code, r.stderr)
	}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i, m := range e.c.Members() {
		wg.Go(func() { errs[i] = m.Restart(t.Context()) })
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	cli, err := e.c.Client(t.Context())
	require.NoError(t, err)
	defer cli.Close()
	_, err = cli.Put(t.Context(), key, "new")
	require.NoError(t, err)
}

// TestRecoverNeverRestoresOverNewerData: a plan that is carried on after the cluster was brought
// back by other means must be refused, whether it is resumed after a crash that had stopped
// every member, or applied from a plan file made before another recovery.
func TestRecoverNeverRestoresOverNewerData(t *testing.T) {
	const key = "/registry/configmaps/ns/written-after-the-hand-restore"
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			t.Run("resumed after a crash that had stopped every member", func(t *testing.T) {
				e := newRecoverEnv(t, version)
				damagedTwo(t, e, 0)
				crashAt(t, "recover/after-stop", append([]string{"recover", "--yes"}, e.flags()...)...)
				restoreByHand(t, e, key)
				r := etcdguard(t, append([]string{"recover", "--yes"}, e.flags()...)...)
				require.Equal(t, 9, r.code, r.stderr)
				require.Contains(t, r.stderr, "stopped by this plan and not restored by it, but now it answered with a leader")
				require.Equal(t, 1, present(t, e.c, []string{key}), "the new key is still there")
			})
			t.Run("a plan file applied after another recovery", func(t *testing.T) {
				e := newRecoverEnv(t, version)
				damagedTwo(t, e, 0)
				planFile := filepath.Join(e.dir, "plan.json")
				r := etcdguard(t, append([]string{"recover", "plan", "--out", planFile}, e.flags()...)...)
				require.Equal(t, 0, r.code, r.stderr)
				runRecover(t, e)
				cli, err := e.c.Client(t.Context())
				require.NoError(t, err)
				defer cli.Close()
				_, err = cli.Put(t.Context(), key, "new")
				require.NoError(t, err)
				r = etcdguard(t, append([]string{"recover", "apply", "--plan", planFile, "--target", "file://" + e.repo, "--state-dir", filepath.Join(e.dir, "state2")}, tlsFlags(e.c)...)...)
				require.Equal(t, 9, r.code, r.stderr)
				require.Contains(t, r.stderr, "now it answered with a leader")
				require.Equal(t, 1, present(t, e.c, []string{key}), "the new key is still there")
			})
		})
	}
}

// TestRecoverOneAtATime: a second recover on the same state dir while one runs is refused
// (exit code 6) before it looks at anything.
func TestRecoverOneAtATime(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			e := newRecoverEnv(t, version)
			damagedTwo(t, e, 0)
			unlock, err := (&restore.Recoverer{StateDir: e.state}).LockState()
			require.NoError(t, err)
			before := treeHashes(t, e.c.Members()[1].DataDir)
			r := etcdguard(t, append([]string{"recover", "--yes"}, e.flags()...)...)
			require.Equal(t, 6, r.code, r.stderr)
			require.Contains(t, r.stderr, "another etcdguard recover")
			r = etcdguard(t, append([]string{"recover", "apply", "--plan", "/nonexistent", "--state-dir", e.state}, tlsFlags(e.c)...)...)
			require.Equal(t, 2, r.code, "apply reads its plan first: %s", r.stderr)
			require.Equal(t, before, treeHashes(t, e.c.Members()[1].DataDir))
			unlock()
			runRecover(t, e)
		})
	}
}

// TestHostileInputs: devices and FIFOs as snapshot files, credentials in endpoints, a symlinked
// data dir, and a snapshot get killed or interrupted half-way.
func TestHostileInputs(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			c := startCluster(t, version)
			loadData(t, c, 200, 100)
			dir := t.TempDir()
			repo := filepath.Join(dir, "repo")
			id, err := age.GenerateX25519Identity()
			require.NoError(t, err)
			idFile := filepath.Join(dir, "backup.key")
			require.NoError(t, os.WriteFile(idFile, []byte(id.String()+"\n"), 0o600))
			m := saveJSON(t, 0, append([]string{"--target", "file://" + repo, "--age-recipient", id.Recipient().String()}, tlsFlags(c)...)...)

			t.Run("a device or a FIFO is not a snapshot file", func(t *testing.T) {
				fifo := filepath.Join(dir, "fifo")
				require.NoError(t, syscall.Mkfifo(fifo, 0o600))
				for _, f := range []string{"/dev/zero", fifo} {
					done := make(chan result, 1)
					go func() { done <- etcdguard(t, "snapshot", "status", f) }()
					select {
					case r := <-done:
						require.Equal(t, 2, r.code, r.stderr)
						require.Contains(t, r.stderr, "not a regular file")
					case <-time.After(30 * time.Second):
						t.Fatalf("snapshot status %s did not return", f)
					}
				}
			})

			t.Run("credentials in an endpoint are refused, never printed", func(t *testing.T) {
				for _, cmd := range [][]string{{"snapshot", "save", "--target", "file://" + repo}, {"doctor"}} {
					r := etcdguard(t, append(cmd, "--endpoints", "https://alice:S3cretPW@127.0.0.1:1", "--cacert", c.CAFile, "-o", "json")...)
					require.Equal(t, 2, r.code, r.stderr)
					require.NotContains(t, r.stdout+r.stderr, "S3cretPW")
					require.NotContains(t, r.stdout+r.stderr, "alice")
				}
			})

			t.Run("a symlinked data dir: restored where it points, the link kept", func(t *testing.T) {
				real := filepath.Join(dir, "disk", "etcd")
				require.NoError(t, os.MkdirAll(real, 0o700))
				link := filepath.Join(dir, "etcd-link")
				require.NoError(t, os.Symlink(real, link))
				mem := c.Members()[0]
				r := etcdguard(t, "restore", m.ID, "--target", "file://"+repo, "--age-identity", idFile, "--data-dir", link, "--name", mem.Name,
					"--initial-cluster", c.InitialCluster(), "--initial-advertise-peer-urls", mem.PeerURL)
				require.Equal(t, 0, r.code, r.stderr)
				fi, err := os.Lstat(link)
				require.NoError(t, err)
				require.NotZero(t, fi.Mode()&os.ModeSymlink, "the symlink is still a symlink")
				require.DirExists(t, filepath.Join(real, "member", "wal"), "the restore is where the link points")
			})

			t.Run("snapshot get killed: its plaintext partial file is swept by the next get", func(t *testing.T) {
				out := filepath.Join(dir, "got.db")
				crashAt(t, "fetch/partial-written", "snapshot", "get", m.ID, "--output", out, "--target", "file://"+repo, "--age-identity", idFile)
				left, _ := filepath.Glob(filepath.Join(dir, ".got.db.partial-*"))
				require.Len(t, left, 1, "the killed get left its decrypted partial file")
				r := etcdguard(t, "snapshot", "get", m.ID, "--output", out, "--target", "file://"+repo, "--age-identity", idFile)
				require.Equal(t, 0, r.code, r.stderr)
				left, _ = filepath.Glob(filepath.Join(dir, ".got.db.partial-*"))
				require.Empty(t, left, "the next get removed it")
			})

			t.Run("snapshot get interrupted: says so, blames no copy", func(t *testing.T) {
				out := filepath.Join(dir, "interrupted.db")
				code, text := interruptAt(t, "fetch/opened", "snapshot", "get", m.ID, "--output", out, "--target", "file://"+repo, "--age-identity", idFile)
				require.Equal(t, 130, code)
				require.NotContains(t, text, "corrupt")
				require.NotContains(t, text, "damaged")
				require.NoFileExists(t, out)
				left, _ := filepath.Glob(filepath.Join(dir, ".interrupted.db.partial-*"))
				require.Empty(t, left)
			})
			requireNoSecrets(t, strings.Join([]string{logs.String()}, ""))
		})
	}
}
