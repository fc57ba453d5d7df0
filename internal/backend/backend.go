// Package backend stores and retrieves named objects: the bytes of a backup repository, with no
// knowledge of what they mean. Implementations live in sub-packages (local, s3); every one of them
// runs the conformance suite in backendtest.
package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// ErrNotExist is returned (wrapped) when an object does not exist.
var ErrNotExist = errors.New("object does not exist")

// ErrUnavailable is returned (wrapped) when the storage itself cannot be reached: an unmounted
// offline medium, an S3 endpoint that does not answer, a bucket that does not exist, or credentials
// the store refuses. Callers treat such a target as failed, not the whole operation. Where the
// cause is known, the error also matches ErrUnreachable or ErrDenied.
var ErrUnavailable = errors.New("storage unavailable")

// ErrUnreachable is returned (wrapped) when the storage did not answer: a refused or reset
// connection, a name that does not resolve, a timeout, a network mount that stopped answering.
// Unlike the other sentinels, it may heal by itself: the retry decorator (package retry) tries
// again on it.
var ErrUnreachable = errors.New("storage unreachable")

// ErrDenied is returned (wrapped) when the storage refuses the operation: file permissions, a
// read-only file system, credentials the server does not accept, a bucket policy that denies it.
var ErrDenied = errors.New("access denied by the storage")

// ErrExist is returned (wrapped) by SaveNew when something is already stored under the name.
var ErrExist = errors.New("object already exists")

// ErrNotObject is returned (wrapped, together with ErrNotExist) when something is stored under a
// name that is not an object: on a local disk, a symlink, a folder or a device where a file is
// expected. There is no object, so ErrNotExist matches too; but unlike a name with nothing under
// it, the entry must not be taken for absent by code that deletes (see
// repository.CleanupIncomplete), and is reported instead.
var ErrNotObject = errors.New("not a plain object")

// ErrNoSpace is returned (wrapped) when the storage is full.
var ErrNoSpace = errors.New("no space left on storage")

// Error kinds, as Kind returns them: a small fixed set, for reports and metric labels.
const (
	KindNoSpace     = "no_space"
	KindDenied      = "denied"
	KindUnreachable = "unreachable"
	KindUnavailable = "unavailable"
	KindNotExist    = "not_exist"
	KindExist       = "exist"
)

// Kind names the sentinel a backend error matches, the most precise first: one of the Kind
// constants, or "" for an error that matches none (and for nil). Reports carry it beside the
// error's text, so that a reader can tell a full target from a refused one without parsing.
func Kind(err error) string {
	for _, k := range []struct {
		err  error
		kind string
	}{
		{ErrNoSpace, KindNoSpace},
		{ErrDenied, KindDenied},
		{ErrUnreachable, KindUnreachable},
		{ErrUnavailable, KindUnavailable},
		{ErrExist, KindExist},
		{ErrNotExist, KindNotExist},
	} {
		if errors.Is(err, k.err) {
			return k.kind
		}
	}
	return ""
}

// FileInfo describes one stored object.
type FileInfo struct {
	// Name is the object's name relative to the backend root, slash-separated.
	Name    string
	Size    int64
	ModTime time.Time
}

// Backend is a place where objects are kept. Names are slash-separated paths relative to the
// backend's root, such as "snapshots/20261124T035532Z-1a2b3c4d/manifest.json".
//
// Objects are written once and never modified. Every method takes a context and honours its
// cancellation.
type Backend interface {
	// Location returns a human-readable address of the backend root, without credentials, for
	// messages ("/backup/etcd", "s3://bucket/prefix").
	Location() string

	// Save stores the whole of rd under name, atomically: after Save returns nil the object is
	// complete and durable; if rd returns an error, the context is cancelled or the write fails,
	// nothing appears under name and nothing is left behind. Save returns the number of bytes
	// stored. An existing object of the same name is replaced (callers choose fresh names).
	Save(ctx context.Context, name string, rd io.Reader) (int64, error)

	// Open returns a reader of the object's contents. It fails with ErrNotExist if the object
	// does not exist. The caller closes the reader.
	Open(ctx context.Context, name string) (io.ReadCloser, error)

	// Stat describes one object; it fails with ErrNotExist if the object does not exist.
	Stat(ctx context.Context, name string) (FileInfo, error)

	// List calls fn for every object whose name starts with prefix, in lexical order of name.
	// Iteration stops at the first error fn returns, which List returns.
	List(ctx context.Context, prefix string, fn func(FileInfo) error) error

	// Remove deletes one object. Removing an object that does not exist is not an error.
	Remove(ctx context.Context, name string) error

	// Close releases the backend's resources.
	Close() error
}

// Creator is implemented by backends that can store an object only if nothing is stored under
// its name, in one step (a local disk's link(2)). repository.SaveNew uses it, and falls back to
// Stat then Save on backends without it.
type Creator interface {
	// SaveNew stores rd under name as Save does, but fails with ErrExist, storing nothing, if
	// anything (an object or not) is already under name.
	SaveNew(ctx context.Context, name string, rd io.Reader) (int64, error)
}

