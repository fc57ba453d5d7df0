// Package repository keeps etcdguard's backups on a backend: the layout of names, the manifests
// that make a backup count, the lock that keeps two runs apart, and the clean-up of incomplete
// uploads. docs/design.md describes the format.
package repository

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/etcdguard/etcdguard/internal/backend"
	"github.com/etcdguard/etcdguard/internal/backend/retry"
	"github.com/etcdguard/etcdguard/internal/proc"
)

// ErrLocked is returned (wrapped) when another live etcdguard run holds the repository's lock.
var ErrLocked = errors.New("repository is locked")

// ErrNotFound is returned (wrapped) when a backup id is in no repository.
var ErrNotFound = errors.New("backup not found")

// Repository is the backups kept in one target.
type Repository struct {
	Target Target
	be     backend.Backend
}

// Open opens the repository of a target. Its backend is decorated with retries of small
// objects (package retry): manifests, locks and markers survive a dropped connection; data
// streams are passed through once, as their callers retry them as a whole.
func Open(ctx context.Context, t Target) (*Repository, error) {
	be, err := t.OpenBackend(ctx)
	if err != nil {
		return nil, err
	}
	return &Repository{Target: t, be: retry.New(be, retry.Options{})}, nil
}

// New wraps an already open backend; tests use it.
func New(t Target, be backend.Backend) *Repository { return &Repository{Target: t, be: be} }

// Backend returns the repository's storage.
func (r *Repository) Backend() backend.Backend { return r.be }

// Close releases the backend.
func (r *Repository) Close() error { return r.be.Close() }

// Save stores one object under name.
func (r *Repository) Save(ctx context.Context, name string, rd io.Reader) (int64, error) {
	n, err := r.be.Save(ctx, name, rd)
	if err != nil {
		return n, fmt.Errorf("target %s: store %s: %w", r.Target.Name, name, err)
	}
	return n, nil
}

// SaveNew stores one object under name only if nothing is stored there yet; otherwise it fails
// with an error wrapping backend.ErrExist and stores nothing. Backends that can do it in one step
// (backend.Creator: a local disk's link(2)) do; on the others (S3) the name is checked with Stat
// first, which leaves a window in which another writer could slip in: runs that write hold the
// repository lock, and names are fresh.
func (r *Repository) SaveNew(ctx context.Context, name string, rd io.Reader) (int64, error) {
	if c, ok := backend.As[backend.Creator](r.be); ok {
		n, err := c.SaveNew(ctx, name, rd)
		if err != nil {
			return n, fmt.Errorf("target %s: store %s: %w", r.Target.Name, name, err)
		}
		return n, nil
	}
	_, err := r.be.Stat(ctx, name)
	switch {
	case err == nil:
		return 0, fmt.Errorf("target %s: store %s: %w: it is left as it is", r.Target.Name, name, backend.ErrExist)
	case !errors.Is(err, backend.ErrNotExist) || errors.Is(err, backend.ErrNotObject):
		return 0, fmt.Errorf("target %s: store %s: check that nothing is there first: %w", r.Target.Name, name, err)
	}
	return r.Save(ctx, name, rd)
}

// SaveManifest writes a backup's manifest, the last object of a backup.
func (r *Repository) SaveManifest(ctx context.Context, m Manifest) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("encode manifest %s: %w", m.ID, err)
	}
	_, err = r.Save(ctx, ManifestName(m.ID), bytes.NewReader(append(data, '\n')))
	return err
}

// SaveNewManifest is SaveManifest through SaveNew: it never replaces a manifest (or anything
// else) already stored for the backup.
func (r *Repository) SaveNewManifest(ctx context.Context, m Manifest) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("encode manifest %s: %w", m.ID, err)
	}
	_, err = r.SaveNew(ctx, ManifestName(m.ID), bytes.NewReader(append(data, '\n')))
	return err
}

// ManifestError is a manifest that is there but could not be used: unreadable, of a newer
// format, or rejected by the checks of Manifest. ID is the backup folder it is in.
type ManifestError struct {
	ID  string
	Err error
}

