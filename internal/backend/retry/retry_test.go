package retry_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/backend"
	"github.com/etcdguard/etcdguard/internal/backend/backendtest"
	"github.com/etcdguard/etcdguard/internal/backend/local"
	"github.com/etcdguard/etcdguard/internal/backend/retry"
)

// TestConformance runs the backend suite on a local disk through the decorator.
func TestConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		l, err := local.New(filepath.Join(t.TempDir(), "repo"), local.Options{})
		require.NoError(t, err)
		b := retry.New(l, retry.Options{Initial: time.Millisecond})
		t.Cleanup(func() { require.NoError(t, b.Close()) })
		return b
	})
}

// TestOptionalInterfacesOfTheBackendUnder finds the local backend's own SaveNew and
// SweepPartial under the decorator, and none that the local backend lacks.
func TestOptionalInterfacesOfTheBackendUnder(t *testing.T) {
	l, err := local.New(t.TempDir(), local.Options{})
	require.NoError(t, err)
	b := retry.New(l, retry.Options{})
	c, ok := backend.As[backend.Creator](b)
	require.True(t, ok)
	require.Same(t, l, c)
	_, ok = backend.As[backend.Sweeper](b)
	require.True(t, ok)
	_, ok = backend.As[backend.Archival](b)
	require.False(t, ok)
	_, ok = backend.As[backend.Loader](b)
	require.True(t, ok, "the decorator itself loads small objects")
}

// fake is an in-memory backend whose operations fail with the errors queued for them, one per
// call, before they work. Pure logic only: the retry policy.
type fake struct {
	mu      sync.Mutex
	objects map[string][]byte
	fail    map[string][]error // by operation
	calls   map[string]int
	// listFailAfter, when > 0, makes the first List fail after that many objects.
	listFailAfter int
}

func newFake() *fake {
	return &fake{objects: map[string][]byte{}, fail: map[string][]error{}, calls: map[string]int{}}
}

func (f *fake) next(op string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[op]++
	if q := f.fail[op]; len(q) > 0 {
		f.fail[op] = q[1:]
		return q[0]
	}
	return nil
}

func (f *fake) Location() string { return "fake" }
func (f *fake) Close() error     { return nil }

