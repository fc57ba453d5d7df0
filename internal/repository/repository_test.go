package repository

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/backend"
	"github.com/etcdguard/etcdguard/internal/backend/local"
	"github.com/etcdguard/etcdguard/internal/backend/s3"
	"github.com/etcdguard/etcdguard/internal/proc"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

func newRepo(t *testing.T) (*Repository, string) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "repo")
	be, err := local.New(root, local.Options{})
	require.NoError(t, err)
	return New(Target{Name: "local", URL: "file://" + root}, be), root
}

// lockBackends are the backends the lock is tested on: a local disk, whose files' modification
// times a test can set, and S3 (real MinIO), whose LastModified it cannot.
func lockBackends(t *testing.T) []struct {
	name  string
	local bool
	open  func(t *testing.T) (*Repository, func(name string, age time.Duration))
} {
	minio := testenv.StartMinIO(t)
	minio.CreateBucket(t, "locks")
	return []struct {
		name  string
		local bool
		open  func(t *testing.T) (*Repository, func(name string, age time.Duration))
	}{
		{"local", true, func(t *testing.T) (*Repository, func(string, time.Duration)) {
			repo, root := newRepo(t)
			return repo, func(name string, age time.Duration) {
				mt := time.Now().Add(-age)
				require.NoError(t, os.Chtimes(filepath.Join(root, filepath.FromSlash(name)), mt, mt))
			}
		}},
		{"s3", false, func(t *testing.T) (*Repository, func(string, time.Duration)) {
			be, err := s3.New(t.Context(), s3.Config{Bucket: "locks", Prefix: filepath.Base(t.TempDir()), Endpoint: minio.Endpoint,
				Region: "us-east-1", AccessKey: minio.AccessKey, SecretKey: minio.SecretKey})
			require.NoError(t, err)
			t.Cleanup(func() { be.Close() })
			return New(Target{Name: "s3"}, be), func(string, time.Duration) { t.Fatal("S3 objects' modification time cannot be set") }
		}},
	}
}

// livePID returns the pid of a process that runs until the test ends.
func livePID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("sleep", "600")
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd.Process.Pid
}

// deadPID returns the pid of a process that has exited.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	require.NoError(t, cmd.Run())
	return cmd.Process.Pid
}

const (
	pidLive = -1 // replaced by a process that runs during the test
	pidDead = -2 // replaced by a process that has exited
)

