package repository

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/etcdguard/etcdguard/internal/proc"
)

// LockKind says what the holder of a lock may do. docs/design.md, "Lock protocol", has the rules.
type LockKind string

const (
	// LockShared is taken by runs that add objects or read them (save, copy, verify, restore, the
	// agent's delta writer). Any number of shared locks are held at once.
	LockShared LockKind = "shared"
	// LockExclusive is taken to remove objects (the clean-up of incomplete backups; pruning and
	// deletion later). It excludes every other lock, shared or exclusive.
	LockExclusive LockKind = "exclusive"
)

// conflicts reports whether locks of kinds k and o cannot be held at once. A kind this version
// does not know (or none: locks of older versions) counts as exclusive.
func (k LockKind) conflicts(o LockKind) bool { return k != LockShared || o != LockShared }

// LockRefreshInterval is how often a held lock's object is rewritten.
const LockRefreshInterval = 5 * time.Minute

// StaleLockAge is how long a lock's object must have gone unrewritten, by the backend's own
// modification time, before it is taken over when its process cannot be checked (another host,
// another PID namespace): six missed refreshes. A lock whose process can be checked (same host,
// PID namespace and boot) is never stale while the process exists, and stale at once when it
// does not, or when it is this process's PID and this process does not hold the lock (an earlier
// process with the same PID left it).
const StaleLockAge = 6 * LockRefreshInterval

// DefaultLockWait is how long Lock keeps trying while a conflicting lock is live, unless
// SetLockTiming says otherwise.
const DefaultLockWait = time.Minute

// LockTiming sets how the locks taken through a Repository are kept and how others' locks are
// judged. Every run of a repository should judge staleness alike: change Refresh and Stale only
// in tests.
type LockTiming struct {
	Refresh time.Duration // how often a held lock is rewritten; 0: LockRefreshInterval
	Stale   time.Duration // how long another's lock may go unrewritten before it is stale; 0: StaleLockAge
	Wait    time.Duration // how long Lock keeps trying while a conflicting lock is live; 0: not at all
}

// SetLockTiming replaces DefaultLockWait and the refresh and stale intervals for the locks taken
// through r from now on.
func (r *Repository) SetLockTiming(t LockTiming) {
	if t.Refresh <= 0 {
		t.Refresh = LockRefreshInterval
	}
	if t.Stale <= 0 {
		t.Stale = StaleLockAge
	}
	r.locks.mu.Lock()
	defer r.locks.mu.Unlock()
	r.locks.timing = &t
}

// lockState is a Repository's part of the lock protocol.
type lockState struct {
	mu     sync.Mutex
	timing *LockTiming // nil: the defaults
	self   *lockInfo   // who this process is in a lock (Host, PID, namespace, boot); nil: this process
	held   *Lock       // the lock most recently taken through the Repository and not released
}

func (r *Repository) lockTiming() LockTiming {
	r.locks.mu.Lock()
	defer r.locks.mu.Unlock()
	if r.locks.timing == nil {
		return LockTiming{Refresh: LockRefreshInterval, Stale: StaleLockAge, Wait: DefaultLockWait}
	}
	return *r.locks.timing
}

func (r *Repository) heldLock() *Lock {
	r.locks.mu.Lock()
	defer r.locks.mu.Unlock()
	return r.locks.held
}

// lockInfo is the content of a lock object. Fields may be added; readers ignore those they do
// not know, and take a kind they do not know for exclusive.
type lockInfo struct {
	Kind string `json:"kind,omitempty"`
	Host string `json:"host"`
	PID  int    `json:"pid"`
	// PIDNamespace and BootID say where PID means something: a lock's process can be checked
	// only from the same PID namespace (containers on one host share its name, not its PIDs)
	// and the same boot.
	PIDNamespace string `json:"pid_namespace,omitempty"`
	BootID       string `json:"boot_id,omitempty"`
	Command      string `json:"command"`
	// Created is the holder's clock when it first asked for the lock: shown to people, never
	// used to judge a lock's age (the holder's clock may be wrong; the backend's modification
	// time is used).
	Created time.Time `json:"created"`
}