// Appender is implemented by backends that can keep an object open and make what was appended
// to it durable piece by piece: a local disk. The delta log keeps its open segment on one, so
// that what the agent received a moment ago survives a power cut. An appended object is not
// written once as other objects are: its writer owns it until it closes it, and readers read
// its complete prefix (the delta format says how much is complete).
type Appender interface {
	// Create creates the object under name for appending, failing with ErrExist if anything is
	// stored there. Its folders are made as Save makes them.
	Create(ctx context.Context, name string) (AppendFile, error)
}

// AppendFile is an object open for appending.
type AppendFile interface {
	io.Writer
	// Sync makes everything written so far durable.
	Sync() error
	// Close closes the object; what was written and synced stays.
	Close() error
}

// Sweeper is implemented by backends on which a save interrupted by a crash (a process killed
// mid-write) can leave temporary data that List does not show: partial files on a local disk,
// incomplete multipart uploads in S3. The repository calls it only while holding its lock, when
// no save of its own can be running.
type Sweeper interface {
	// SweepPartial removes the leftovers of interrupted saves of objects whose names start with
	// prefix, and returns what it removed, for messages.
	SweepPartial(ctx context.Context, prefix string) ([]string, error)
}

// Archival is implemented by backends where some objects cannot be read back at once after they
// are saved (S3's GLACIER and DEEP_ARCHIVE storage classes need a restore request first): a copy
// into such a backend is checked by the server's checksum (Checksumer) instead of a read-back.
type Archival interface {
	// Archived reports whether an object saved under name cannot be read back at once.
	Archived(name string) bool
}

// Checksumer is implemented by backends whose server computes, checks and keeps a CRC-32C
// (Castagnoli) of each object's whole content when it is saved.
type Checksumer interface {
	// ServerCRC32C returns the CRC-32C the server kept for the object.
	ServerCRC32C(ctx context.Context, name string) (uint32, error)
}

// Retainer is implemented by backends whose storage can refuse to remove an object for a time
// (S3 Object Lock: a retention in governance or compliance mode, a legal hold), and where a removal
// may leave the object's bytes in place (a versioned bucket, which every Object Lock bucket is).
// On such a bucket a removal without a version id succeeds even for a locked object: it writes a
// delete marker, which hides the object from every listing while its bytes stay. So whoever
// removes must ask Locked first. Backends without it (local disks) never lock an object.
type Retainer interface {
	// Retention says how the storage keeps objects as a whole: whether it can lock them at all
	// (the bucket has Object Lock enabled) and whether a removal keeps their bytes as an older
	// version (versioning enabled or suspended).
	Retention(ctx context.Context) (Retention, error)
	// Locked reports whether the storage refuses to remove the object under name now: a legal
	// hold, or a retention whose retain-until date is not yet past (until). A missing object is
	// not locked.
	Locked(ctx context.Context, name string) (locked bool, until time.Time, err error)
}

// Retention is what a Retainer says of its storage as a whole.
type Retention struct {
	// ObjectLock says objects may be locked (retention or legal hold); when false no object is.
	ObjectLock bool
	// Versioned says a removal writes a delete marker and the bytes stay as a noncurrent
	// version, until the bucket's lifecycle rule (NoncurrentVersionExpiration) or a person
	// removes them.
	Versioned bool
}

// FolderRemover is implemented by backends that keep folders apart from the objects in them (a
// local disk), where removing a folder's last object leaves the folder.
type FolderRemover interface {
	// RemoveFolder removes the folder that objects whose names start with prefix (ending in a
	// slash) are in, if it is empty; a folder that is not empty, or not there, is left as it is
	// and is no error.
	RemoveFolder(ctx context.Context, prefix string) error
	// Folders returns the folders directly under prefix (ending in a slash), empty ones
	// included, each named as a prefix ("deltas/<id>/"), in lexical order.
	Folders(ctx context.Context, prefix string) ([]string, error)
}

// Loader is implemented by backends that read a whole small object in one call and can repeat
// that call as a whole when it fails midway (the retry decorator). Use the function Load, which
// falls back to Open on other backends.
type Loader interface {
	// Load returns the first limit bytes of the object (all of it if it is shorter). It fails
	// with ErrNotExist if the object does not exist.
	Load(ctx context.Context, name string, limit int64) ([]byte, error)
}

// Load reads a small object whole (manifests, locks, markers), at most limit bytes of it:
// through be's Loader if it has one, by Open and a read otherwise.
func Load(ctx context.Context, be Backend, name string, limit int64) ([]byte, error) {
	if l, ok := be.(Loader); ok {
		return l.Load(ctx, name, limit)
	}
	rc, err := be.Open(ctx, name)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, limit))
	if err != nil {
		return nil, fmt.Errorf("read %s in %s: %w", name, be.Location(), err)
	}
	return data, nil
}

// Wrapper is implemented by backends that decorate another one (the retry decorator). The
// optional interfaces above (Creator, Appender, Sweeper, Archival, Checksumer, Retainer,
// FolderRemover) belong to the backend underneath: find them with As, not with a type assertion
// on the decorator.
type Wrapper interface {
	// Unwrap returns the backend decorated.
	Unwrap() Backend
}

// As returns be, or the first backend under it in its chain of decorators (Wrapper), that
// implements T, and whether there is one.
func As[T any](be Backend) (T, bool) {
	for be != nil {
		if t, ok := be.(T); ok {
			return t, true
		}
		w, ok := be.(Wrapper)
		if !ok {
			break
		}
		be = w.Unwrap()
	}
	var zero T
	return zero, false
}