func (e *ManifestError) Error() string { return e.Err.Error() }
func (e *ManifestError) Unwrap() error { return e.Err }

// Manifest loads the manifest of one backup; it fails with ErrNotFound if the repository has no
// complete backup of that id.
func (r *Repository) Manifest(ctx context.Context, id string) (Manifest, error) {
	data, err := backend.Load(ctx, r.be, ManifestName(id), 1<<20)
	if errors.Is(err, backend.ErrNotExist) {
		return Manifest{}, fmt.Errorf("%w: %s in target %s", ErrNotFound, id, r.Target.Name)
	}
	if err != nil {
		return Manifest{}, fmt.Errorf("target %s: read manifest of %s: %w", r.Target.Name, id, err)
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&m); err != nil {
		return Manifest{}, fmt.Errorf("target %s: manifest of %s is not valid JSON: %w", r.Target.Name, id, err)
	}
	if err := checkManifest(m, id); err != nil {
		return Manifest{}, fmt.Errorf("target %s: %w", r.Target.Name, err)
	}
	return m, nil
}

// Manifests returns every complete backup in the repository, oldest first. A manifest that
// cannot be read (damaged, of a newer format, or failing the checks of Manifest) does not hide
// the others: it is returned in skipped, with the reason, and is never used.
func (r *Repository) Manifests(ctx context.Context) (ms []Manifest, skipped []*ManifestError, err error) {
	var ids []string
	err = r.be.List(ctx, snapshotsDir, func(fi backend.FileInfo) error {
		id, rest, ok := strings.Cut(strings.TrimPrefix(fi.Name, snapshotsDir), "/")
		if ok && rest == manifestName {
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("target %s: list backups: %w", r.Target.Name, err)
	}
	for _, id := range ids {
		m, err := r.Manifest(ctx, id)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, backend.ErrUnavailable) {
				return nil, skipped, err
			}
			skipped = append(skipped, &ManifestError{ID: id, Err: err})
			continue
		}
		ms = append(ms, m)
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].ID < ms[j].ID })
	return ms, skipped, nil
}

// OpenData opens a backup's stored data object.
func (r *Repository) OpenData(ctx context.Context, m Manifest) (io.ReadCloser, error) {
	rc, err := r.be.Open(ctx, m.Data)
	if err != nil {
		return nil, fmt.Errorf("target %s: open %s: %w", r.Target.Name, m.Data, err)
	}
	return rc, nil
}