func (r *Repository) lockSelf() lockInfo {
	r.locks.mu.Lock()
	defer r.locks.mu.Unlock()
	if r.locks.self != nil {
		return *r.locks.self
	}
	host, _ := os.Hostname()
	here := proc.Here()
	return lockInfo{Host: host, PID: os.Getpid(), PIDNamespace: here.PIDNamespace, BootID: here.BootID}
}

// Lock is a held repository lock. While it is held, a goroutine rewrites its object every
// refresh interval, so that other runs see by its modification time that it is alive.
type Lock struct {
	repo   *Repository
	name   string
	lg     *slog.Logger
	timing LockTiming
	mu     sync.Mutex // guards info and serializes writes of the object
	info   lockInfo
	stop   chan struct{}
	done   chan struct{}
	// release ends this process's claim on the lock's object (proc.Claim), which tells a lock of
	// this process from one an earlier process with the same PID left.
	release func()
}

// lockReleaseTimeout bounds the removal of a lock at the end of a run, so that a storage that
// stopped answering does not hold the run forever.
const lockReleaseTimeout = 30 * time.Second

// Backoff between two tries of a lock that is taken: doubled from the first to the last, with
// some jitter so that runs started together do not try in step.
const (
	lockFirstBackoff = 50 * time.Millisecond
	lockMaxBackoff   = 2 * time.Second
)

// Lock takes a lock of the given kind for a run of command. Each try writes the run's own lock
// object, then looks at the others: stale ones are taken over with a warning; a live one whose
// kind conflicts makes it wait and try again, with backoff, for as long as LockTiming.Wait (and
// ctx) allow, then fail with ErrLocked. While it waits it backs off (removes its object) for a
// conflicting lock whose name sorts first, and keeps its object for one whose name sorts last,
// so that of runs that start together the oldest name gets the lock and none starves. The lock
// is refreshed until Unlock.
func (r *Repository) Lock(ctx context.Context, lg *slog.Logger, kind LockKind, command string, now time.Time) (*Lock, error) {
	timing := r.lockTiming()
	info := r.lockSelf()
	info.Kind, info.Command, info.Created = string(kind), command, now.UTC()
	name := fmt.Sprintf("%s%s-%d-%s.json", locksDir, now.UTC().Format("20060102T150405Z"), info.PID, NewID(now)[17:])
	l := &Lock{repo: r, name: name, lg: lg, timing: timing, info: info, stop: make(chan struct{}), done: make(chan struct{})}
	// Claimed before its object is first written and until it is removed, so that no run of this
	// process takes it for an earlier process's (see staleReason).
	l.release = proc.Claim(lockClaim(name))
	giveUp := time.Now().Add(timing.Wait)
	backoff := lockFirstBackoff
	for {
		l.mu.Lock()
		c, err := l.try(ctx)
		l.mu.Unlock()
		if err == nil && c == nil {
			break
		}
		if err == nil && time.Until(giveUp) <= 0 {
			err = c.err(r, timing.Wait)
		}
		if err == nil && c.yield {
			err = r.be.Remove(ctx, name)
		}
		if err == nil {
			pause := max(min(backoff, time.Until(giveUp)), time.Millisecond)
			pause += time.Duration(rand.Int64N(int64(pause)/4 + 1))
			select {
			case <-ctx.Done():
				err = fmt.Errorf("target %s: wait for the lock: %w", r.Target.Name, ctx.Err())
			case <-time.After(pause):
				backoff = min(2*backoff, lockMaxBackoff, timing.Refresh)
				continue
			}
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lockReleaseTimeout)
		_ = r.be.Remove(rctx, name)
		cancel()
		l.release()
		return nil, err
	}
	go l.refreshLoop(ctx)
	r.locks.mu.Lock()
	r.locks.held = l
	r.locks.mu.Unlock()
	return l, nil
}

