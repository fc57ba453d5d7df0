package local_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/backend"
	"github.com/etcdguard/etcdguard/internal/backend/backendtest"
	"github.com/etcdguard/etcdguard/internal/backend/local"
)

// TestConformance runs the suite on a local disk and on an offline medium (a directory that
// must already exist, as a mounted tape or removable disk).
func TestConformance(t *testing.T) {
	for _, mode := range []struct {
		name string
		opts local.Options
	}{{"local", local.Options{}}, {"offline", local.Options{MustExist: true}}} {
		t.Run(mode.name, func(t *testing.T) {
			backendtest.Run(t, func(t *testing.T) backend.Backend {
				root := filepath.Join(t.TempDir(), "repo")
				if mode.opts.MustExist {
					require.NoError(t, os.Mkdir(root, 0o700))
				}
				b, err := local.New(root, mode.opts)
				require.NoError(t, err)
				t.Cleanup(func() { require.NoError(t, b.Close()) })
				return b
			})
		})
	}
}

func TestPermissions(t *testing.T) {
	root := filepath.Join(t.TempDir(), "new", "repo")
	b, err := local.New(root, local.Options{})
	require.NoError(t, err)
	_, err = b.Save(t.Context(), "snapshots/1/data", strings.NewReader("x"))
	require.NoError(t, err)

	for _, tt := range []struct {
		path string
		mode fs.FileMode
	}{
		{filepath.Join(root), fs.ModeDir | 0o700},
		{filepath.Join(root, "snapshots"), fs.ModeDir | 0o700},
		{filepath.Join(root, "snapshots", "1"), fs.ModeDir | 0o700},
		{filepath.Join(root, "snapshots", "1", "data"), 0o600},
	} {
		fi, err := os.Stat(tt.path)
		require.NoError(t, err)
		require.Equal(t, tt.mode, fi.Mode(), tt.path)
	}
}

func TestLocationIsAbsolute(t *testing.T) {
	t.Chdir(t.TempDir())
	b, err := local.New("repo", local.Options{})
	require.NoError(t, err)
	require.True(t, filepath.IsAbs(b.Location()), b.Location())
}

func TestAbsentRootWithMustExist(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tape")
	_, err := local.New(root, local.Options{MustExist: true})
	require.ErrorIs(t, err, backend.ErrUnavailable)
	require.ErrorContains(t, err, root)
	require.ErrorContains(t, err, "not mounted")
	t.Logf("absent root: %v", err)
	require.NoDirExists(t, root, "New must not create the root of an offline medium")
}

// TestRootDisappears takes the medium away after New: every operation reports it unavailable,
// and none creates the root again (which would write to the disk under the mount point).
func TestRootDisappears(t *testing.T) {
	for _, opts := range []local.Options{{MustExist: true}, {MustExist: false}} {
		t.Run(fmt.Sprintf("MustExist=%v", opts.MustExist), func(t *testing.T) {
			ctx := t.Context()
			root := filepath.Join(t.TempDir(), "tape")
			require.NoError(t, os.Mkdir(root, 0o700))
			b, err := local.New(root, opts)
			require.NoError(t, err)
			_, err = b.Save(ctx, "snapshots/a", strings.NewReader("a"))
			require.NoError(t, err)
			require.NoError(t, os.RemoveAll(root))

			_, err = b.Save(ctx, "snapshots/b", strings.NewReader("b"))
			require.ErrorIs(t, err, backend.ErrUnavailable)
			require.ErrorContains(t, err, root)
			require.NoDirExists(t, root, "Save must not recreate the root")
			_, err = b.Open(ctx, "snapshots/a")
			require.ErrorIs(t, err, backend.ErrUnavailable)
			_, err = b.Stat(ctx, "snapshots/a")
			require.ErrorIs(t, err, backend.ErrUnavailable)
			require.ErrorIs(t, b.Remove(ctx, "snapshots/a"), backend.ErrUnavailable)
			err = b.List(ctx, "", func(backend.FileInfo) error { return nil })
			require.ErrorIs(t, err, backend.ErrUnavailable)
		})
	}
}

func TestRootIsAFile(t *testing.T) {
	root := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(root, nil, 0o600))
	for _, opts := range []local.Options{{}, {MustExist: true}} {
		_, err := local.New(root, opts)
		require.Error(t, err)
		require.ErrorContains(t, err, root)
	}
}

