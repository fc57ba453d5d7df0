package repository

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/etcdguard/etcdguard/internal/backend"
	"github.com/etcdguard/etcdguard/internal/proc"
)

// How a run judges the other locks it finds: conflicting or not, live or stale, readable or not.
// docs/design.md, "Lock protocol".

// lockConflict is a live lock that keeps a lock from being held.
type lockConflict struct {
	name  string
	info  lockInfo
	bad   error // not a lock's JSON
	yield bool  // its name sorts before ours: ours backs off while it waits
}

func (c *lockConflict) err(r *Repository, waited time.Duration) error {
	if c.bad != nil {
		return fmt.Errorf("%w: target %s holds the lock file %s that cannot be read (%w): it may be another run's, being written; if no etcdguard run is using this target, remove %s from %s",
			ErrLocked, r.Target.Name, c.name, c.bad, c.name, r.be.Location())
	}
	kind := "an exclusive"
	if LockKind(c.info.Kind) == LockShared {
		kind = "a shared"
	}
	after := ""
	if waited > 0 {
		after = fmt.Sprintf(", still after waiting %s", waited)
	}
	return fmt.Errorf("%w: target %s is locked by %q (pid %d on %s) since %s, %s lock%s: wait for it to finish; if that process is gone for good, remove %s from %s",
		ErrLocked, r.Target.Name, c.info.Command, c.info.PID, c.info.Host, c.info.Created.Format(time.RFC3339), kind, after, c.name, r.be.Location())
}

// checkLocks looks at every lock but l's own, taking over stale ones, and returns the live one
// that conflicts with l (one l must back off for, if there is such a one). now is the backend's
// time.
func (r *Repository) checkLocks(ctx context.Context, l *Lock, now time.Time) (*lockConflict, error) {
	var others []backend.FileInfo
	err := r.be.List(ctx, locksDir, func(fi backend.FileInfo) error {
		if fi.Name != l.name {
			others = append(others, fi)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("target %s: list locks: %w", r.Target.Name, err)
	}
	uptime, _ := proc.Uptime()
	var found *lockConflict
	for _, fi := range others {
		info, err := r.readLock(ctx, fi.Name)
		if errors.Is(err, backend.ErrNotExist) {
			continue // released meanwhile
		}
		if errors.Is(err, errBadLock) {
			// Not stale, and conflicting whatever the kind: nobody knows what it is.
			if found == nil || !found.yield {
				found = &lockConflict{name: fi.Name, bad: err, yield: true}
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("target %s: read lock %s: %w", r.Target.Name, fi.Name, err)
		}
		if why := staleReason(info, l.info, proc.Claimed(lockClaim(fi.Name)), now.Sub(fi.ModTime), uptime, l.timing); why != "" {
			l.lg.Warn("taking over a stale repository lock", "target", r.Target.Name, "lock", fi.Name, "holder_pid", info.PID, "holder_host", info.Host, "since", info.Created, "why", why)
			if err := r.be.Remove(ctx, fi.Name); err != nil && !errors.Is(err, backend.ErrNotExist) {
				return nil, fmt.Errorf("target %s: remove stale lock %s: %w", r.Target.Name, fi.Name, err)
			}
			continue
		}
		if !LockKind(l.info.Kind).conflicts(LockKind(info.Kind)) {
			continue
		}
		c := &lockConflict{name: fi.Name, info: info, yield: fi.Name < l.name}
		if found == nil || (c.yield && !found.yield) {
			found = c
		}
	}
	return found, nil
}

// staleReason says why a lock may be taken over, or "" if it may not. self is this process as
// its own lock describes it; claimed is whether this process holds the lock's object or is
// asking for it (proc.Claim); age is how long ago the backend last saw the lock written; uptime
// is how long this host has been up (0: unknown).
//
// A lock of this place that names this process's own PID and that this process does not hold
// was left by an earlier process that had the same PID: one killed and restarted inside a
// container, whose PID namespace gives the same PID at every start. That process is gone; the
// lock used to be judged alive for ever, since this process exists.
//
// A lock of this host's name from another boot was taken before this host last booted only if
// the backend last saw it written before then, with a refresh interval to spare: host names are
// not unique (two nodes named etcd-0 in two clusters sharing a bucket), and another machine of
// this name has another boot id while its run is alive and refreshing.
func staleReason(info, self lockInfo, claimed bool, age, uptime time.Duration, timing LockTiming) string {
	here := proc.Place{PIDNamespace: self.PIDNamespace, BootID: self.BootID}
	sameHost := info.Host == self.Host
	samePlace := sameHost && here.Known() && info.PIDNamespace == here.PIDNamespace && info.BootID == here.BootID
	switch {
	case samePlace && info.PID == self.PID && !claimed:
		return fmt.Sprintf("it names this process's PID %d but this process does not hold it: an earlier process with this PID left it", info.PID)
	case samePlace && proc.Alive(info.PID):
		return "" // its process exists: never stale, whatever its age
	case samePlace:
		return fmt.Sprintf("its process %d no longer exists", info.PID)
	case sameHost && here.BootID != "" && info.BootID != "" && info.BootID != here.BootID && uptime > 0 && age > uptime+timing.Refresh:
		return "it was taken before this host last booted"
	case age > timing.Stale:
		return fmt.Sprintf("it was last refreshed %s ago by the storage's clock (runs refresh their lock every %s)", age.Round(time.Second), timing.Refresh)
	}
	return ""
}

// lockClaim is the key of this process's claim on the lock object name (proc.Claim). Lock names
// are unique (the time, the PID and a random part): a name alone tells this process's locks from
// an earlier process's, whichever Repository of this process opened the target.
func lockClaim(name string) string { return "repository lock " + name }

// errBadLock marks a lock object that is not a lock's JSON.
var errBadLock = errors.New("not a valid lock file")

func (r *Repository) readLock(ctx context.Context, name string) (lockInfo, error) {
	data, err := backend.Load(ctx, r.be, name, 1<<16)
	if err != nil {
		return lockInfo{}, err
	}
	var info lockInfo
	if err := json.NewDecoder(bytes.NewReader(data)).Decode(&info); err != nil {
		// Not stale: a run may be writing it (S3 shows an object only once whole, but a
		// backend without atomic writes may not), or someone put it there. People decide.
		return lockInfo{}, fmt.Errorf("%w: %v", errBadLock, err)
	}
	return info, nil
}