func TestLock(t *testing.T) {
	host, _ := os.Hostname()
	here := proc.Here()
	ns, boot := here.PIDNamespace, here.BootID
	now := time.Now()
	cases := []struct {
		name     string
		existing *lockInfo
		raw      string        // content of the existing lock instead of existing
		age      time.Duration // how long ago the backend saw the existing lock written (local disks only)
		wantErr  string
		wantWarn string
	}{
		{name: "free"},
		{name: "held by a live process here", existing: &lockInfo{Host: host, PID: pidLive, PIDNamespace: ns, BootID: boot, Command: "snapshot save", Created: now.Add(-time.Minute)},
			wantErr: `locked by "snapshot save" (pid `},
		{name: "held by a live process here for 7 hours, not refreshed", existing: &lockInfo{Host: host, PID: pidLive, PIDNamespace: ns, BootID: boot, Command: "snapshot save", Created: now.Add(-7 * time.Hour)},
			age: 7 * time.Hour, wantErr: `locked by "snapshot save" (pid `},
		{name: "left by a dead process here", existing: &lockInfo{Host: host, PID: pidDead, PIDNamespace: ns, BootID: boot, Command: "snapshot save", Created: now.Add(-time.Minute)},
			wantWarn: "no longer exists"},
		{name: "same host name, other PID namespace: not judged by PID", existing: &lockInfo{Host: host, PID: pidDead, PIDNamespace: "pid:[1]", BootID: boot, Command: "snapshot save", Created: now.Add(-time.Minute)},
			wantErr: "is locked by"},
		{name: "same host name, other PID namespace, not refreshed for 7 hours", existing: &lockInfo{Host: host, PID: pidDead, PIDNamespace: "pid:[1]", BootID: boot, Command: "snapshot save", Created: now.Add(-7 * time.Hour)},
			age: 7 * time.Hour, wantWarn: "last refreshed 7h0m0s ago by the storage's clock"},
		{name: "same host, before the last boot", existing: &lockInfo{Host: host, PID: pidLive, PIDNamespace: ns, BootID: "an-earlier-boot", Command: "snapshot save", Created: now.Add(-time.Minute)},
			wantWarn: "before this host last booted"},
		{name: "another host, refreshed just now, its clock 7 hours behind", existing: &lockInfo{Host: "other-node", PID: 1, Command: "snapshot save", Created: now.Add(-7 * time.Hour)},
			wantErr: "on other-node"},
		{name: "another host, 3 refreshes missed", existing: &lockInfo{Host: "other-node", PID: 1, Command: "snapshot save", Created: now.Add(-20 * time.Minute)},
			age: 3 * LockRefreshInterval, wantErr: "on other-node"},
		{name: "another host, not refreshed for 7 hours, its clock ahead", existing: &lockInfo{Host: "other-node", PID: 1, Command: "snapshot save", Created: now.Add(time.Hour)},
			age: 7 * time.Hour, wantWarn: "last refreshed 7h0m0s ago"},
		{name: "unreadable lock file", raw: `{"host": "other-node", "pid": 12`,
			wantErr: "cannot be read"},
		{name: "unreadable lock file, old", raw: "garbage", age: 7 * time.Hour,
			wantErr: "cannot be read"},
	}
	for _, b := range lockBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					if tc.age != 0 && !b.local {
						t.Skip("the S3 server sets an object's modification time; it cannot be made old")
					}
					repo, setAge := b.open(t)
					const held = "locks/20261124T020000Z-1-00000000.json"
					if tc.existing != nil || tc.raw != "" {
						data := []byte(tc.raw)
						if tc.existing != nil {
							info := *tc.existing
							switch info.PID {
							case pidLive:
								info.PID = livePID(t)
							case pidDead:
								info.PID = deadPID(t)
							}
							var err error
							data, err = json.Marshal(info)
							require.NoError(t, err)
						}
						_, err := repo.Save(t.Context(), held, bytes.NewReader(data))
						require.NoError(t, err)
						if tc.age != 0 {
							setAge(held, tc.age)
						}
					}
					var logs bytes.Buffer
					lk, err := repo.Lock(t.Context(), slog.New(slog.NewTextHandler(&logs, nil)), "snapshot save", now)
					if tc.wantErr != "" {
						require.ErrorIs(t, err, ErrLocked)
						require.ErrorContains(t, err, tc.wantErr)
						require.ErrorContains(t, err, held, "the message names the lock file")
						require.Equal(t, []string{held}, lockNames(t, repo), "a refused run leaves only the holder's lock")
						return
					}
					require.NoError(t, err)
					if tc.wantWarn != "" {
						require.Contains(t, logs.String(), "taking over a stale repository lock")
						require.Contains(t, logs.String(), tc.wantWarn)
					}
					// A second run is refused while the first holds the lock.
					_, err = repo.Lock(t.Context(), slog.New(slog.DiscardHandler), "snapshot copy", now)
					require.ErrorIs(t, err, ErrLocked)
					require.NoError(t, lk.Unlock(t.Context()))
					require.Empty(t, lockNames(t, repo))
				})
			}
		})
	}
}

func lockNames(t *testing.T, repo *Repository) []string {
	t.Helper()
	var names []string
	require.NoError(t, repo.Backend().List(t.Context(), locksDir, func(fi backend.FileInfo) error {
		names = append(names, fi.Name)
		return nil
	}))
	return names
}

// TestLockRefresh: a held lock's object is rewritten, which renews the modification time the
// backend reports; a lock taken over meanwhile cannot be refreshed.
func TestLockRefresh(t *testing.T) {
	for _, b := range lockBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			repo, setAge := b.open(t)
			lk, err := repo.Lock(t.Context(), slog.New(slog.DiscardHandler), "snapshot save", time.Now())
			require.NoError(t, err)
			names := lockNames(t, repo)
			require.Len(t, names, 1)
			if b.local {
				setAge(names[0], 7*time.Hour)
			}
			before, err := repo.Backend().Stat(t.Context(), names[0])
			require.NoError(t, err)
			require.NoError(t, lk.Refresh(t.Context()))
			after, err := repo.Backend().Stat(t.Context(), names[0])
			require.NoError(t, err)
			if b.local {
				require.True(t, after.ModTime.After(before.ModTime.Add(6*time.Hour)), "refreshed: %s, then %s", before.ModTime, after.ModTime)
			}
			require.NoError(t, repo.Backend().Remove(t.Context(), names[0]))
			require.ErrorIs(t, lk.Refresh(t.Context()), backend.ErrNotExist)
			require.Empty(t, lockNames(t, repo), "a lock taken over is not written again")
			require.NoError(t, lk.Unlock(t.Context()))
		})
	}
}