// TestPartialFilesAreHidden checks that the temporary file of a Save interrupted by a crash is
// neither listed nor accepted as a name.
func TestPartialFilesAreHidden(t *testing.T) {
	ctx := t.Context()
	root := t.TempDir()
	b, err := local.New(root, local.Options{MustExist: true})
	require.NoError(t, err)
	_, err = b.Save(ctx, "dir/obj", strings.NewReader("x"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(root, "dir", "obj2.partial-123"), []byte("half"), 0o600))

	require.Equal(t, []string{"dir/obj"}, backendtest.ListNames(t, b, ""))
	_, err = b.Save(ctx, "dir/x.partial-1", strings.NewReader("x"))
	require.Error(t, err)
}

// TestFailedSaveRemovesTemporaryFile looks at the directory itself, where the conformance suite
// can only look through List.
func TestFailedSaveRemovesTemporaryFile(t *testing.T) {
	root := t.TempDir()
	b, err := local.New(root, local.Options{})
	require.NoError(t, err)
	readErr := errors.New("broken pipe from etcd")
	_, err = b.Save(t.Context(), "a/b", io.MultiReader(strings.NewReader("some data"), errReader{readErr}))
	require.ErrorIs(t, err, readErr)
	entries, err := os.ReadDir(filepath.Join(root, "a"))
	require.NoError(t, err)
	require.Empty(t, entries)
}

// TestFailedSaveRemovesItsFolders: a save that fails (an interrupted snapshot save) removes the
// folders it created for its object, so no empty backup folder is left; a top-level folder of
// the layout, which other runs share, and a folder that was already there, stay.
func TestFailedSaveRemovesItsFolders(t *testing.T) {
	root := t.TempDir()
	b, err := local.New(root, local.Options{})
	require.NoError(t, err)
	readErr := errors.New("interrupted")
	_, err = b.Save(t.Context(), "snapshots/20261202T015008Z-eb3268fe/snapshot.db.zst", io.MultiReader(strings.NewReader("data"), errReader{readErr}))
	require.ErrorIs(t, err, readErr)
	require.NoDirExists(t, filepath.Join(root, "snapshots", "20261202T015008Z-eb3268fe"))
	require.DirExists(t, filepath.Join(root, "snapshots"))

	require.NoError(t, os.MkdirAll(filepath.Join(root, "snapshots", "kept"), 0o700))
	_, err = b.Save(t.Context(), "snapshots/kept/deeper/x", io.MultiReader(strings.NewReader("data"), errReader{readErr}))
	require.ErrorIs(t, err, readErr)
	require.NoDirExists(t, filepath.Join(root, "snapshots", "kept", "deeper"))
	require.DirExists(t, filepath.Join(root, "snapshots", "kept"), "a folder the save did not create stays")
}

// TestDiskFull fills a 2 MiB tmpfs. It needs root (to mount) and mount(8).
func TestDiskFull(t *testing.T) {
	dir := t.TempDir()
	if os.Geteuid() != 0 {
		t.Skip("TestDiskFull mounts a small tmpfs and needs root")
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Skipf("TestDiskFull needs to mount a tmpfs, which this machine refuses: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("unmount %s: %v: %s", dir, err, out)
		}
	})

	b, err := local.New(dir, local.Options{MustExist: true})
	require.NoError(t, err)
	_, err = b.Save(t.Context(), "snapshots/big", bytes.NewReader(make([]byte, 3<<20)))
	require.ErrorIs(t, err, backend.ErrNoSpace)
	t.Logf("full disk: %v", err)
	require.ErrorContains(t, err, dir)
	require.Empty(t, backendtest.ListNames(t, b, ""))
	entries, err := os.ReadDir(filepath.Join(dir, "snapshots"))
	require.NoError(t, err)
	require.Empty(t, entries, "the temporary file is removed")

	// The space is free again.
	_, err = b.Save(t.Context(), "snapshots/small", bytes.NewReader(make([]byte, 1<<20)))
	require.NoError(t, err)
}

// TestDenied is a target that refuses writes: a read-only file system (mounted as root) or a
// directory without write permission (as another user, whom the mode binds). Either is
// backend.ErrDenied, with the file system's own error kept.
func TestDenied(t *testing.T) {
	dir := t.TempDir()
	want := syscall.EACCES
	if os.Geteuid() == 0 {
		out, err := exec.Command("mount", "-t", "tmpfs", "-o", "ro,size=1m,mode=0700", "tmpfs", dir).CombinedOutput()
		if err != nil {
			t.Skipf("TestDenied as root needs to mount a read-only tmpfs, which this machine refuses: %v: %s", err, out)
		}
		t.Cleanup(func() {
			if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
				t.Errorf("unmount %s: %v: %s", dir, err, out)
			}
		})
		want = syscall.EROFS
	} else {
		require.NoError(t, os.Chmod(dir, 0o500))
		t.Cleanup(func() { _ = os.Chmod(dir, 0o700) })
	}
	b, err := local.New(dir, local.Options{MustExist: true})
	require.NoError(t, err)
	_, err = b.Save(t.Context(), "snapshots/x/manifest.json", strings.NewReader("{}"))
	require.ErrorIs(t, err, backend.ErrDenied)
	require.ErrorIs(t, err, want)
	require.NotErrorIs(t, err, backend.ErrUnavailable, "the target is there; it refuses")
	require.Equal(t, backend.KindDenied, backend.Kind(err))
	require.ErrorContains(t, err, dir)
	t.Logf("denied: %v", err)
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// TestSweepPartial removes the leftovers of a crashed Save under a prefix, and the folders left
// empty, but no complete object and nothing outside the prefix.
func TestSweepPartial(t *testing.T) {
	ctx := t.Context()
	root := t.TempDir()
	b, err := local.New(root, local.Options{})
	require.NoError(t, err)
	_, err = b.Save(ctx, "snapshots/a/obj", strings.NewReader("x"))
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(filepath.Join(root, "snapshots", "b"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(root, "snapshots", "b", "data.partial-123"), []byte("half"), 0o600))
	require.NoError(t, os.MkdirAll(filepath.Join(root, "locks"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(root, "locks", "l.partial-9"), []byte("half"), 0o600))

	removed, err := b.SweepPartial(ctx, "snapshots/")
	require.NoError(t, err)
	require.Equal(t, []string{"snapshots/b/data.partial-123"}, removed)
	require.NoDirExists(t, filepath.Join(root, "snapshots", "b"))
	require.FileExists(t, filepath.Join(root, "snapshots", "a", "obj"))
	require.FileExists(t, filepath.Join(root, "locks", "l.partial-9"), "outside the prefix")
	require.Equal(t, []string{"snapshots/a/obj"}, backendtest.ListNames(t, b, ""))
}

// TestRemoveFolder: Folders lists the folders under a prefix, empty ones included; RemoveFolder
// removes an empty one, and leaves one with an object, a symlink to a folder, and a folder that
// is not there, without an error.
func TestRemoveFolder(t *testing.T) {
	root := filepath.Join(t.TempDir(), "repo")
	b, err := local.New(root, local.Options{})
	require.NoError(t, err)
	ctx := t.Context()
	_, err = b.Save(ctx, "deltas/a/end.json", strings.NewReader("{}"))
	require.NoError(t, err)
	_, err = b.Save(ctx, "deltas/b/end.json", strings.NewReader("{}"))
	require.NoError(t, err)
	require.NoError(t, b.Remove(ctx, "deltas/a/end.json"))
	require.DirExists(t, filepath.Join(root, "deltas", "a"), "Remove keeps folders")
	require.NoError(t, os.Symlink(filepath.Join(root, "deltas", "a"), filepath.Join(root, "deltas", "link")))

	folders, err := b.Folders(ctx, "deltas/")
	require.NoError(t, err)
	require.Equal(t, []string{"deltas/a/", "deltas/b/"}, folders, "empty ones too; not the symlink")
	folders, err = b.Folders(ctx, "marks/")
	require.NoError(t, err)
	require.Empty(t, folders)

	require.NoError(t, b.RemoveFolder(ctx, "deltas/a/"))
	require.NoDirExists(t, filepath.Join(root, "deltas", "a"))
	require.NoError(t, b.RemoveFolder(ctx, "deltas/b/"))
	require.FileExists(t, filepath.Join(root, "deltas", "b", "end.json"))
	require.NoError(t, b.RemoveFolder(ctx, "deltas/link/"))
	_, err = os.Lstat(filepath.Join(root, "deltas", "link"))
	require.NoError(t, err, "a symlink is not a folder of the repository")
	require.NoError(t, b.RemoveFolder(ctx, "deltas/never/"))
}
