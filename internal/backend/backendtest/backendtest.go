// Package backendtest is the conformance suite every backend.Backend implementation runs: the
// behaviour the repository layer relies on, checked the same way for each storage.
package backendtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/backend"
)

// LargeSize is the size of the large object the suite stores: big enough that a backend which
// uploads in parts of 16 MiB uses several of them, including a short last one.
const LargeSize = 40<<20 + 12345

// Run runs the conformance suite. newBackend returns an empty backend for one subtest; it
// registers its own cleanup with t.
func Run(t *testing.T, newBackend func(t *testing.T) backend.Backend) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, b backend.Backend)
	}{
		{"Location", testLocation},
		{"RoundTripEmpty", func(t *testing.T, b backend.Backend) { roundTrip(t, b, "empty", []byte{}) }},
		{"RoundTripSmall", func(t *testing.T, b backend.Backend) { roundTrip(t, b, "small.bin", randomBytes(t, 1000)) }},
		{"RoundTripLarge", testRoundTripLarge},
		{"MissingObject", testMissingObject},
		{"Stat", testStat},
		{"ListPrefixOrder", testListPrefixOrder},
		{"ListStopsOnError", testListStopsOnError},
		{"Remove", testRemove},
		{"Replace", testReplace},
		{"InvalidNames", testInvalidNames},
		{"FailingReaderLeavesNothing", testFailingReader},
		{"CancelledContextLeavesNothing", testCancelledContext},
		{"CancelDuringSaveLeavesNothing", testCancelDuringSave},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBackend(t)
			tt.fn(t, b)
		})
	}
}

func testLocation(t *testing.T, b backend.Backend) {
	require.NotEmpty(t, b.Location())
}

// roundTrip saves data under name, then checks Stat, Open and List see exactly it.
func roundTrip(t *testing.T, b backend.Backend, name string, data []byte) {
	t.Helper()
	ctx := t.Context()
	n, err := b.Save(ctx, name, bytes.NewReader(data))
	require.NoError(t, err)
	require.Equal(t, int64(len(data)), n)

	fi, err := b.Stat(ctx, name)
	require.NoError(t, err)
	require.Equal(t, name, fi.Name)
	require.Equal(t, int64(len(data)), fi.Size)
	require.False(t, fi.ModTime.IsZero(), "ModTime is set")

	require.Equal(t, data, readAll(t, b, name))
	require.Equal(t, []string{name}, ListNames(t, b, ""))
}

// testRoundTripLarge streams a large object from a reader that hides its size, as a snapshot
// stream does, and compares hashes rather than holding two copies.
func testRoundTripLarge(t *testing.T, b backend.Backend) {
	ctx := t.Context()
	const name = "snapshots/large.db"
	src := &patternReader{remaining: LargeSize}
	n, err := b.Save(ctx, name, src)
	require.NoError(t, err)
	require.Equal(t, int64(LargeSize), n)

	fi, err := b.Stat(ctx, name)
	require.NoError(t, err)
	require.Equal(t, int64(LargeSize), fi.Size)

	rc, err := b.Open(ctx, name)
	require.NoError(t, err)
	defer rc.Close()
	got := sha256.New()
	m, err := io.Copy(got, rc)
	require.NoError(t, err)
	require.Equal(t, int64(LargeSize), m)

	want := sha256.New()
	_, err = io.Copy(want, &patternReader{remaining: LargeSize})
	require.NoError(t, err)
	require.Equal(t, want.Sum(nil), got.Sum(nil), "contents read back differ from contents saved")
}

func testMissingObject(t *testing.T, b backend.Backend) {
	ctx := t.Context()
	for _, name := range []string{"missing", "no/such/dir/missing"} {
		_, err := b.Open(ctx, name)
		require.ErrorIs(t, err, backend.ErrNotExist, "Open(%q)", name)
		_, err = b.Stat(ctx, name)
		require.ErrorIs(t, err, backend.ErrNotExist, "Stat(%q)", name)
	}
	// A name that is a "directory" of another object is not an object either.
	_, err := b.Save(ctx, "dir/object", bytes.NewReader([]byte("x")))
	require.NoError(t, err)
	_, err = b.Stat(ctx, "dir")
	require.ErrorIs(t, err, backend.ErrNotExist)
	_, err = b.Open(ctx, "dir")
	require.ErrorIs(t, err, backend.ErrNotExist)
	require.Empty(t, ListNames(t, b, "missing"))
}

