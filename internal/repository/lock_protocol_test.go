package repository

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/backend"
)

// fastLocks is the lock timing of these tests: refreshed every 200 ms, stale after 2 s (the
// same ten missed refreshes as the defaults would be six: what matters is that it is several).
var fastLocks = LockTiming{Refresh: 200 * time.Millisecond, Stale: 2 * time.Second, Wait: 20 * time.Second}

// runAs makes the locks taken through repo those of a process on another host.
func runAs(repo *Repository, host string, pid int, timing LockTiming) *Repository {
	r := New(repo.Target, repo.Backend())
	r.locks.self = &lockInfo{Host: host, PID: pid}
	r.SetLockTiming(timing)
	return r
}

type lockResult struct {
	lock *Lock
	err  error
}

func lockAsync(t *testing.T, repo *Repository, kind LockKind) <-chan lockResult {
	t.Helper()
	ch := make(chan lockResult, 1)
	go func() {
		lk, err := repo.Lock(t.Context(), slog.New(slog.DiscardHandler), kind, "test "+string(kind), time.Now())
		ch <- lockResult{lk, err}
	}()
	return ch
}

// TestLockWaits: shared locks are held together; a shared holder and an exclusive request wait
// for each other, and a wait ends with ErrLocked once its budget is spent.
func TestLockWaits(t *testing.T) {
	type step struct{ held, asked LockKind }
	for _, b := range lockBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			for _, s := range []step{{LockShared, LockExclusive}, {LockExclusive, LockShared}, {LockExclusive, LockExclusive}} {
				t.Run(string(s.held)+" held, "+string(s.asked)+" asked", func(t *testing.T) {
					repo, _, _ := b.open(t)
					holder := runAs(repo, "node-a", 1, fastLocks)
					asker := runAs(repo, "node-b", 2, fastLocks)
					lk, err := holder.Lock(t.Context(), slog.New(slog.DiscardHandler), s.held, "holder", time.Now())
					require.NoError(t, err)
					got := lockAsync(t, asker, s.asked)
					select {
					case r := <-got:
						t.Fatalf("the %s lock was given while the %s one was held (error: %v)", s.asked, s.held, r.err)
					case <-time.After(3 * fastLocks.Stale / 2):
						// Still waiting, though longer than the stale age: the holder refreshes.
					}
					released := time.Now()
					require.NoError(t, lk.Unlock(t.Context()))
					select {
					case r := <-got:
						require.NoError(t, r.err)
						require.Less(t, time.Since(released), 3*lockMaxBackoff, "the waiter tries again at least every %s", lockMaxBackoff)
						require.Len(t, lockNames(t, repo), 1)
						require.NoError(t, r.lock.Unlock(t.Context()))
					case <-time.After(fastLocks.Wait):
						t.Fatal("the waiter did not get the lock once it was released")
					}
				})
			}
			t.Run("two shared locks are held at once", func(t *testing.T) {
				repo, _, _ := b.open(t)
				a, err := runAs(repo, "node-a", 1, noWait).Lock(t.Context(), slog.New(slog.DiscardHandler), LockShared, "snapshot save", time.Now())
				require.NoError(t, err)
				c, err := runAs(repo, "node-b", 2, noWait).Lock(t.Context(), slog.New(slog.DiscardHandler), LockShared, "delta writer", time.Now())
				require.NoError(t, err)
				require.Len(t, lockNames(t, repo), 2)
				require.NoError(t, a.Unlock(t.Context()))
				require.NoError(t, c.Unlock(t.Context()))
			})
			t.Run("a wait ends with ErrLocked", func(t *testing.T) {
				repo, _, _ := b.open(t)
				lk, err := runAs(repo, "node-a", 1, fastLocks).Lock(t.Context(), slog.New(slog.DiscardHandler), LockExclusive, "snapshot prune", time.Now())
				require.NoError(t, err)
				wait := fastLocks
				wait.Wait = time.Second
				start := time.Now()
				_, err = runAs(repo, "node-b", 2, wait).Lock(t.Context(), slog.New(slog.DiscardHandler), LockShared, "snapshot save", time.Now())
				require.ErrorIs(t, err, ErrLocked)
				require.GreaterOrEqual(t, time.Since(start), time.Second)
				require.ErrorContains(t, err, `locked by "snapshot prune" (pid 1 on node-a)`)
				require.ErrorContains(t, err, "an exclusive lock, still after waiting 1s")
				require.Equal(t, []string{lk.name}, lockNames(t, repo), "the waiter leaves nothing behind")
				require.NoError(t, lk.Unlock(t.Context()))
			})
		})
	}
}

