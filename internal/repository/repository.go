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
	"syscall"
	"time"

	"github.com/etcdguard/etcdguard/internal/backend"
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

// Open opens the repository of a target.
func Open(ctx context.Context, t Target) (*Repository, error) {
	be, err := t.OpenBackend(ctx)
	if err != nil {
		return nil, err
	}
	return &Repository{Target: t, be: be}, nil
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
	if c, ok := r.be.(backend.Creator); ok {
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
	rc, err := r.be.Open(ctx, ManifestName(id))
	if errors.Is(err, backend.ErrNotExist) {
		return Manifest{}, fmt.Errorf("%w: %s in target %s", ErrNotFound, id, r.Target.Name)
	}
	if err != nil {
		return Manifest{}, fmt.Errorf("target %s: read manifest of %s: %w", r.Target.Name, id, err)
	}
	defer rc.Close()
	var m Manifest
	dec := json.NewDecoder(io.LimitReader(rc, 1<<20))
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
	if sw, ok := r.be.(backend.Sweeper); ok {
		swept, err := sw.SweepPartial(ctx, snapshotsDir)
		removed = append(removed, swept...)
		if err != nil {
			return removed, odd, fmt.Errorf("target %s: %w", r.Target.Name, err)
		}
	}
	sort.Strings(removed)
	return removed, odd, nil
}

// Lock is a held repository lock.
type Lock struct {
	repo *Repository
	name string
}

type lockInfo struct {
	Host string `json:"host"`
	PID  int    `json:"pid"`
	// PIDNamespace and BootID say where PID means something: a lock's process can be checked
	// only from the same PID namespace (containers on one host share its name, not its PIDs)
	// and the same boot.
	PIDNamespace string    `json:"pid_namespace,omitempty"`
	BootID       string    `json:"boot_id,omitempty"`
	Command      string    `json:"command"`
	Created      time.Time `json:"created"`
}

// processPlace returns this process's PID namespace and boot id, empty where unknown.
func processPlace() (pidNS, bootID string) {
	pidNS, _ = os.Readlink("/proc/self/ns/pid")
	if b, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
		bootID = strings.TrimSpace(string(b))
	}
	return pidNS, bootID
}

// StaleLockAge is how old a lock must be before it is taken over when its process cannot be
// checked (another host, another PID namespace). A lock whose process is known to be gone (same
// host, PID namespace and boot) is taken over at once.
const StaleLockAge = 6 * time.Hour

// Lock takes the repository's lock for a run of command. A lock left by a process that no longer
// exists is taken over with a warning; a live one makes Lock fail with ErrLocked.
func (r *Repository) Lock(ctx context.Context, lg *slog.Logger, command string, now time.Time) (*Lock, error) {
	host, _ := os.Hostname()
	if err := r.checkLocks(ctx, lg, "", host, now); err != nil {
		return nil, err
	}
	ns, boot := processPlace()
	info := lockInfo{Host: host, PID: os.Getpid(), PIDNamespace: ns, BootID: boot, Command: command, Created: now.UTC()}
	data, _ := json.Marshal(info)
	name := fmt.Sprintf("%s%s-%d-%s.json", locksDir, now.UTC().Format("20060102T150405Z"), info.PID, NewID(now)[17:])
	if _, err := r.Save(ctx, name, bytes.NewReader(data)); err != nil {
		return nil, fmt.Errorf("take lock: %w", err)
	}
	// Two runs that started together both see the other's lock here, and both back off.
	if err := r.checkLocks(ctx, lg, name, host, now); err != nil {
		_ = r.be.Remove(context.WithoutCancel(ctx), name)
		return nil, err
	}
	return &Lock{repo: r, name: name}, nil
}

// Unlock releases the lock.
func (l *Lock) Unlock(ctx context.Context) error {
	if err := l.repo.be.Remove(context.WithoutCancel(ctx), l.name); err != nil {
		return fmt.Errorf("target %s: release lock %s: %w", l.repo.Target.Name, l.name, err)
	}
	return nil
}

func (r *Repository) checkLocks(ctx context.Context, lg *slog.Logger, own, host string, now time.Time) error {
	var names []string
	err := r.be.List(ctx, locksDir, func(fi backend.FileInfo) error {
		if fi.Name != own {
			names = append(names, fi.Name)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("target %s: list locks: %w", r.Target.Name, err)
	}
	for _, name := range names {
		info, err := r.readLock(ctx, name)
		if errors.Is(err, backend.ErrNotExist) {
			continue // released meanwhile
		}
		if err != nil {
			return err
		}
		stale := ""
		ns, boot := processPlace()
		samePlace := info.Host == host && info.PIDNamespace == ns && info.BootID == boot
		switch {
		case samePlace && !processAlive(info.PID):
			stale = fmt.Sprintf("its process %d no longer exists", info.PID)
		case info.Host == host && info.BootID != "" && info.BootID != boot:
			stale = "it was taken before this host last booted"
		case now.Sub(info.Created) > StaleLockAge:
			stale = fmt.Sprintf("it is older than %s", StaleLockAge)
		}
		if stale == "" {
			return fmt.Errorf("%w: target %s is locked by %q (pid %d on %s) since %s: wait for it to finish; if that process is gone for good, remove %s from %s",
				ErrLocked, r.Target.Name, info.Command, info.PID, info.Host, info.Created.Format(time.RFC3339), name, r.be.Location())
		}
		lg.Warn("taking over a stale repository lock", "target", r.Target.Name, "lock", name, "holder_pid", info.PID, "holder_host", info.Host, "since", info.Created, "why", stale)
		if err := r.be.Remove(ctx, name); err != nil {
			return fmt.Errorf("target %s: remove stale lock %s: %w", r.Target.Name, name, err)
		}
	}
	return nil
}

func (r *Repository) readLock(ctx context.Context, name string) (lockInfo, error) {
	rc, err := r.be.Open(ctx, name)
	if err != nil {
		return lockInfo{}, err
	}
	defer rc.Close()
	var info lockInfo
	if err := json.NewDecoder(io.LimitReader(rc, 1<<16)).Decode(&info); err != nil {
		// A lock file cut short by a crash is as good as stale: its writer died mid-write.
		return lockInfo{Host: "", PID: 0, Created: time.Time{}}, nil
	}
	return info, nil
}

func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
