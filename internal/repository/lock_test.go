package repository

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/backend"
	"github.com/etcdguard/etcdguard/internal/backend/local"
	"github.com/etcdguard/etcdguard/internal/backend/s3"
	"github.com/etcdguard/etcdguard/internal/proc"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

// lockStore says where a repository is, so that another process can open it too.
type lockStore struct {
	Local string  `json:"local,omitempty"` // the root of a local repository
	S3    *s3Spec `json:"s3,omitempty"`
}

type s3Spec struct {
	Endpoint, Bucket, Prefix, AccessKey, SecretKey string
}

func (s lockStore) open(t *testing.T) *Repository {
	t.Helper()
	if s.S3 == nil {
		be, err := local.New(s.Local, local.Options{})
		require.NoError(t, err)
		return New(Target{Name: "local", URL: "file://" + s.Local}, be)
	}
	be, err := s3.New(t.Context(), s3.Config{Bucket: s.S3.Bucket, Prefix: s.S3.Prefix, Endpoint: s.S3.Endpoint,
		Region: "us-east-1", AccessKey: s.S3.AccessKey, SecretKey: s.S3.SecretKey})
	require.NoError(t, err)
	t.Cleanup(func() { be.Close() })
	return New(Target{Name: "s3"}, be)
}

// lockBackend is a backend the lock is tested on.
type lockBackend struct {
	name  string
	local bool
	open  func(t *testing.T) (*Repository, func(name string, age time.Duration), lockStore)
}

// lockBackends are the backends the lock is tested on: a local disk, whose files' modification
// times a test can set, and S3 (real MinIO), whose LastModified it cannot.
func lockBackends(t *testing.T) []lockBackend {
	minio := testenv.StartMinIO(t)
	minio.CreateBucket(t, "locks")
	return []lockBackend{
		{"local", true, func(t *testing.T) (*Repository, func(string, time.Duration), lockStore) {
			st := lockStore{Local: filepath.Join(t.TempDir(), "repo")}
			return st.open(t), func(name string, age time.Duration) {
				mt := time.Now().Add(-age)
				require.NoError(t, os.Chtimes(filepath.Join(st.Local, filepath.FromSlash(name)), mt, mt))
			}, st
		}},
		{"s3", false, func(t *testing.T) (*Repository, func(string, time.Duration), lockStore) {
			st := lockStore{S3: &s3Spec{Endpoint: minio.Endpoint, Bucket: "locks", Prefix: testenv.Prefix(t), AccessKey: minio.AccessKey, SecretKey: minio.SecretKey}}
			return st.open(t), func(string, time.Duration) { t.Fatal("S3 objects' modification time cannot be set") }, st
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
	pidSelf = -3 // replaced by this process's PID: a lock an earlier process with the same PID left
)

// noWait is the timing of a run that fails at once when the lock is taken.
var noWait = LockTiming{}

func TestLock(t *testing.T) {
	host, _ := os.Hostname()
	here := proc.Here()
	ns, boot := here.PIDNamespace, here.BootID
	uptime, ok := proc.Uptime()
	require.True(t, ok, "this host's uptime")
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
		{name: "held by a live process here, a kind this version does not know", existing: &lockInfo{Kind: "prune-v9", Host: host, PID: pidLive, PIDNamespace: ns, BootID: boot, Command: "snapshot prune", Created: now.Add(-time.Minute)},
			wantErr: `locked by "snapshot prune" (pid `},
		{name: "left by a dead process here", existing: &lockInfo{Host: host, PID: pidDead, PIDNamespace: ns, BootID: boot, Command: "snapshot save", Created: now.Add(-time.Minute)},
			wantWarn: "no longer exists"},
		// A service killed and restarted inside a container gets its predecessor's PID: this
		// process exists, but it does not hold that lock.
		{name: "left by an earlier process with this process's PID", existing: &lockInfo{Host: host, PID: pidSelf, PIDNamespace: ns, BootID: boot, Command: "agent", Created: now.Add(-time.Minute)},
			wantWarn: "this process does not hold it"},
		{name: "same host name, other PID namespace: not judged by PID", existing: &lockInfo{Host: host, PID: pidDead, PIDNamespace: "pid:[1]", BootID: boot, Command: "snapshot save", Created: now.Add(-time.Minute)},
			wantErr: "is locked by"},
		{name: "same host name, other PID namespace, not refreshed for 7 hours", existing: &lockInfo{Host: host, PID: pidDead, PIDNamespace: "pid:[1]", BootID: boot, Command: "snapshot save", Created: now.Add(-7 * time.Hour)},
			age: 7 * time.Hour, wantWarn: "last refreshed 7h0m0s ago by the storage's clock"},
		{name: "same host, written before the last boot", existing: &lockInfo{Host: host, PID: pidLive, PIDNamespace: ns, BootID: "an-earlier-boot", Command: "snapshot save", Created: now.Add(-time.Minute)},
			age: uptime + LockRefreshInterval + time.Hour, wantWarn: "before this host last booted"},
		// Host names are not unique (two nodes named etcd-0 in two clusters, pods of one name on
		// two nodes): a boot id that differs may be another machine's, whose run is alive.
		{name: "same host name, another boot id, refreshed just now: another machine of that name", existing: &lockInfo{Host: host, PID: pidLive, PIDNamespace: ns, BootID: "another-machine", Command: "snapshot save", Created: now.Add(-time.Minute)},
			wantErr: "is locked by"},
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
				// The existing locks have no kind, or one this version does not know: both
				// count as exclusive, so shared and exclusive requests are judged alike.
				for _, kind := range []LockKind{LockExclusive, LockShared} {
					t.Run(tc.name+"/"+string(kind), func(t *testing.T) {
						if tc.age != 0 && !b.local {
							t.Skip("the S3 server sets an object's modification time; it cannot be made old")
						}
						repo, setAge, _ := b.open(t)
						repo.SetLockTiming(noWait)
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
								case pidSelf:
									info.PID = os.Getpid()
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
						lk, err := repo.Lock(t.Context(), slog.New(slog.NewTextHandler(&logs, nil)), kind, "snapshot save", now)
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
						// A second run is refused while the first holds the lock, unless both
						// are shared.
						_, err = repo.Lock(t.Context(), slog.New(slog.DiscardHandler), LockExclusive, "snapshot copy", now)
						require.ErrorIs(t, err, ErrLocked)
						if kind == LockShared {
							other, err := repo.Lock(t.Context(), slog.New(slog.DiscardHandler), LockShared, "snapshot copy", now)
							require.NoError(t, err, "two shared locks are held at once")
							require.NoError(t, other.Unlock(t.Context()))
						}
						require.NoError(t, lk.Unlock(t.Context()))
						require.Empty(t, lockNames(t, repo))
					})
				}
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
			repo, setAge, _ := b.open(t)
			lk, err := repo.Lock(t.Context(), slog.New(slog.DiscardHandler), LockShared, "snapshot save", time.Now())
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

// holdLock takes a lock of kind through repo for the rest of the test.
func holdLock(t *testing.T, repo *Repository, kind LockKind) *Lock {
	t.Helper()
	lk, err := repo.Lock(t.Context(), slog.New(slog.DiscardHandler), kind, "test", time.Now())
	require.NoError(t, err)
	t.Cleanup(func() { _ = lk.Unlock(t.Context()) })
	return lk
}

// TestLockOwnPID: a lock that names this process (host, PID namespace, boot and PID) is this
// process's own only while the process holds it or asks for it. One left by an earlier process
// with the same PID (killed and restarted inside a container, whose PID namespace gives the same
// PID at every start) is taken over; one this process holds is respected by any Repository of
// this process that opens the target, until it is released.
func TestLockOwnPID(t *testing.T) {
	host, _ := os.Hostname()
	here := proc.Here()
	require.True(t, here.Known(), "this host has a boot id and a PID namespace")
	root := filepath.Join(t.TempDir(), "repo")
	open := func() *Repository {
		r := lockStore{Local: root}.open(t)
		r.SetLockTiming(noWait)
		return r
	}
	repo := open()
	const earlier = "locks/20261124T020000Z-1-00000000.json"
	data, err := json.Marshal(lockInfo{Kind: string(LockExclusive), Host: host, PID: os.Getpid(), PIDNamespace: here.PIDNamespace,
		BootID: here.BootID, Command: "agent", Created: time.Now().Add(-time.Minute)})
	require.NoError(t, err)
	_, err = repo.Save(t.Context(), earlier, bytes.NewReader(data))
	require.NoError(t, err)

	var logs bytes.Buffer
	lk, err := repo.Lock(t.Context(), slog.New(slog.NewTextHandler(&logs, nil)), LockExclusive, "agent", time.Now())
	require.NoError(t, err, "the earlier process's lock is taken over")
	require.Contains(t, logs.String(), "taking over a stale repository lock")
	require.Contains(t, logs.String(), "an earlier process with this PID left it")
	require.Equal(t, []string{lk.name}, lockNames(t, repo))

	for name, r := range map[string]*Repository{"the same Repository": repo, "another Repository of the target": open()} {
		_, err := r.Lock(t.Context(), slog.New(slog.DiscardHandler), LockShared, "snapshot save", time.Now())
		require.ErrorIs(t, err, ErrLocked, "%s: the lock this process holds is not taken over", name)
		require.Equal(t, []string{lk.name}, lockNames(t, repo), "%s: a refused run leaves only the holder's lock", name)
	}
	require.NoError(t, lk.Unlock(t.Context()))
	require.False(t, proc.Claimed(lockClaim(lk.name)), "released with the lock")

	// A run of this process that waits keeps its object, and its claim, while it waits (its
	// name, of an earlier time, sorts first): a third run does not take it for an earlier
	// process's but waits for it too.
	lk, err = repo.Lock(t.Context(), slog.New(slog.DiscardHandler), LockShared, "delta writer", time.Now())
	require.NoError(t, err)
	waiting := open()
	waiting.SetLockTiming(LockTiming{Wait: 20 * time.Second})
	got := make(chan lockResult, 1)
	go func() {
		l, err := waiting.Lock(t.Context(), slog.New(slog.DiscardHandler), LockExclusive, "cleanup", time.Now().Add(-time.Hour))
		got <- lockResult{l, err}
	}()
	require.Eventually(t, func() bool { return len(lockNames(t, repo)) == 2 }, 5*time.Second, 10*time.Millisecond, "the waiter's object is written")
	_, err = open().Lock(t.Context(), slog.New(slog.DiscardHandler), LockShared, "snapshot save", time.Now())
	require.ErrorIs(t, err, ErrLocked)
	require.ErrorContains(t, err, `locked by "cleanup"`)
	require.NoError(t, lk.Unlock(t.Context()))
	r := <-got
	require.NoError(t, r.err, "the waiter gets the lock once it is free")
	require.NoError(t, r.lock.Unlock(t.Context()))
	require.Empty(t, lockNames(t, repo))
}