// CleanupIncomplete removes what interrupted runs left behind: every object of a backup that has
// no manifest entry of any kind, and the backend's leftovers of interrupted saves (partial
// files, incomplete uploads). Call it only while holding the lock. It never touches a backup with
// a manifest, nor one whose manifest is odd (a symlink, a folder, a name beside manifest.json):
// those are returned in odd, for the caller to report, and left as they are.
func (r *Repository) CleanupIncomplete(ctx context.Context) (removed, odd []string, err error) {
	objects := map[string][]string{}
	complete := map[string]bool{}
	strange := map[string]string{}
	err = r.be.List(ctx, snapshotsDir, func(fi backend.FileInfo) error {
		id, rest, _ := strings.Cut(strings.TrimPrefix(fi.Name, snapshotsDir), "/")
		switch {
		case rest == manifestName:
			complete[id] = true
		case strings.HasPrefix(rest, manifestName):
			strange[id] = fmt.Sprintf("%s is beside or under its manifest's name", fi.Name)
		}
		objects[id] = append(objects[id], fi.Name)
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("target %s: list backups: %w", r.Target.Name, err)
	}
	ids := make([]string, 0, len(objects))
	for id := range objects {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		if complete[id] {
			continue
		}
		if why, ok := strange[id]; ok {
			odd = append(odd, fmt.Sprintf("%s%s: %s; left as it is", snapshotsDir, id, why))
			continue
		}
		// List shows objects only: ask about the manifest's name itself, which may hold a
		// symlink or a folder. Only "nothing there at all" makes the backup incomplete.
		if _, serr := r.be.Stat(ctx, ManifestName(id)); serr == nil || !errors.Is(serr, backend.ErrNotExist) || errors.Is(serr, backend.ErrNotObject) {
			why := "its manifest appeared meanwhile"
			if serr != nil {
				why = serr.Error()
			}
			odd = append(odd, fmt.Sprintf("%s%s: its manifest is not a plain object (%s); left as it is: check it and remove the folder by hand if it is not a backup", snapshotsDir, id, why))
			continue
		}
		for _, name := range objects[id] {
			if err := r.be.Remove(ctx, name); err != nil {
				return removed, odd, fmt.Errorf("target %s: remove incomplete %s: %w", r.Target.Name, name, err)
			}
			removed = append(removed, name)
		}
	}
	if sw, ok := backend.As[backend.Sweeper](r.be); ok {
		swept, err := sw.SweepPartial(ctx, snapshotsDir)
		removed = append(removed, swept...)
		if err != nil {
			return removed, odd, fmt.Errorf("target %s: %w", r.Target.Name, err)
		}
	}
	sort.Strings(removed)
	return removed, odd, nil
}

// Lock is a held repository lock. While it is held, a goroutine rewrites its object every
// LockRefreshInterval, so that other runs see by its modification time that it is alive.
type Lock struct {
	repo *Repository
	name string
	data []byte
	lg   *slog.Logger
	stop chan struct{}
	done chan struct{}
}

// lockInfo is the content of a lock object. Fields may be added; readers ignore those they do
// not know. Kind is "exclusive" (the only kind today; shared locks for readers are planned):
// a reader treats any kind it does not know as exclusive.
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
	// Created is the holder's clock when it took the lock: shown to people, never used to judge
	// a lock's age (the holder's clock may be wrong; the backend's modification time is used).
	Created time.Time `json:"created"`
}

// LockKindExclusive is the kind of lock every run takes today.
const LockKindExclusive = "exclusive"

// LockRefreshInterval is how often a held lock's object is rewritten.
const LockRefreshInterval = 5 * time.Minute

// StaleLockAge is how long a lock's object must have gone unrewritten, by the backend's own
// modification time, before it is taken over when its process cannot be checked (another host,
// another PID namespace): six missed refreshes. A lock whose process can be checked (same host,
// PID namespace and boot) is never stale while the process exists, and stale at once when it
// does not.
const StaleLockAge = 6 * LockRefreshInterval

// lockReleaseTimeout bounds the removal of a lock at the end of a run, so that a storage that
// stopped answering does not hold the run forever.
const lockReleaseTimeout = 30 * time.Second

// Lock takes the repository's lock for a run of command: it writes its own lock object, then
// looks at the others. A stale lock (see StaleLockAge) is taken over with a warning; a live or
// unreadable one makes Lock remove its own and fail with ErrLocked (two runs that start together
// both back off). The lock is refreshed until Unlock.
func (r *Repository) Lock(ctx context.Context, lg *slog.Logger, command string, now time.Time) (*Lock, error) {
	host, _ := os.Hostname()
	here := proc.Here()
	info := lockInfo{Kind: LockKindExclusive, Host: host, PID: os.Getpid(), PIDNamespace: here.PIDNamespace, BootID: here.BootID, Command: command, Created: now.UTC()}
	data, err := json.Marshal(info)
	if err != nil {
		return nil, fmt.Errorf("encode lock: %w", err)
	}
	name := fmt.Sprintf("%s%s-%d-%s.json", locksDir, now.UTC().Format("20060102T150405Z"), info.PID, NewID(now)[17:])
	if _, err := r.Save(ctx, name, bytes.NewReader(data)); err != nil {
		return nil, fmt.Errorf("take lock: %w", err)
	}
	// The backend's time of our own write is "now" for judging the others' ages.
	own, err := r.be.Stat(ctx, name)
	if err == nil {
		err = r.checkLocks(ctx, lg, name, host, here, own.ModTime)
	}
	if err != nil {
		_ = r.be.Remove(context.WithoutCancel(ctx), name)
		return nil, err
	}
	l := &Lock{repo: r, name: name, data: data, lg: lg, stop: make(chan struct{}), done: make(chan struct{})}
	go l.refreshLoop(ctx, LockRefreshInterval)
	return l, nil
}