func testStat(t *testing.T, b backend.Backend) {
	ctx := t.Context()
	for _, size := range []int{0, 1, 4096, 100_000} {
		name := "stat/" + strconv.Itoa(size)
		_, err := b.Save(ctx, name, bytes.NewReader(randomBytes(t, size)))
		require.NoError(t, err)
		fi, err := b.Stat(ctx, name)
		require.NoError(t, err)
		require.Equal(t, backend.FileInfo{Name: name, Size: int64(size), ModTime: fi.ModTime}, fi)
	}
}

func testListPrefixOrder(t *testing.T, b backend.Backend) {
	ctx := t.Context()
	// Saved out of order; "a-c" sorts before "a/b" ('-' < '/'), and "a0" after it.
	names := []string{
		"snapshots/2/manifest.json",
		"a0",
		"snapshots/10/manifest.json",
		"a/b",
		"snapshots/1/data",
		"a-c",
		"snapshots/1/manifest.json",
		"locks/x",
		"a/b2/deep/er",
		"snapshotsX",
	}
	for i, name := range names {
		_, err := b.Save(ctx, name, bytes.NewReader([]byte(name[:i%len(name)])))
		require.NoError(t, err)
	}
	tests := []struct {
		prefix string
		want   []string
	}{
		{"", []string{"a-c", "a/b", "a/b2/deep/er", "a0", "locks/x", "snapshots/1/data", "snapshots/1/manifest.json",
			"snapshots/10/manifest.json", "snapshots/2/manifest.json", "snapshotsX"}},
		{"a", []string{"a-c", "a/b", "a/b2/deep/er", "a0"}},
		{"a/", []string{"a/b", "a/b2/deep/er"}},
		{"a/b", []string{"a/b", "a/b2/deep/er"}},
		{"a/b2/", []string{"a/b2/deep/er"}},
		{"snapshots/", []string{"snapshots/1/data", "snapshots/1/manifest.json", "snapshots/10/manifest.json",
			"snapshots/2/manifest.json"}},
		{"snapshots/1", []string{"snapshots/1/data", "snapshots/1/manifest.json", "snapshots/10/manifest.json"}},
		{"snapshots/1/", []string{"snapshots/1/data", "snapshots/1/manifest.json"}},
		{"snapshots/1/m", []string{"snapshots/1/manifest.json"}},
		{"snapshots/3", nil},
		{"nothing/here/", nil},
		{"a0/", nil},
	}
	for _, tt := range tests {
		t.Run("prefix="+tt.prefix, func(t *testing.T) {
			require.Equal(t, tt.want, ListNames(t, b, tt.prefix))
		})
	}
	// Sizes reported by List match the objects.
	err := b.List(ctx, "snapshots/1/", func(fi backend.FileInfo) error {
		st, err := b.Stat(ctx, fi.Name)
		require.NoError(t, err)
		require.Equal(t, st.Size, fi.Size, fi.Name)
		return nil
	})
	require.NoError(t, err)
}

func testListStopsOnError(t *testing.T, b backend.Backend) {
	ctx := t.Context()
	for _, name := range []string{"l/1", "l/2", "l/3"} {
		_, err := b.Save(ctx, name, bytes.NewReader([]byte(name)))
		require.NoError(t, err)
	}
	stop := errors.New("stop")
	var seen []string
	err := b.List(ctx, "l/", func(fi backend.FileInfo) error {
		seen = append(seen, fi.Name)
		if len(seen) == 2 {
			return stop
		}
		return nil
	})
	require.ErrorIs(t, err, stop)
	require.Equal(t, []string{"l/1", "l/2"}, seen)
}

func testRemove(t *testing.T, b backend.Backend) {
	ctx := t.Context()
	for _, name := range []string{"r/keep", "r/gone"} {
		_, err := b.Save(ctx, name, bytes.NewReader([]byte(name)))
		require.NoError(t, err)
	}
	require.NoError(t, b.Remove(ctx, "r/gone"))
	_, err := b.Stat(ctx, "r/gone")
	require.ErrorIs(t, err, backend.ErrNotExist)
	require.Equal(t, []string{"r/keep"}, ListNames(t, b, ""))

	require.NoError(t, b.Remove(ctx, "r/gone"), "removing a removed object")
	require.NoError(t, b.Remove(ctx, "never/existed"), "removing an object that never existed")
	require.Equal(t, []byte("r/keep"), readAll(t, b, "r/keep"))
}

