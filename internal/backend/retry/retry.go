// Package retry decorates any backend.Backend so that operations on small whole objects
// (manifests, locks, markers) are tried again, after a short and growing pause, when they fail
// in a way that may heal by itself: a dropped connection, a timeout, a server error. Errors
// that say something about the object or the target (it does not exist, it already exists,
// access is denied, the target is full or absent) and a cancelled context end the operation at
// once.
//
// Streams are not retried here: a Save whose reader cannot be rewound, or whose data is larger
// than Options.MaxSmall, is passed through once, and the reader returned by Open is the backend's
// own. A snapshot stream is retried as a whole, from another member, by package snapshot.
package retry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/etcdguard/etcdguard/internal/backend"
)

// Defaults of Options.
const (
	DefaultAttempts = 3
	DefaultInitial  = 500 * time.Millisecond
	DefaultMax      = 5 * time.Second
	DefaultMaxSmall = 4 << 20
)

// Options bounds the retries. Zero values take the defaults.
type Options struct {
	// Attempts is how many times one operation is tried in all (DefaultAttempts).
	Attempts int
	// Initial is the pause after the first failure; each pause doubles it (DefaultInitial).
	Initial time.Duration
	// Max caps each pause (DefaultMax).
	Max time.Duration
	// MaxSmall is the largest Save, in bytes, that is retried (DefaultMaxSmall): anything
	// larger is a stream, which its caller retries as a whole if it wants to.
	MaxSmall int64
	// Logger receives one warning per retry; nil discards them.
	Logger *slog.Logger
	// Sleep waits d or until ctx is done, returning ctx's error then; nil means a timer.
	// Tests inject it.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Backend is a backend.Backend that retries small whole-object operations on the backend it
// decorates. It is safe for concurrent use if the decorated backend is.
type Backend struct {
	be   backend.Backend
	opts Options
	lg   *slog.Logger
}

var (
	_ backend.Backend = (*Backend)(nil)
	_ backend.Loader  = (*Backend)(nil)
	_ backend.Wrapper = (*Backend)(nil)
)

// New decorates be. The optional interfaces of be (backend.Creator, backend.Sweeper, ...) are
// reached through backend.As; they are not retried. In particular a SaveNew repeated after a
// reply was lost would find its own object and report backend.ErrExist.
func New(be backend.Backend, opts Options) *Backend {
	if opts.Attempts <= 0 {
		opts.Attempts = DefaultAttempts
	}
	if opts.Initial <= 0 {
		opts.Initial = DefaultInitial
	}
	if opts.Max <= 0 {
		opts.Max = DefaultMax
	}
	if opts.MaxSmall <= 0 {
		opts.MaxSmall = DefaultMaxSmall
	}
	if opts.Sleep == nil {
		opts.Sleep = sleep
	}
	lg := opts.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	return &Backend{be: be, opts: opts, lg: lg}
}

// Unwrap returns the decorated backend.
func (b *Backend) Unwrap() backend.Backend { return b.be }

// Location returns the decorated backend's location.
func (b *Backend) Location() string { return b.be.Location() }

// Close closes the decorated backend.
func (b *Backend) Close() error { return b.be.Close() }

// Save stores rd under name. When rd is an io.Seeker holding at most MaxSmall bytes from its
// current offset (a bytes.Reader of a manifest or a lock), a failed Save is tried again from
// that offset; any other reader is a stream, saved once.
func (b *Backend) Save(ctx context.Context, name string, rd io.Reader) (int64, error) {
	rs, ok := rd.(io.ReadSeeker)
	if !ok {
		return b.be.Save(ctx, name, rd)
	}
	start, err := rs.Seek(0, io.SeekCurrent)
	if err != nil {
		return b.be.Save(ctx, name, rd)
	}
	end, err := rs.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, fmt.Errorf("save %s to %s: find the size of the data: %w", name, b.be.Location(), err)
	}
	if _, err := rs.Seek(start, io.SeekStart); err != nil {
		return 0, fmt.Errorf("save %s to %s: rewind the data: %w", name, b.be.Location(), err)
	}
	if end-start > b.opts.MaxSmall {
		return b.be.Save(ctx, name, rs)
	}
	var n int64
	err = b.do(ctx, "save", name, func(attempt int) error {
		if attempt > 0 {
			if _, err := rs.Seek(start, io.SeekStart); err != nil {
				return permanent{fmt.Errorf("save %s to %s: rewind the data: %w", name, b.be.Location(), err)}
			}
		}
		var err error
		n, err = b.be.Save(ctx, name, rs)
		return err
	})
	return n, err
}