// try writes the lock object and judges the others against it. It returns the conflict that
// keeps the lock from being held, if any. Call it with l.mu held.
func (l *Lock) try(ctx context.Context) (*lockConflict, error) {
	r := l.repo
	data, err := json.Marshal(l.info)
	if err != nil {
		return nil, fmt.Errorf("encode lock: %w", err)
	}
	if _, err := r.be.Save(ctx, l.name, bytes.NewReader(data)); err != nil {
		return nil, fmt.Errorf("target %s: take lock %s: %w", r.Target.Name, l.name, err)
	}
	// The backend's time of our own write is "now" for judging the others' ages.
	own, err := r.be.Stat(ctx, l.name)
	if err != nil {
		return nil, fmt.Errorf("target %s: take lock %s: %w", r.Target.Name, l.name, err)
	}
	return r.checkLocks(ctx, l, own.ModTime)
}

// Refresh rewrites the lock's object, which renews its modification time. It fails if the lock
// object is gone (removed by hand, or taken over by a run that judged it stale).
func (l *Lock) Refresh(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rewrite(ctx)
}

func (l *Lock) rewrite(ctx context.Context) error {
	if _, err := l.repo.be.Stat(ctx, l.name); err != nil {
		return fmt.Errorf("target %s: refresh lock %s: %w", l.repo.Target.Name, l.name, err)
	}
	data, err := json.Marshal(l.info)
	if err != nil {
		return fmt.Errorf("encode lock: %w", err)
	}
	if _, err := l.repo.be.Save(ctx, l.name, bytes.NewReader(data)); err != nil {
		return fmt.Errorf("target %s: refresh lock %s: %w", l.repo.Target.Name, l.name, err)
	}
	return nil
}

func (l *Lock) refreshLoop(ctx context.Context) {
	defer close(l.done)
	tick := time.NewTicker(l.timing.Refresh)
	defer tick.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-ctx.Done():
			return
		case <-tick.C:
			if err := l.Refresh(ctx); err != nil && ctx.Err() == nil {
				l.lg.Error("could not refresh the repository lock; another run may take it over", "target", l.repo.Target.Name, "lock", l.name, "error", err)
			}
		}
	}
}

// stopRefresh ends the refreshes; the lock object stays.
func (l *Lock) stopRefresh() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	<-l.done
}

// Unlock stops the refreshes and releases the lock.
func (l *Lock) Unlock(ctx context.Context) error {
	l.stopRefresh()
	r := l.repo
	r.locks.mu.Lock()
	if r.locks.held == l {
		r.locks.held = nil
	}
	r.locks.mu.Unlock()
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lockReleaseTimeout)
	defer cancel()
	// Released whether the removal worked or not: a lock object left behind is no longer held,
	// and a later run of this process may take it over.
	defer l.release()
	if err := r.be.Remove(rctx, l.name); err != nil {
		return fmt.Errorf("target %s: release lock %s: %w", r.Target.Name, l.name, err)
	}
	return nil
}

// asExclusive runs f while l is exclusive. A shared l is made exclusive first, without waiting:
// if any other live lock is there it stays shared and asExclusive fails with ErrLocked; after f
// it is shared again. The refreshes go on meanwhile.
func (l *Lock) asExclusive(ctx context.Context, f func() error) error {
	l.mu.Lock()
	if LockKind(l.info.Kind) != LockShared {
		l.mu.Unlock()
		return f()
	}
	l.info.Kind = string(LockExclusive)
	c, err := l.try(ctx)
	l.mu.Unlock()
	if err == nil && c == nil {
		err = f()
	} else if err == nil {
		err = fmt.Errorf("%w: incomplete backups are left for a run that finds the target free", c.err(l.repo, 0))
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.info.Kind = string(LockShared)
	if rerr := l.rewrite(context.WithoutCancel(ctx)); rerr != nil {
		l.lg.Warn("could not make the repository lock shared again; other runs wait until it is released", "target", l.repo.Target.Name, "lock", l.name, "error", rerr)
	}
	return err
}