func TestCleanupIncomplete(t *testing.T) {
	repo, root := newRepo(t)
	ctx := t.Context()
	complete := Manifest{Format: FormatVersion, ID: "20261124T030000Z-0000000a", Kind: KindFull, Compression: CompressionZstd, Data: "snapshots/20261124T030000Z-0000000a/snapshot.db.zst"}
	_, err := repo.Save(ctx, complete.Data, strings.NewReader("data"))
	require.NoError(t, err)
	require.NoError(t, repo.SaveManifest(ctx, complete))
	// An upload that failed before its manifest, and one a crash left half-written.
	_, err = repo.Save(ctx, "snapshots/20261124T031000Z-0000000b/snapshot.db.zst", strings.NewReader("data"))
	require.NoError(t, err)
	crashed := filepath.Join(root, "snapshots", "20261124T032000Z-0000000c")
	require.NoError(t, os.MkdirAll(crashed, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(crashed, "snapshot.db.zst.partial-42"), []byte("half"), 0o600))

	removed, odd, err := repo.CleanupIncomplete(ctx)
	require.NoError(t, err)
	require.Empty(t, odd)
	require.Equal(t, []string{
		"snapshots/20261124T031000Z-0000000b/snapshot.db.zst",
		"snapshots/20261124T032000Z-0000000c/snapshot.db.zst.partial-42",
	}, removed)
	ms, skipped, err := repo.Manifests(ctx)
	require.Empty(t, skipped)
	require.NoError(t, err)
	require.Len(t, ms, 1)
	require.Equal(t, complete.ID, ms[0].ID)
	require.FileExists(t, filepath.Join(root, filepath.FromSlash(complete.Data)))
	dirs, _ := os.ReadDir(filepath.Join(root, "snapshots"))
	require.Len(t, dirs, 1)
}