// Open opens the object; opening is retried, reading from the reader returned is not (use
// Load for small objects).
func (b *Backend) Open(ctx context.Context, name string) (io.ReadCloser, error) {
	var rc io.ReadCloser
	err := b.do(ctx, "open", name, func(int) error {
		var err error
		rc, err = b.be.Open(ctx, name)
		return err
	})
	return rc, err
}

// Load reads at most limit bytes of the object, trying the whole read again when it fails.
func (b *Backend) Load(ctx context.Context, name string, limit int64) ([]byte, error) {
	var data []byte
	err := b.do(ctx, "load", name, func(int) error {
		var err error
		data, err = backend.Load(ctx, b.be, name, limit)
		return err
	})
	return data, err
}

// Stat describes the object.
func (b *Backend) Stat(ctx context.Context, name string) (backend.FileInfo, error) {
	var fi backend.FileInfo
	err := b.do(ctx, "stat", name, func(int) error {
		var err error
		fi, err = b.be.Stat(ctx, name)
		return err
	})
	return fi, err
}

// List lists the objects under prefix. When the listing fails midway it starts again, and fn
// is not called again for names it has already seen (List's order is lexical, so these are the
// names up to the last one seen). An error of fn ends the listing at once and is returned.
func (b *Backend) List(ctx context.Context, prefix string, fn func(backend.FileInfo) error) error {
	var last string
	seen := false
	return b.do(ctx, "list", prefix, func(int) error {
		return b.be.List(ctx, prefix, func(fi backend.FileInfo) error {
			if seen && fi.Name <= last {
				return nil
			}
			if err := fn(fi); err != nil {
				return permanent{err}
			}
			last, seen = fi.Name, true
			return nil
		})
	})
}

// Remove deletes the object; removing is idempotent, so a retry after a lost reply is harmless.
func (b *Backend) Remove(ctx context.Context, name string) error {
	return b.do(ctx, "remove", name, func(int) error { return b.be.Remove(ctx, name) })
}

// do runs op until it succeeds, fails in a way a retry cannot mend, or has been tried
// Attempts times; it returns op's last error.
func (b *Backend) do(ctx context.Context, what, name string, op func(attempt int) error) error {
	pause := b.opts.Initial
	for attempt := 0; ; attempt++ {
		err := op(attempt)
		var p permanent
		if errors.As(err, &p) {
			return p.err
		}
		if err == nil || attempt+1 >= b.opts.Attempts || !Transient(ctx, err) {
			return err
		}
		b.lg.Warn("storage operation failed; trying again", "op", what, "name", name, "location", b.be.Location(),
			"attempt", attempt+1, "attempts", b.opts.Attempts, "pause", pause, "error", err)
		if serr := b.opts.Sleep(ctx, pause); serr != nil {
			return err
		}
		pause = min(2*pause, b.opts.Max)
	}
}

// Transient reports whether an operation that failed with err may succeed if tried again:
// not when ctx is done or err is a cancellation, and not when err matches a backend sentinel
// that describes the object or the target (backend.ErrNotExist, ErrExist, ErrDenied,
// ErrNoSpace, or ErrUnavailable without ErrUnreachable: an absent medium or bucket). Any other
// error, backend.ErrUnreachable included, is transient: the backends mark what they know to be
// permanent, and a server's internal error or a dropped connection is worth another try.
func Transient(ctx context.Context, err error) bool {
	switch {
	case err == nil, ctx.Err() != nil, errors.Is(err, context.Canceled):
		return false
	case errors.Is(err, backend.ErrUnreachable):
		return true
	}
	for _, s := range []error{backend.ErrNotExist, backend.ErrExist, backend.ErrDenied, backend.ErrNoSpace, backend.ErrUnavailable} {
		if errors.Is(err, s) {
			return false
		}
	}
	return true
}

// permanent marks an error that ends do at once: one of List's callback, or a failed rewind.
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
