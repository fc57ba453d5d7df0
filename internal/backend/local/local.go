// Package local keeps a backend's objects as files under a directory: a local disk, a network
// mount, or a removable medium that may be absent.
package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/etcdguard/etcdguard/internal/atomicfile"
	"github.com/etcdguard/etcdguard/internal/backend"
)

// partialMarker is part of the name of every temporary file Save writes. Object names may not
// contain it, and List hides files that do, so an interrupted Save is never seen as an object.
const partialMarker = ".partial-"

// copyBufferSize bounds the memory one Save uses, and is how often it checks its context.
const copyBufferSize = 1 << 20

// Options controls how New treats the root directory.
type Options struct {
	// MustExist says the root directory is never created: if it is absent (an unmounted tape or
	// removable medium, a network share that is not mounted), New and every operation fail with
	// an error wrapping backend.ErrUnavailable. Without it, New creates the root (mode 0700).
	// Either way, a root that disappears after New makes operations fail with
	// backend.ErrUnavailable; it is never created again behind the caller's back.
	MustExist bool
}

// Local is a backend.Backend that stores each object as a file under a root directory.
// Directories are created with mode 0700 and files with mode 0600. It is safe for concurrent
// use.
type Local struct {
	root string
}

var _ backend.Backend = (*Local)(nil)

// New returns a backend rooted at the directory root. See Options for what happens when the
// root does not exist.
func New(root string, opts Options) (*Local, error) {
	if root == "" {
		return nil, errors.New("local backend: the root directory is empty")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("local backend %s: resolve the root directory: %w", root, err)
	}
	l := &Local{root: abs}
	if !opts.MustExist {
		if err := os.MkdirAll(abs, 0o700); err != nil {
			return nil, l.mapErr("create root directory", err)
		}
	}
	if err := l.checkRoot(); err != nil {
		return nil, err
	}
	return l, nil
}

// Location returns the absolute path of the root directory.
func (l *Local) Location() string { return l.root }

// Save writes rd to a temporary file next to the object, fsyncs it, renames it into place and
// fsyncs the directory. On any failure the temporary file is removed.
func (l *Local) Save(ctx context.Context, name string, rd io.Reader) (n int64, err error) {
	return l.save(ctx, name, rd, os.Rename)
}

var _ backend.Creator = (*Local)(nil)

// SaveNew is Save, except that the finished temporary file is linked into place rather than
// renamed: link(2) fails if anything exists under the name, which is then left as it is and
// reported with backend.ErrExist.
func (l *Local) SaveNew(ctx context.Context, name string, rd io.Reader) (int64, error) {
	return l.save(ctx, name, rd, func(tmp, dst string) error {
		if err := os.Link(tmp, dst); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("%s: %w", dst, backend.ErrExist)
			}
			return err
		}
		_ = os.Remove(tmp) // the object is in place; a leftover is swept as a partial file
		return nil
	})
}

var _ backend.Appender = (*Local)(nil)

// Create creates the file of name (mode 0600, exclusively) for appending; its folders are
// created and fsynced as Save creates them, and so is the new entry in its folder, so that a
// Sync of the file is enough to make what was written durable.
func (l *Local) Create(ctx context.Context, name string) (backend.AppendFile, error) {
	if err := l.checkOp(ctx, name); err != nil {
		return nil, fmt.Errorf("create %s: %w", name, err)
	}
	doing := fmt.Sprintf("create %s in %s", name, l.root)
	created, err := l.mkdirs(path.Dir(name))
	if err != nil {
		l.removeCreated(created)
		return nil, l.mapErr(doing, err)
	}
	dst := l.path(name)
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		l.removeCreated(created)
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("%s: %w", doing, backend.ErrExist)
		}
		return nil, l.mapErr(doing, err)
	}
	if err := atomicfile.SyncDir(filepath.Dir(dst)); err != nil {
		_ = f.Close()
		return nil, l.mapErr(doing+": sync directory", err)
	}
	return &appendFile{f: f, l: l, name: name}, nil
}