// TestLockCleanupIsExclusive: the clean-up of incomplete backups removes nothing while another
// run holds a lock (its upload has no manifest yet either), and runs once the target is free.
func TestLockCleanupIsExclusive(t *testing.T) {
	for _, b := range lockBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			repo, _, _ := b.open(t)
			const data = "snapshots/20261124T031000Z-0000000b/snapshot.db.zst"
			_, err := repo.Save(t.Context(), data, strings.NewReader("being written by another run"))
			require.NoError(t, err)
			mine := runAs(repo, "node-a", 1, noWait)
			lk, err := mine.Lock(t.Context(), slog.New(slog.DiscardHandler), LockShared, "snapshot save", time.Now())
			require.NoError(t, err)
			other, err := runAs(repo, "node-b", 2, noWait).Lock(t.Context(), slog.New(slog.DiscardHandler), LockShared, "snapshot save", time.Now())
			require.NoError(t, err)

			removed, _, err := mine.CleanupIncomplete(t.Context())
			require.ErrorIs(t, err, ErrLocked)
			require.ErrorContains(t, err, "incomplete backups are left for a run that finds the target free")
			require.Empty(t, removed)
			_, err = repo.Backend().Stat(t.Context(), data)
			require.NoError(t, err, "another run's upload is left alone")
			third, err := runAs(repo, "node-c", 3, noWait).Lock(t.Context(), slog.New(slog.DiscardHandler), LockShared, "snapshot copy", time.Now())
			require.NoError(t, err, "the lock is shared again")
			require.NoError(t, third.Unlock(t.Context()))

			require.NoError(t, other.Unlock(t.Context()))
			removed, _, err = mine.CleanupIncomplete(t.Context())
			require.NoError(t, err)
			require.Equal(t, []string{data}, removed)
			third, err = runAs(repo, "node-c", 3, noWait).Lock(t.Context(), slog.New(slog.DiscardHandler), LockShared, "snapshot copy", time.Now())
			require.NoError(t, err, "the lock is shared again after the clean-up")
			require.NoError(t, third.Unlock(t.Context()))
			require.NoError(t, lk.Unlock(t.Context()))

			_, _, err = mine.CleanupIncomplete(t.Context())
			require.ErrorContains(t, err, "the repository lock is not held")
		})
	}
}

// TestLockTakeOver: a holder on another host that refreshes its lock is never taken over, however
// long it holds it; once its refreshes stop, its lock is taken over after the stale age by the
// backend's clock, and of two hosts that take it over at the same time only one holds it at once.
func TestLockTakeOver(t *testing.T) {
	for _, b := range lockBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			repo, _, _ := b.open(t)
			holder, err := runAs(repo, "node-a", 1, fastLocks).Lock(t.Context(), slog.New(slog.DiscardHandler), LockExclusive, "snapshot prune", time.Now())
			require.NoError(t, err)
			judge := fastLocks
			judge.Wait = 0 // ask once, judging staleness as the holder refreshes
			asker := runAs(repo, "node-b", 2, judge)
			for end := time.Now().Add(5 * fastLocks.Stale / 2); time.Now().Before(end); time.Sleep(fastLocks.Refresh) {
				_, err := asker.Lock(t.Context(), slog.New(slog.DiscardHandler), LockShared, "snapshot save", time.Now())
				require.ErrorIs(t, err, ErrLocked, "a live holder is never taken over")
			}

			holder.stopRefresh() // the holder dies: its lock stays, no longer refreshed
			died := time.Now()
			var inside, overlaps atomic.Int32
			var logs [2]bytes.Buffer
			var wg sync.WaitGroup
			errs := make([]error, 2)
			took := make([]time.Duration, 2)
			for i, host := range []string{"node-b", "node-c"} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					lk, err := runAs(repo, host, 2+i, fastLocks).Lock(t.Context(), slog.New(slog.NewTextHandler(&logs[i], nil)), LockExclusive, "snapshot prune", time.Now())
					if err != nil {
						errs[i] = err
						return
					}
					took[i] = time.Since(died)
					if inside.Add(1) != 1 {
						overlaps.Add(1)
					}
					time.Sleep(3 * fastLocks.Refresh)
					inside.Add(-1)
					errs[i] = lk.Unlock(t.Context())
				}()
			}
			wg.Wait()
			require.NoError(t, errs[0])
			require.NoError(t, errs[1])
			require.Zero(t, overlaps.Load(), "two hosts held the exclusive lock at once")
			// The backend's times may have a resolution of a second.
			require.GreaterOrEqual(t, min(took[0], took[1]), fastLocks.Stale-time.Second, "taken over before it was stale")
			require.Contains(t, logs[0].String()+logs[1].String(), "taking over a stale repository lock")
			require.Contains(t, logs[0].String()+logs[1].String(), "last refreshed")
			require.ErrorIs(t, holder.Refresh(t.Context()), backend.ErrNotExist, "the dead holder's lock is gone")
			require.Empty(t, lockNames(t, repo))
		})
	}
}