func testReplace(t *testing.T, b backend.Backend) {
	ctx := t.Context()
	_, err := b.Save(ctx, "obj", bytes.NewReader([]byte("first version, longer")))
	require.NoError(t, err)
	_, err = b.Save(ctx, "obj", bytes.NewReader([]byte("second")))
	require.NoError(t, err)
	require.Equal(t, []byte("second"), readAll(t, b, "obj"))
	fi, err := b.Stat(ctx, "obj")
	require.NoError(t, err)
	require.Equal(t, int64(len("second")), fi.Size)
	require.Equal(t, []string{"obj"}, ListNames(t, b, ""))
}

func testInvalidNames(t *testing.T, b backend.Backend) {
	ctx := t.Context()
	for _, name := range []string{"", "/abs", "a/../b", "../up", "a//b", "trailing/", "."} {
		_, err := b.Save(ctx, name, bytes.NewReader([]byte("x")))
		require.Error(t, err, "Save(%q)", name)
	}
	require.Empty(t, ListNames(t, b, ""))
}

// testFailingReader saves from a reader that fails after some data, for a small object and for
// one large enough that a multipart upload has started.
func testFailingReader(t *testing.T, b backend.Backend) {
	ctx := t.Context()
	for _, size := range []int64{1000, 20 << 20} {
		readErr := errors.New("reader broke")
		rd := io.MultiReader(&patternReader{remaining: size}, errorReader{readErr})
		_, err := b.Save(ctx, "broken/"+strconv.FormatInt(size, 10), rd)
		require.ErrorIs(t, err, readErr)
		_, err = b.Stat(ctx, "broken/"+strconv.FormatInt(size, 10))
		require.ErrorIs(t, err, backend.ErrNotExist)
	}
	require.Empty(t, ListNames(t, b, ""))
}

func testCancelledContext(t *testing.T, b backend.Backend) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := b.Save(ctx, "cancelled", bytes.NewReader([]byte("data")))
	require.ErrorIs(t, err, context.Canceled)
	_, err = b.Stat(t.Context(), "cancelled")
	require.ErrorIs(t, err, backend.ErrNotExist)
	require.Empty(t, ListNames(t, b, ""))
}

// testCancelDuringSave cancels the context once part of the data has been read.
func testCancelDuringSave(t *testing.T, b backend.Backend) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	rd := &patternReader{remaining: LargeSize, after: 20 << 20, hook: cancel}
	_, err := b.Save(ctx, "cancelled-midway", rd)
	require.ErrorIs(t, err, context.Canceled)
	_, err = b.Stat(t.Context(), "cancelled-midway")
	require.ErrorIs(t, err, backend.ErrNotExist)
	require.Empty(t, ListNames(t, b, ""))
}

func readAll(t *testing.T, b backend.Backend, name string) []byte {
	t.Helper()
	rc, err := b.Open(t.Context(), name)
	require.NoError(t, err)
	defer rc.Close()
	data, err := io.ReadAll(rc)
	require.NoError(t, err)
	if data == nil {
		data = []byte{}
	}
	return data
}

// ListNames returns the names b lists under prefix, in the order List gives them. Backend tests
// use it to check what is stored.
func ListNames(t testing.TB, b backend.Backend, prefix string) []string {
	t.Helper()
	var names []string
	err := b.List(t.Context(), prefix, func(fi backend.FileInfo) error {
		names = append(names, fi.Name)
		return nil
	})
	require.NoError(t, err)
	return names
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	data := make([]byte, n)
	_, err := rand.Read(data)
	require.NoError(t, err)
	return data
}

// patternReader yields remaining bytes of a deterministic pattern, without knowing its own
// size in a way a backend could discover (no Len, Seek or WriterTo). Once after bytes have
// been read it calls hook.
type patternReader struct {
	remaining int64
	read      int64
	after     int64
	hook      func()
}

func (r *patternReader) Read(p []byte) (int, error) {
	if r.remaining <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.remaining {
		p = p[:r.remaining]
	}
	for i := range p {
		x := r.read + int64(i)
		p[i] = byte(x ^ x>>8 ^ x>>16)
	}
	r.remaining -= int64(len(p))
	before := r.read
	r.read += int64(len(p))
	if r.hook != nil && before < r.after && r.read >= r.after {
		r.hook()
	}
	return len(p), nil
}

type errorReader struct{ err error }

func (r errorReader) Read([]byte) (int, error) { return 0, r.err }