// appendFile is a Local object open for appending; its errors carry the backend's sentinels.
type appendFile struct {
	f    *os.File
	l    *Local
	name string
}

func (a *appendFile) Write(p []byte) (int, error) {
	n, err := a.f.Write(p)
	if err != nil {
		return n, a.l.mapErr("append to "+a.name, err)
	}
	return n, nil
}

func (a *appendFile) Sync() error {
	if err := a.f.Sync(); err != nil {
		return a.l.mapErr("sync "+a.name, err)
	}
	return nil
}

func (a *appendFile) Close() error {
	if err := a.f.Close(); err != nil {
		return a.l.mapErr("close "+a.name, err)
	}
	return nil
}

// save writes rd to a temporary file and moves it into place with place(tmp, dst).
func (l *Local) save(ctx context.Context, name string, rd io.Reader, place func(tmp, dst string) error) (n int64, err error) {
	if err := checkName(name); err != nil {
		return 0, fmt.Errorf("save %s: %w", name, err)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("save %s to %s: %w", name, l.root, err)
	}
	if err := l.checkRoot(); err != nil {
		return 0, fmt.Errorf("save %s: %w", name, err)
	}
	dst := l.path(name)
	dir := filepath.Dir(dst)
	created, err := l.mkdirs(path.Dir(name))
	defer func() {
		if err != nil {
			l.removeCreated(created)
		}
	}()
	if err != nil {
		return 0, l.mapErr(fmt.Sprintf("save %s to %s", name, l.root), err)
	}
	// CreateTemp creates the file with mode 0600.
	f, err := os.CreateTemp(dir, filepath.Base(dst)+partialMarker+"*")
	if err != nil {
		return 0, l.mapErr(fmt.Sprintf("save %s to %s", name, l.root), err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close() // may already be closed; the error that matters is err
			_ = os.Remove(tmp)
		}
	}()

	n, err = copyContext(ctx, f, rd)
	var rerr readError
	switch {
	case errors.As(err, &rerr):
		return 0, fmt.Errorf("save %s to %s: read data: %w", name, l.root, rerr.err)
	case ctx.Err() != nil:
		return 0, fmt.Errorf("save %s to %s: %w", name, l.root, err)
	case err != nil:
		return 0, l.mapErr(fmt.Sprintf("save %s to %s", name, l.root), err)
	}
	if err := f.Sync(); err != nil {
		return 0, l.mapErr(fmt.Sprintf("save %s to %s", name, l.root), err)
	}
	if err := f.Close(); err != nil {
		return 0, l.mapErr(fmt.Sprintf("save %s to %s", name, l.root), err)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("save %s to %s: %w", name, l.root, err)
	}
	if err := place(tmp, dst); err != nil {
		return 0, l.mapErr(fmt.Sprintf("save %s to %s", name, l.root), err)
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		// The object is in place but its directory entry may not be durable: report it, as
		// Save promises durability, and leave the object for the caller to decide about.
		return 0, l.mapErr(fmt.Sprintf("save %s to %s: sync directory", name, l.root), err)
	}
	return n, nil
}

// Open opens the object's file for reading.
func (l *Local) Open(ctx context.Context, name string) (io.ReadCloser, error) {
	if err := l.checkOp(ctx, name); err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	p := l.path(name)
	// O_NOFOLLOW: a symlink is not an object (what it points to is not in the repository).
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("open %s: %s is a symlink: %w: %w", name, p, backend.ErrNotObject, backend.ErrNotExist)
	}
	if isNotExist(err) {
		return nil, fmt.Errorf("open %s: %s: %w", name, p, backend.ErrNotExist)
	}
	if err != nil {
		return nil, l.mapErr(fmt.Sprintf("open %s", name), err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, l.mapErr(fmt.Sprintf("open %s", name), err)
	}
	if !fi.Mode().IsRegular() {
		_ = f.Close()
		return nil, fmt.Errorf("open %s: %s is %s, not a regular file: %w: %w", name, p, kindOf(fi.Mode()), backend.ErrNotObject, backend.ErrNotExist)
	}
	return f, nil
}