// lockHelperEnv carries a lockHelper to the processes TestLockProcesses starts.
const lockHelperEnv = "ETCDGUARD_TEST_LOCK_HELPER"

// lockHelper is what one process of TestLockProcesses does.
type lockHelper struct {
	Store  lockStore
	Timing LockTiming
	Marks  string    // a folder shared by the processes
	Start  time.Time // when to ask for the lock, the same for every process of a round
	Hold   time.Duration
}

// TestLockProcesses starts processes together, several rounds, each asking for the exclusive
// lock, holding it briefly and marking that it is inside: no two are ever inside at once, and
// every one gets the lock (those that start together do not all back off for ever). The first
// round starts with a stale lock of a dead host, which they all take over.
func TestLockProcesses(t *testing.T) {
	const rounds, procs = 4, 3
	for _, b := range lockBackends(t) {
		t.Run(b.name, func(t *testing.T) {
			repo, setAge, store := b.open(t)
			marks := t.TempDir()
			dead, err := json.Marshal(lockInfo{Kind: string(LockExclusive), Host: "dead-host", PID: 1, Command: "snapshot prune", Created: time.Now()})
			require.NoError(t, err)
			const deadLock = "locks/20261124T020000Z-1-00000000.json"
			_, err = repo.Save(t.Context(), deadLock, bytes.NewReader(dead))
			require.NoError(t, err)
			if b.local {
				setAge(deadLock, time.Hour)
			} else {
				time.Sleep(fastLocks.Stale + time.Second)
			}
			for round := range rounds {
				h := lockHelper{Store: store, Timing: fastLocks, Marks: marks, Start: time.Now().Add(time.Second), Hold: 100 * time.Millisecond}
				spec, err := json.Marshal(h)
				require.NoError(t, err)
				cmds := make([]*exec.Cmd, procs)
				outs := make([]*bytes.Buffer, procs)
				for i := range cmds {
					cmds[i] = exec.Command(os.Args[0], "-test.run=^TestLockHelperProcess$", "-test.count=1", "-test.v")
					cmds[i].Env = append(os.Environ(), lockHelperEnv+"="+string(spec))
					outs[i] = &bytes.Buffer{}
					cmds[i].Stdout, cmds[i].Stderr = outs[i], outs[i]
					require.NoError(t, cmds[i].Start())
				}
				for i, c := range cmds {
					require.NoError(t, c.Wait(), "round %d, process %d:\n%s", round, i, outs[i])
				}
				overlaps, _ := filepath.Glob(filepath.Join(marks, "overlap-*"))
				require.Empty(t, overlaps, "round %d: two processes held the exclusive lock at once", round)
			}
			log, err := os.ReadFile(filepath.Join(marks, "held.log"))
			require.NoError(t, err)
			require.Len(t, strings.Fields(string(log)), rounds*procs, "every process held the lock once")
			require.Empty(t, lockNames(t, repo), "every lock was released, the dead one taken over")
		})
	}
}

// TestLockHelperProcess is one process of TestLockProcesses; it is skipped when run otherwise.
func TestLockHelperProcess(t *testing.T) {
	spec := os.Getenv(lockHelperEnv)
	if spec == "" {
		t.Skip("a process started by TestLockProcesses")
	}
	var h lockHelper
	require.NoError(t, json.Unmarshal([]byte(spec), &h))
	repo := h.Store.open(t)
	repo.SetLockTiming(h.Timing)
	time.Sleep(time.Until(h.Start))
	lk, err := repo.Lock(t.Context(), slog.New(slog.NewTextHandler(os.Stderr, nil)), LockExclusive, "lock test", time.Now())
	require.NoError(t, err)
	inside := filepath.Join(h.Marks, "inside")
	f, err := os.OpenFile(inside, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		require.NoError(t, os.WriteFile(filepath.Join(h.Marks, fmt.Sprintf("overlap-%d", os.Getpid())), []byte(err.Error()), 0o600))
		t.Fatalf("another process holds the exclusive lock: %v", err)
	}
	require.NoError(t, f.Close())
	time.Sleep(h.Hold)
	require.NoError(t, os.Remove(inside))
	lf, err := os.OpenFile(filepath.Join(h.Marks, "held.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	require.NoError(t, err)
	_, err = fmt.Fprintf(lf, "%d\n", os.Getpid())
	require.NoError(t, err)
	require.NoError(t, lf.Close())
	require.NoError(t, lk.Unlock(t.Context()))
}
