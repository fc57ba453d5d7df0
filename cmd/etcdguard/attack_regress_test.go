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

// TestResumeAfterHandChanges: what a second hostile review found around resuming plans: a plan
// carried on under another description of the cluster, a marker left beside a data dir that was
// since restored by hand, symlinked data dirs crashed half-way, and two members sharing a folder
// through a symlink.
func TestResumeAfterHandChanges(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			t.Run("a plan is not carried on under another description", func(t *testing.T) {
				e := newRecoverEnv(t, version)
				damagedTwo(t, e, 0)
				crashAt(t, "recover/plan-saved", append([]string{"recover", "--yes"}, e.flags()...)...)
				m3 := e.memberFlag(2, map[string]string{"host": "cp3.other-host.invalid"})
				r := etcdguard(t, append([]string{"recover", "--yes"}, e.flagsWith(e.members[0], e.members[1], m3)...)...)
				require.Equal(t, 9, r.code, r.stderr)
				require.Contains(t, r.stderr, "planned for another description of the cluster")
				require.Contains(t, r.stderr, `member m3: host "" in the plan, "cp3.other-host.invalid" now`)
				for _, m := range e.c.Members() {
					require.Empty(t, quarantines(t, m.DataDir))
				}
			})

			t.Run("a marker beside a data dir restored since by hand is not the plan's", func(t *testing.T) {
				e := newRecoverEnv(t, version)
				damagedTwo(t, e, 0)
				crashAt(t, "restore/marked", append([]string{"recover", "--yes"}, e.flags()...)...)
				var marked *struct{ name, dir, peer string }
				for _, m := range e.c.Members() {
					if _, err := os.Stat(filepath.Join(filepath.Dir(m.DataDir), "."+filepath.Base(m.DataDir)+".etcdguard-recovery")); err == nil {
						if _, err := os.Stat(m.DataDir); os.IsNotExist(err) {
							marked = &struct{ name, dir, peer string }{m.Name, m.DataDir, m.PeerURL}
						}
					}
				}
				require.NotNil(t, marked, "the crash left a member marked, its data dir not yet in place")
				r := etcdguard(t, "restore", "latest", "--target", "file://"+e.repo, "--data-dir", marked.dir, "--name", marked.name,
					"--initial-cluster", e.c.InitialCluster(), "--initial-advertise-peer-urls", marked.peer, "--initial-cluster-token", "by-hand")
				require.Equal(t, 0, r.code, r.stderr)
				before := treeHashes(t, marked.dir)
				r = etcdguard(t, append([]string{"recover", "--yes"}, e.flags()...)...)
				require.Equal(t, 9, r.code, r.stderr)
				require.Contains(t, r.stderr, "member "+marked.name+": stopped by this plan and not restored by it")
				require.Equal(t, before, treeHashes(t, marked.dir), "the data dir restored by hand is left as it is")
			})

			t.Run("symlinked data dirs, killed after a quarantine: the next run finishes", func(t *testing.T) {
				e := newRecoverEnv(t, version)
				disk := filepath.Join(e.dir, "disk")
				require.NoError(t, os.Mkdir(disk, 0o700))
				var members []string
				links := map[string]string{}
				for i, m := range e.c.Members() {
					link := filepath.Join(e.dir, m.Name+"-link")
					require.NoError(t, os.Symlink(m.DataDir, link))
					links[m.Name] = link
					members = append(members, e.memberFlag(i, map[string]string{"data-dir": link}))
				}
				damagedTwo(t, e, 0)
				crashAt(t, "restore/quarantined", append([]string{"recover", "--yes"}, e.flagsWith(members...)...)...)
				r := etcdguard(t, append([]string{"recover", "--yes"}, e.flagsWith(members...)...)...)
				require.Equal(t, 0, r.code, r.stderr)
				require.Contains(t, r.stdout, "verified: 3 members healthy")
				for _, m := range e.c.Members() {
					fi, err := os.Lstat(links[m.Name])
					require.NoError(t, err)
					require.NotZero(t, fi.Mode()&os.ModeSymlink)
					require.Len(t, quarantines(t, m.DataDir), 1)
					staging, _ := filepath.Glob(filepath.Join(filepath.Dir(m.DataDir), "."+filepath.Base(m.DataDir)+".etcdguard-restore-*"))
					require.Empty(t, staging, "no half-built restore is left where the links point")
				}
			})

			t.Run("two members sharing a folder through a symlink", func(t *testing.T) {
				e := newRecoverEnv(t, version)
				damagedTwo(t, e, 0)
				link := filepath.Join(e.dir, "m3-is-m1")
				require.NoError(t, os.Symlink(e.c.Members()[0].DataDir, link))
				m3 := e.memberFlag(2, map[string]string{"data-dir": link})
				r := etcdguard(t, append([]string{"recover", "--yes"}, e.flagsWith(e.members[0], e.members[1], m3)...)...)
				require.Equal(t, 9, r.code, r.stderr)
				require.Contains(t, r.stderr, "both have data-dir")
				require.Empty(t, quarantines(t, e.c.Members()[0].DataDir))
			})
		})
	}
}

// TestDescriptionChecks: URLs of a cluster description and endpoints are checked before anything
// is contacted: credentials are refused and never printed, two spellings of one URL are one URL,
// and only http(s) endpoints are taken.
func TestDescriptionChecks(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			e := newRecoverEnv(t, version)
			m1 := e.c.Members()[0]
			cases := []struct {
				name string
				args []string
				want string
			}{
				{"credentials in a member's client-url", append([]string{"recover", "--dry-run"}, e.flagsWith(e.members[0], e.members[1],
					e.memberFlag(2, map[string]string{"client-url": "https://alice:S3cretPW@127.0.0.1:1"}))...), "carries credentials"},
				{"a client-url that is not a URL, with credentials", append([]string{"recover", "--dry-run"}, e.flagsWith(e.members[0], e.members[1],
					e.memberFlag(2, map[string]string{"client-url": "htps://alice:S3cretPW@127.0.0.1:1"}))...), "is not an http(s) URL"},
				{"one client-url spelled twice", append([]string{"recover", "--dry-run"}, e.flagsWith(e.members[0], e.members[1],
					e.memberFlag(2, map[string]string{"client-url": strings.ToUpper(m1.ClientURL[:5]) + m1.ClientURL[5:]}))...), "is used twice"},
				{"a peer-url with a trailing slash, which etcd refuses", append([]string{"recover", "--dry-run"}, e.flagsWith(e.members[0], e.members[1],
					e.memberFlag(2, map[string]string{"peer-url": e.c.Members()[2].PeerURL + "/"}))...), "carries credentials, a path or parameters"},
				{"a unix endpoint", []string{"snapshot", "save", "--target", "file://" + e.repo, "--endpoints", "unix:///tmp/etcd.sock"}, "over http:// or https://"},
				{"a path in an endpoint", []string{"snapshot", "save", "--target", "file://" + e.repo, "--endpoints", "https://127.0.0.1:1/S3cretPW"}, "a path or parameters"},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					r := etcdguard(t, tc.args...)
					require.Equal(t, 2, r.code, r.stderr)
					require.Contains(t, r.stderr, tc.want)
					require.NotContains(t, r.stdout+r.stderr, "S3cretPW")
				})
			}
		})
	}
}