// Stat describes the object's file.
func (l *Local) Stat(ctx context.Context, name string) (backend.FileInfo, error) {
	if err := l.checkOp(ctx, name); err != nil {
		return backend.FileInfo{}, fmt.Errorf("stat %s: %w", name, err)
	}
	p := l.path(name)
	fi, err := os.Lstat(p)
	if isNotExist(err) {
		return backend.FileInfo{}, fmt.Errorf("stat %s: %s: %w", name, p, backend.ErrNotExist)
	}
	if err != nil {
		return backend.FileInfo{}, l.mapErr(fmt.Sprintf("stat %s", name), err)
	}
	if !fi.Mode().IsRegular() {
		return backend.FileInfo{}, fmt.Errorf("stat %s: %s is %s, not a regular file: %w: %w", name, p, kindOf(fi.Mode()), backend.ErrNotObject, backend.ErrNotExist)
	}
	return backend.FileInfo{Name: name, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// List walks the directories that can hold names starting with prefix, in lexical order of
// the full name, skipping temporary files of unfinished Saves and entries that are not regular
// files (symlinks, devices, ...: not objects; Stat names them with backend.ErrNotObject).
func (l *Local) List(ctx context.Context, prefix string, fn func(backend.FileInfo) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("list %q in %s: %w", prefix, l.root, err)
	}
	if err := l.checkRoot(); err != nil {
		return fmt.Errorf("list %q: %w", prefix, err)
	}
	// Start at the deepest directory the prefix names completely: "a/b/c" starts at "a/b".
	start := ""
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		start = prefix[:i]
	}
	if start != "" && !fs.ValidPath(start) {
		return nil // no object name can start with such a prefix
	}
	return l.walk(ctx, start, prefix, fn)
}

// walk calls fn for the files under the directory dir (a slash-separated name relative to the
// root) whose names start with prefix. Entries are visited in the order of their name, with a
// slash appended to directory names: that makes the order of the full names lexical ("a-b"
// comes before "a/c" because '-' sorts before '/').
func (l *Local) walk(ctx context.Context, dir, prefix string, fn func(backend.FileInfo) error) error {
	entries, err := os.ReadDir(l.path(dir))
	if isNotExist(err) && dir != "" {
		return nil // nothing below dir, or dir was removed while walking
	}
	if err != nil {
		return l.mapErr(fmt.Sprintf("list %q: read directory %s", prefix, l.path(dir)), err)
	}
	type entry struct {
		key string
		de  fs.DirEntry
	}
	sorted := make([]entry, 0, len(entries))
	for _, de := range entries {
		key := de.Name()
		if de.IsDir() {
			key += "/"
		}
		sorted = append(sorted, entry{key, de})
	}
	slices.SortFunc(sorted, func(a, b entry) int { return strings.Compare(a.key, b.key) })

	for _, e := range sorted {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("list %q in %s: %w", prefix, l.root, err)
		}
		name := path.Join(dir, e.de.Name())
		if e.de.IsDir() {
			// Descend only if names below can start with prefix.
			d := name + "/"
			if !strings.HasPrefix(d, prefix) && !strings.HasPrefix(prefix, d) {
				continue
			}
			if err := l.walk(ctx, name, prefix, fn); err != nil {
				return err
			}
			continue
		}
		if !strings.HasPrefix(name, prefix) || strings.Contains(e.de.Name(), partialMarker) || !e.de.Type().IsRegular() {
			continue
		}
		fi, err := e.de.Info()
		if isNotExist(err) {
			continue // removed since the directory was read
		}
		if err != nil {
			return l.mapErr(fmt.Sprintf("list %q: stat %s", prefix, name), err)
		}
		if err := fn(backend.FileInfo{Name: name, Size: fi.Size(), ModTime: fi.ModTime()}); err != nil {
			return err
		}
	}
	return nil
}