// TestManifestChecks writes manifests that do not fit their folder: each is skipped (reported,
// never used), and the good one beside them is still read.
func TestManifestChecks(t *testing.T) {
	const id, other = "20261124T030000Z-0000000a", "20261124T031000Z-0000000b"
	good := Manifest{Format: FormatVersion, ID: id, Kind: KindFull, Compression: CompressionZstd, Data: "snapshots/" + id + "/snapshot.db.zst"}
	age := &Encryption{Scheme: "age", Recipients: []string{"sha256:0011223344556677"}}
	cases := []struct {
		name    string
		edit    func(m *Manifest)
		wantErr string
	}{
		{"good", func(m *Manifest) {}, ""},
		{"good, encrypted", func(m *Manifest) { m.Encryption, m.Data = age, m.Data+".age" }, ""},
		{"good, plain", func(m *Manifest) { m.Compression, m.Data = CompressionNone, "snapshots/"+id+"/snapshot.db" }, ""},
		{"id of another backup", func(m *Manifest) { m.ID, m.Data = other, "snapshots/"+other+"/snapshot.db.zst" }, "has the id " + other + " of another backup"},
		{"data of another backup", func(m *Manifest) { m.Data = "snapshots/" + other + "/snapshot.db.zst" }, "names the data object"},
		{"data outside the repository", func(m *Manifest) { m.Data = "../../etc/passwd" }, "names the data object"},
		{"data name of another codec", func(m *Manifest) { m.Data = "snapshots/" + id + "/snapshot.db" }, "names the data object"},
		{"encrypted, unencrypted data name", func(m *Manifest) { m.Encryption = age }, "names the data object"},
		{"unknown compression", func(m *Manifest) { m.Compression = "lz4" }, `unknown compression "lz4"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			repo, _ := newRepo(t)
			m := good
			tc.edit(&m)
			data, err := json.Marshal(m)
			require.NoError(t, err)
			_, err = repo.Save(t.Context(), ManifestName(id), bytes.NewReader(data))
			require.NoError(t, err)
			ms, skipped, err := repo.Manifests(t.Context())
			require.NoError(t, err)
			_, merr := repo.Manifest(t.Context(), id)
			if tc.wantErr == "" {
				require.NoError(t, merr)
				require.Empty(t, skipped)
				require.Len(t, ms, 1)
				return
			}
			require.ErrorContains(t, merr, tc.wantErr)
			require.Empty(t, ms)
			require.Len(t, skipped, 1)
			require.Equal(t, id, skipped[0].ID)
			require.ErrorContains(t, skipped[0], tc.wantErr)
		})
	}
}

// TestCleanupKeepsOddManifests: a backup whose manifest.json is a symlink, a folder or has
// something beside it is not incomplete: nothing of it is removed, and it is reported.
func TestCleanupKeepsOddManifests(t *testing.T) {
	const id = "20261124T030000Z-0000000a"
	cases := []struct {
		name string
		make func(t *testing.T, dir string)
	}{
		{"symlink to a manifest", func(t *testing.T, dir string) {
			real := filepath.Join(t.TempDir(), "manifest.json")
			require.NoError(t, os.WriteFile(real, []byte("{}"), 0o600))
			require.NoError(t, os.Symlink(real, filepath.Join(dir, "manifest.json")))
		}},
		{"dangling symlink", func(t *testing.T, dir string) {
			require.NoError(t, os.Symlink("/nonexistent/manifest.json", filepath.Join(dir, "manifest.json")))
		}},
		{"folder named manifest.json", func(t *testing.T, dir string) {
			require.NoError(t, os.Mkdir(filepath.Join(dir, "manifest.json"), 0o700))
		}},
		{"a file inside a folder named manifest.json", func(t *testing.T, dir string) {
			require.NoError(t, os.Mkdir(filepath.Join(dir, "manifest.json"), 0o700))
			require.NoError(t, os.WriteFile(filepath.Join(dir, "manifest.json", "x"), []byte("{}"), 0o600))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			repo, root := newRepo(t)
			data := "snapshots/" + id + "/snapshot.db.zst"
			_, err := repo.Save(t.Context(), data, strings.NewReader("data"))
			require.NoError(t, err)
			tc.make(t, filepath.Join(root, "snapshots", id))
			removed, odd, err := repo.CleanupIncomplete(t.Context())
			require.NoError(t, err)
			require.Empty(t, removed)
			require.Len(t, odd, 1)
			require.Contains(t, odd[0], id)
			require.FileExists(t, filepath.Join(root, filepath.FromSlash(data)))
		})
	}
}

func TestParseTarget(t *testing.T) {
	cases := []struct {
		spec    string
		want    Target
		wantErr string
	}{
		{"file:///backup/etcd", Target{Name: "local", URL: "file:///backup/etcd", Media: "disk"}, ""},
		{"file:///mnt/ltfs/etcd?offline=true&media=tape", Target{Name: "tape", URL: "file:///mnt/ltfs/etcd", Media: "tape", Offline: true}, ""},
		{"file:///mnt/usb?offline=1&name=usb", Target{Name: "usb", URL: "file:///mnt/usb", Media: "offline", Offline: true}, ""},
		{"s3://b/p?endpoint=http://127.0.0.1:9000&name=minio", Target{Name: "minio", URL: "s3://b/p?endpoint=http%3A%2F%2F127.0.0.1%3A9000", Media: "s3"}, ""},
		{"file://relative/path", Target{}, "needs an absolute path"},
		{"file:///x?offline=maybe", Target{}, "not true or false"},
		{"gs://bucket", Target{}, `unknown scheme "gs"`},
		{"s3:///prefix", Target{}, "name the bucket"},
	}
	for _, tc := range cases {
		t.Run(tc.spec, func(t *testing.T) {
			got, err := ParseTarget(tc.spec)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
	ts, err := NormalizeTargets([]Target{{URL: "file:///a"}, {URL: "file:///b"}})
	require.NoError(t, err)
	require.Equal(t, "local", ts[0].Name)
	require.Equal(t, "local-2", ts[1].Name)
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }
