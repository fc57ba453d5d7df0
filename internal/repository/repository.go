// Package repository keeps etcdguard's backups on a backend: the layout of names, the manifests
// that make a backup count, the shared and exclusive locks that keep runs which remove objects
// apart from the others, and the clean-up of incomplete uploads. docs/design.md describes the
// format and the lock protocol.
package repository

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/etcdguard/etcdguard/internal/backend"
	"github.com/etcdguard/etcdguard/internal/backend/retry"
)

// ErrLocked is returned (wrapped) when another live etcdguard run holds the repository's lock.
var ErrLocked = errors.New("repository is locked")

// ErrNotFound is returned (wrapped) when a backup id is in no repository.
var ErrNotFound = errors.New("backup not found")

// Repository is the backups kept in one target.
type Repository struct {
	Target Target
	be     backend.Backend
	locks  lockState // see lock.go
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
	return r.OpenObject(ctx, m.DataObject)
}

// OpenObject opens a stored data object: a backup's or a delta segment's.
func (r *Repository) OpenObject(ctx context.Context, d DataObject) (io.ReadCloser, error) {
	rc, err := r.be.Open(ctx, d.Data)
	if err != nil {
		return nil, fmt.Errorf("target %s: open %s: %w", r.Target.Name, d.Data, err)
	}
	return rc, nil
}

// ReadBack reads a stored data object back and compares its size and SHA-256 with what d says
// was stored; a difference is ErrCorrupt. ctx is checked between reads of 1 MiB.
func (r *Repository) ReadBack(ctx context.Context, d DataObject) error {
	rc, err := r.OpenObject(ctx, d)
	if err != nil {
		return err
	}
	defer rc.Close()
	dg := NewDigest()
	buf := make([]byte, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("read back %s: %w", d.Data, err)
		}
		k, err := rc.Read(buf)
		dg.Write(buf[:k])
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read back %s: %w", d.Data, err)
		}
	}
	if !dg.Matches(d.StoredSize, d.StoredSHA256) {
		return fmt.Errorf("%w: %s in target %s reads back as %d bytes with SHA-256 %s; %d bytes, %s were written", ErrCorrupt, d.Data, r.Target.Name, dg.Size(), dg.Sum(), d.StoredSize, d.StoredSHA256)
	}
	return nil
}

// CleanupIncomplete removes what interrupted runs left behind: every object of a backup that has
// no manifest entry of any kind, and the backend's leftovers of interrupted saves (partial
// files, incomplete uploads). It never touches a backup with a manifest, nor one whose manifest
// is odd (a symlink, a folder, a name beside manifest.json): those are returned in odd, for the
// caller to report, and left as they are.
//
// Removing is what the exclusive lock is for: a run writing under a shared lock has objects
// without a manifest too. Call it while holding a lock taken through this Repository; a shared
// one is made exclusive for the clean-up, without waiting, and shared again after it. While other
// runs hold locks it removes nothing and fails with an error wrapping ErrLocked: the next run that
// finds the target free cleans up.
func (r *Repository) CleanupIncomplete(ctx context.Context) (removed, odd []string, err error) {
	l := r.heldLock()
	if l == nil {
		return nil, nil, fmt.Errorf("target %s: clean up incomplete backups: the repository lock is not held (a bug: take it with Lock first)", r.Target.Name)
	}
	err = l.asExclusive(ctx, func() error {
		removed, odd, err = r.removeIncomplete(ctx)
		return err
	})
	return removed, odd, err
}

func (r *Repository) removeIncomplete(ctx context.Context) (removed, odd []string, err error) {
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