// Remove deletes the object's file; a missing file is not an error. Empty directories are left
// in place, as a concurrent Save may be about to use them.
func (l *Local) Remove(ctx context.Context, name string) error {
	if err := l.checkOp(ctx, name); err != nil {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	p := l.path(name)
	fi, err := os.Lstat(p)
	if isNotExist(err) {
		return nil
	}
	if err != nil {
		return l.mapErr(fmt.Sprintf("remove %s", name), err)
	}
	if fi.IsDir() {
		return fmt.Errorf("remove %s: %s is a directory, not an object", name, p)
	}
	if err := os.Remove(p); err != nil && !isNotExist(err) {
		return l.mapErr(fmt.Sprintf("remove %s", name), err)
	}
	return nil
}

var _ backend.FolderRemover = (*Local)(nil)

// RemoveFolder removes the folder of prefix ("deltas/<id>/") if it is empty: Remove keeps
// folders, and a folder left behind by every pruned backup would pile up. A folder that is not
// empty (or is a symlink, or is not there) is left, and is no error; a folder left behind by a
// crash costs nothing but a listing entry.
func (l *Local) RemoveFolder(ctx context.Context, prefix string) error {
	name := strings.TrimSuffix(prefix, "/")
	if err := l.checkOp(ctx, name); err != nil {
		return fmt.Errorf("remove folder %s: %w", prefix, err)
	}
	p := l.path(name)
	fi, err := os.Lstat(p)
	if err != nil || !fi.IsDir() {
		return nil
	}
	if err := os.Remove(p); err != nil && !isNotExist(err) && !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
		return l.mapErr("remove folder "+prefix, err)
	}
	return nil
}

// Folders returns the folders directly under prefix, as prefixes; none when prefix's own folder is
// not there. Symlinks are not folders of the repository and are left out.
func (l *Local) Folders(ctx context.Context, prefix string) ([]string, error) {
	name := strings.TrimSuffix(prefix, "/")
	if err := l.checkOp(ctx, name); err != nil {
		return nil, fmt.Errorf("list folders under %s: %w", prefix, err)
	}
	entries, err := os.ReadDir(l.path(name))
	if isNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, l.mapErr("list folders under "+prefix, err)
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, name+"/"+e.Name()+"/")
		}
	}
	return out, nil
}

// kindOf names what a non-regular file is, for messages.
func kindOf(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "a symlink"
	case m.IsDir():
		return "a folder"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&(fs.ModeDevice|fs.ModeCharDevice) != 0:
		return "a device"
	case m&fs.ModeSocket != 0:
		return "a socket"
	}
	return "not a regular file"
}

// Close does nothing: a Local holds no resources between calls.
func (l *Local) Close() error { return nil }

// path returns the file path of a slash-separated object name.
func (l *Local) path(name string) string {
	return filepath.Join(l.root, filepath.FromSlash(name))
}

// checkOp checks what every single-object operation needs: a valid name, a live context and a
// present root.
func (l *Local) checkOp(ctx context.Context, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", l.root, err)
	}
	return l.checkRoot()
}

// checkRoot reports a root that is absent or not a directory as unavailable storage. Without
// it, a Save to the mount point of an unmounted medium would fill the disk underneath.
func (l *Local) checkRoot() error {
	fi, err := os.Stat(l.root)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s does not exist (medium not mounted or absent?): mount it or fix the path: %w",
			l.root, backend.ErrUnavailable)
	case err != nil && sentinelOf(err) != nil:
		return fmt.Errorf("%s: %w: %w: %w", l.root, backend.ErrUnavailable, sentinelOf(err), err)
	case err != nil:
		return fmt.Errorf("%s: %w: %w", l.root, backend.ErrUnavailable, err)
	case !fi.IsDir():
		return fmt.Errorf("%s is not a directory: fix the path: %w", l.root, backend.ErrUnavailable)
	}
	return nil
}

// mapErr wraps err with what was being done, adding the backend sentinel that says whose fault
// it is (sentinelOf). The errors of package os name the file concerned, and stay in the chain.
func (l *Local) mapErr(doing string, err error) error {
	switch s := sentinelOf(err); s {
	case nil:
		return fmt.Errorf("%s: %w", doing, err)
	case backend.ErrDenied:
		return fmt.Errorf("%s: %w: %w (check that the user running etcdguard may read and write %s, and that it is not mounted read-only)", doing, s, err, l.root)
	default:
		return fmt.Errorf("%s: %w: %w", doing, s, err)
	}
}

// sentinelOf returns the backend sentinel for a file system error: backend.ErrNoSpace for a
// full file system or an exhausted quota, backend.ErrDenied for file permissions and read-only
// file systems, backend.ErrUnreachable for a network mount that stopped answering; nil for
// anything else.
func sentinelOf(err error) error {
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return backend.ErrNoSpace
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EROFS):
		return backend.ErrDenied
	case errors.Is(err, syscall.ETIMEDOUT), errors.Is(err, syscall.EHOSTDOWN), errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.ENETUNREACH):
		return backend.ErrUnreachable
	}
	return nil
}

// isNotExist reports whether err says a path does not exist, including the case where one of
// its parents is a file rather than a directory.
func isNotExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// checkName accepts slash-separated relative names with no "." or ".." elements, and rejects
// names Save would confuse with its temporary files.
func checkName(name string) error {
	if !fs.ValidPath(name) || name == "." {
		return fmt.Errorf("invalid object name %q: want a relative slash-separated path without . or .. elements", name)
	}
	if strings.Contains(name, partialMarker) || strings.Contains(name, `\`) {
		return fmt.Errorf("invalid object name %q: it must not contain %q or a backslash", name, partialMarker)
	}
	return nil
}

// copyContext copies src to dst through a bounded buffer, checking ctx between chunks.
func copyContext(ctx context.Context, dst io.Writer, src io.Reader) (int64, error) {
	buf := make([]byte, copyBufferSize)
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		nr, rerr := src.Read(buf)
		if nr > 0 {
			nw, werr := dst.Write(buf[:nr])
			n += int64(nw)
			if werr != nil {
				return n, werr
			}
			if nw != nr {
				return n, io.ErrShortWrite
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, readError{rerr}
		}
	}
}

// readError marks an error of the reader passed to Save, as opposed to one of the file system.
type readError struct{ err error }

func (e readError) Error() string { return "read data: " + e.err.Error() }
func (e readError) Unwrap() error { return e.err }

// mkdirs creates the directory dir (slash-separated, relative to the root) and its missing
// parents below the root, fsyncing the parent of each one it creates so that the new entries
// survive a crash along with the object saved in them.
func (l *Local) mkdirs(dir string) (created []string, err error) {
	if dir == "." {
		return nil, nil
	}
	parent := l.root
	for _, elem := range strings.Split(dir, "/") {
		p := filepath.Join(parent, elem)
		err := os.Mkdir(p, 0o700)
		switch {
		case err == nil:
			created = append(created, p)
			if err := atomicfile.SyncDir(parent); err != nil {
				return created, err
			}
		case errors.Is(err, fs.ErrExist):
			// Already there (or created concurrently); a file in the way fails CreateTemp.
		default:
			return created, err
		}
		parent = p
	}
	return created, nil
}

// removeCreated removes, deepest first, the folders a failed Save created, so that an
// interrupted save leaves no empty backup folder behind (snapshots/ID/). It removes only those
// still empty, and never a top-level folder of the layout (snapshots/, locks/): other runs
// share those and may be about to write into them.
func (l *Local) removeCreated(created []string) {
	for i := len(created) - 1; i >= 0; i-- {
		if filepath.Dir(created[i]) == l.root {
			continue
		}
		if os.Remove(created[i]) != nil {
			return // not empty (or gone): something else is in it
		}
		_ = atomicfile.SyncDir(filepath.Dir(created[i]))
	}
}