func (f *fake) Save(_ context.Context, name string, rd io.Reader) (int64, error) {
	data, rerr := io.ReadAll(rd) // a failing Save has consumed the reader, as a real one has
	if err := f.next("save"); err != nil {
		return 0, err
	}
	if rerr != nil {
		return 0, rerr
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.objects[name] = data
	return int64(len(data)), nil
}

func (f *fake) Open(_ context.Context, name string) (io.ReadCloser, error) {
	if err := f.next("open"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	data, ok := f.objects[name]
	if !ok {
		return nil, fmt.Errorf("open %s: %w", name, backend.ErrNotExist)
	}
	return io.NopCloser(bytes.NewReader(data)), nil
}

func (f *fake) Stat(_ context.Context, name string) (backend.FileInfo, error) {
	if err := f.next("stat"); err != nil {
		return backend.FileInfo{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	data, ok := f.objects[name]
	if !ok {
		return backend.FileInfo{}, fmt.Errorf("stat %s: %w", name, backend.ErrNotExist)
	}
	return backend.FileInfo{Name: name, Size: int64(len(data))}, nil
}

func (f *fake) List(_ context.Context, prefix string, fn func(backend.FileInfo) error) error {
	f.mu.Lock()
	var names []string
	for n := range f.objects {
		if strings.HasPrefix(n, prefix) {
			names = append(names, n)
		}
	}
	failAfter := f.listFailAfter
	f.listFailAfter = 0
	f.calls["list"]++
	f.mu.Unlock()
	slices.Sort(names)
	for i, n := range names {
		if failAfter > 0 && i == failAfter {
			return errors.New("connection reset by peer")
		}
		if err := fn(backend.FileInfo{Name: n}); err != nil {
			return err
		}
	}
	return nil
}

func (f *fake) Remove(_ context.Context, name string) error {
	if err := f.next("remove"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.objects, name)
	return nil
}

// pauses records the pauses asked for instead of sleeping.
type pauses struct{ got []time.Duration }

func (p *pauses) sleep(ctx context.Context, d time.Duration) error {
	p.got = append(p.got, d)
	return ctx.Err()
}

var (
	errFlaky   = errors.New("500 internal error")
	errRefused = fmt.Errorf("cannot reach the endpoint: %w", backend.ErrUnreachable)
)

// TestPolicy is the retry policy: which errors are tried again, how often, with which pauses.
func TestPolicy(t *testing.T) {
	for _, tc := range []struct {
		name      string
		op        string
		errs      []error
		wantCalls int
		wantErr   error // nil: the operation succeeds in the end
		wantPause []time.Duration
	}{
		{"success at once", "stat", nil, 1, nil, nil},
		{"an unknown error heals", "stat", []error{errFlaky}, 2, nil, []time.Duration{10 * time.Millisecond}},
		{"unreachable heals", "save", []error{errRefused, errRefused}, 3, nil, []time.Duration{10 * time.Millisecond, 20 * time.Millisecond}},
		{"gives up after the attempts", "remove", []error{errFlaky, errFlaky, errFlaky, errFlaky, errFlaky}, 4, errFlaky,
			[]time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 25 * time.Millisecond}},
		{"not found is final", "open", []error{fmt.Errorf("x: %w", backend.ErrNotExist)}, 1, backend.ErrNotExist, nil},
		{"exists is final", "save", []error{fmt.Errorf("x: %w", backend.ErrExist)}, 1, backend.ErrExist, nil},
		{"denied is final", "save", []error{fmt.Errorf("x: %w", backend.ErrDenied)}, 1, backend.ErrDenied, nil},
		{"no space is final", "save", []error{fmt.Errorf("x: %w", backend.ErrNoSpace)}, 1, backend.ErrNoSpace, nil},
		{"an absent medium is final", "stat", []error{fmt.Errorf("x: %w", backend.ErrUnavailable)}, 1, backend.ErrUnavailable, nil},
		{"refused credentials are final", "stat", []error{fmt.Errorf("x: %w: %w", backend.ErrUnavailable, backend.ErrDenied)}, 1, backend.ErrDenied, nil},
		{"cancellation is final", "remove", []error{fmt.Errorf("x: %w", context.Canceled)}, 1, context.Canceled, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake()
			f.objects["a"] = []byte("manifest")
			f.fail[tc.op] = tc.errs
			p := &pauses{}
			b := retry.New(f, retry.Options{Attempts: 4, Initial: 10 * time.Millisecond, Max: 25 * time.Millisecond, Sleep: p.sleep})
			ctx := t.Context()
			var err error
			switch tc.op {
			case "save":
				_, err = b.Save(ctx, "a", bytes.NewReader([]byte("manifest")))
			case "open":
				var rc io.ReadCloser
				if rc, err = b.Open(ctx, "a"); err == nil {
					rc.Close()
				}
			case "stat":
				_, err = b.Stat(ctx, "a")
			case "remove":
				err = b.Remove(ctx, "a")
			}
			if tc.wantErr == nil {
				require.NoError(t, err)
			} else {
				require.ErrorIs(t, err, tc.wantErr)
			}
			require.Equal(t, tc.wantCalls, f.calls[tc.op])
			require.Equal(t, tc.wantPause, p.got)
		})
	}
}

// TestSaveRewindsSmallObjects retries a small in-memory Save from where its reader started, and
// stores the whole object.
func TestSaveRewindsSmallObjects(t *testing.T) {
	f := newFake()
	f.fail["save"] = []error{errFlaky}
	b := retry.New(f, retry.Options{Sleep: (&pauses{}).sleep})
	rd := bytes.NewReader([]byte("skip:lock"))
	_, err := rd.Seek(5, io.SeekStart)
	require.NoError(t, err)
	n, err := b.Save(t.Context(), "locks/1", rd)
	require.NoError(t, err)
	require.Equal(t, int64(4), n)
	require.Equal(t, "lock", string(f.objects["locks/1"]))
	require.Equal(t, 2, f.calls["save"])
}

// TestStreamsAreNotRetried passes a Save whose reader cannot be rewound, and one larger than
// MaxSmall, through once: snapshot streams are retried by their caller.
func TestStreamsAreNotRetried(t *testing.T) {
	for _, tc := range []struct {
		name string
		rd   io.Reader
	}{
		{"a pipe-like reader", io.MultiReader(strings.NewReader("snapshot bytes"))},
		{"a seekable reader above MaxSmall", bytes.NewReader(make([]byte, 1025))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake()
			f.fail["save"] = []error{errFlaky}
			b := retry.New(f, retry.Options{MaxSmall: 1024, Sleep: (&pauses{}).sleep})
			_, err := b.Save(t.Context(), "snapshots/x/snapshot.db", tc.rd)
			require.ErrorIs(t, err, errFlaky)
			require.Equal(t, 1, f.calls["save"])
		})
	}
}

// TestListResumes starts a listing again after a failure midway without calling fn twice for
// one name, and never retries an error of fn itself.
func TestListResumes(t *testing.T) {
	f := newFake()
	for _, n := range []string{"locks/a", "locks/b", "locks/c", "locks/d"} {
		f.objects[n] = nil
	}
	f.listFailAfter = 2
	b := retry.New(f, retry.Options{Sleep: (&pauses{}).sleep})
	var got []string
	require.NoError(t, b.List(t.Context(), "locks/", func(fi backend.FileInfo) error {
		got = append(got, fi.Name)
		return nil
	}))
	require.Equal(t, []string{"locks/a", "locks/b", "locks/c", "locks/d"}, got)
	require.Equal(t, 2, f.calls["list"])

	stop := errors.New("enough")
	err := b.List(t.Context(), "locks/", func(backend.FileInfo) error { return stop })
	require.ErrorIs(t, err, stop)
	require.Equal(t, 3, f.calls["list"], "fn's error is not retried")
}

// TestLoadRetriesTheWholeRead reads a small object again when opening it failed.
func TestLoadRetriesTheWholeRead(t *testing.T) {
	f := newFake()
	f.objects["snapshots/x/manifest.json"] = []byte(`{"id":"x"}`)
	f.fail["open"] = []error{errRefused}
	b := retry.New(f, retry.Options{Sleep: (&pauses{}).sleep})
	data, err := backend.Load(t.Context(), b, "snapshots/x/manifest.json", 4)
	require.NoError(t, err)
	require.Equal(t, `{"id`, string(data), "at most limit bytes")
	require.Equal(t, 2, f.calls["open"])
}

// TestCancelledWhilePausing stops at once when the context ends during a pause.
func TestCancelledWhilePausing(t *testing.T) {
	f := newFake()
	f.fail["stat"] = []error{errFlaky, errFlaky}
	ctx, cancel := context.WithCancel(t.Context())
	b := retry.New(f, retry.Options{Sleep: func(context.Context, time.Duration) error {
		cancel()
		return context.Canceled
	}})
	_, err := b.Stat(ctx, "a")
	require.ErrorIs(t, err, errFlaky)
	require.Equal(t, 1, f.calls["stat"])
}