// Refresh rewrites the lock's object, which renews its modification time. It fails if the lock
// object is gone (removed by hand, or taken over by a run that judged it stale).
func (l *Lock) Refresh(ctx context.Context) error {
	if _, err := l.repo.be.Stat(ctx, l.name); err != nil {
		return fmt.Errorf("target %s: refresh lock %s: %w", l.repo.Target.Name, l.name, err)
	}
	if _, err := l.repo.be.Save(ctx, l.name, bytes.NewReader(l.data)); err != nil {
		return fmt.Errorf("target %s: refresh lock %s: %w", l.repo.Target.Name, l.name, err)
	}
	return nil
}

func (l *Lock) refreshLoop(ctx context.Context, every time.Duration) {
	defer close(l.done)
	tick := time.NewTicker(every)
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

// Unlock stops the refreshes and releases the lock.
func (l *Lock) Unlock(ctx context.Context) error {
	close(l.stop)
	<-l.done
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lockReleaseTimeout)
	defer cancel()
	if err := l.repo.be.Remove(rctx, l.name); err != nil {
		return fmt.Errorf("target %s: release lock %s: %w", l.repo.Target.Name, l.name, err)
	}
	return nil
}

// checkLocks looks at every lock but own, taking over stale ones. now is the backend's time.
func (r *Repository) checkLocks(ctx context.Context, lg *slog.Logger, own, host string, here proc.Place, now time.Time) error {
	var others []backend.FileInfo
	err := r.be.List(ctx, locksDir, func(fi backend.FileInfo) error {
		if fi.Name != own {
			others = append(others, fi)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("target %s: list locks: %w", r.Target.Name, err)
	}
	for _, fi := range others {
		info, err := r.readLock(ctx, fi.Name)
		if errors.Is(err, backend.ErrNotExist) {
			continue // released meanwhile
		}
		if errors.Is(err, errBadLock) {
			return fmt.Errorf("%w: target %s holds the lock file %s that cannot be read (%w): it may be another run's, being written; if no etcdguard run is using this target, remove %s from %s",
				ErrLocked, r.Target.Name, fi.Name, err, fi.Name, r.be.Location())
		}
		if err != nil {
			return fmt.Errorf("target %s: read lock %s: %w", r.Target.Name, fi.Name, err)
		}
		stale := staleReason(info, host, here, now.Sub(fi.ModTime))
		if stale == "" {
			return fmt.Errorf("%w: target %s is locked by %q (pid %d on %s) since %s: wait for it to finish; if that process is gone for good, remove %s from %s",
				ErrLocked, r.Target.Name, info.Command, info.PID, info.Host, info.Created.Format(time.RFC3339), fi.Name, r.be.Location())
		}
		lg.Warn("taking over a stale repository lock", "target", r.Target.Name, "lock", fi.Name, "holder_pid", info.PID, "holder_host", info.Host, "since", info.Created, "why", stale)
		if err := r.be.Remove(ctx, fi.Name); err != nil {
			return fmt.Errorf("target %s: remove stale lock %s: %w", r.Target.Name, fi.Name, err)
		}
	}
	return nil
}

// staleReason says why a lock may be taken over, or "" if it may not. age is how long ago the
// backend last saw the lock written.
func staleReason(info lockInfo, host string, here proc.Place, age time.Duration) string {
	sameHost := info.Host == host
	samePlace := sameHost && here.Known() && info.PIDNamespace == here.PIDNamespace && info.BootID == here.BootID
	switch {
	case samePlace && proc.Alive(info.PID):
		return "" // its process exists: never stale, whatever its age
	case samePlace:
		return fmt.Sprintf("its process %d no longer exists", info.PID)
	case sameHost && here.BootID != "" && info.BootID != "" && info.BootID != here.BootID:
		return "it was taken before this host last booted"
	case age > StaleLockAge:
		return fmt.Sprintf("it was last refreshed %s ago by the storage's clock (runs refresh their lock every %s)", age.Round(time.Second), LockRefreshInterval)
	}
	return ""
}

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
