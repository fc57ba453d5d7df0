package snapshot

import (
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/etcdguard/etcdguard/internal/failpoint"
)

// trailerSize is the length of the SHA-256 digest etcd appends to a snapshot stream.
const trailerSize = sha256.Size

// HasTrailer reports whether a snapshot of n bytes carries etcd's SHA-256 trailer: the database is
// a whole number of 512-byte sectors, so n mod 512 is the trailer's length.
func HasTrailer(n int64) bool { return n%512 == trailerSize }

// trailerCheck hashes everything written to it except the last 32 bytes, which it keeps, so that
// once the stream ends the database's digest can be compared with etcd's trailer. It holds 32
// bytes whatever the stream's size.
type trailerCheck struct {
	h    hash.Hash
	tail []byte
	n    int64
}

func newTrailerCheck() *trailerCheck {
	return &trailerCheck{h: sha256.New(), tail: make([]byte, 0, 2*trailerSize)}
}

func (t *trailerCheck) Write(p []byte) (int, error) {
	t.n += int64(len(p))
	if len(p) >= trailerSize {
		t.h.Write(t.tail)
		t.h.Write(p[:len(p)-trailerSize])
		t.tail = append(t.tail[:0], p[len(p)-trailerSize:]...)
		return len(p), nil
	}
	t.tail = append(t.tail, p...)
	if over := len(t.tail) - trailerSize; over > 0 {
		t.h.Write(t.tail[:over])
		t.tail = append(t.tail[:0], t.tail[over:]...)
	}
	return len(p), nil
}

// Sum returns the SHA-256 of everything written, trailer included, without hashing the data a
// second time: the state of the database's digest is cloned and the held-back bytes added.
func (t *trailerCheck) Sum() []byte {
	state, err := t.h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		panic(err) // crypto/sha256 always marshals
	}
	all := sha256.New()
	if err := all.(encoding.BinaryUnmarshaler).UnmarshalBinary(state); err != nil {
		panic(err)
	}
	all.Write(t.tail)
	return all.Sum(nil)
}

// Size returns the number of bytes written.
func (t *trailerCheck) Size() int64 { return t.n }

// Check compares the digest of the database with the trailer.
func (t *trailerCheck) Check() error {
	if !HasTrailer(t.n) {
		return fmt.Errorf("%w: the snapshot stream of %d bytes has no SHA-256 trailer (etcd always sends one): the stream was cut short", ErrCorrupt, t.n)
	}
	got := t.h.Sum(nil)
	if hex.EncodeToString(got) != hex.EncodeToString(t.tail) {
		return fmt.Errorf("%w: the SHA-256 of the database (%x) differs from etcd's trailer (%x)", ErrCorrupt, got, t.tail)
	}
	return nil
}

// ErrNotFile is returned (wrapped) for a snapshot path that is not a regular file: a device such
// as /dev/zero, a FIFO or a socket would be read without end.
var ErrNotFile = errors.New("not a regular file")

// OpenFile opens a plain snapshot file, refusing what is not a regular file.
func OpenFile(path string) (*os.File, error) {
	// Looked at before it is opened: opening a FIFO waits for a writer.
	if st, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("read snapshot file: %w", err)
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is %w (%s): give a snapshot file", path, ErrNotFile, st.Mode().Type())
	}
	// O_NONBLOCK: should it have been swapped for a FIFO meanwhile, the open does not hang.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("read snapshot file: %w", err)
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is %w: give a snapshot file", path, ErrNotFile)
	}
	return f, nil
}

// CheckTrailer reads a whole plain snapshot and checks etcd's trailer, returning the snapshot's
// SHA-256 (of every byte, trailer included) and size. A snapshot without a trailer (copied from a
// data dir rather than saved) is reported with ErrNoTrailer.
func CheckTrailer(ctx context.Context, r io.Reader) (sum string, n int64, err error) {
	tc := newTrailerCheck()
	n, err = io.CopyBuffer(tc, ctxReader{ctx: ctx, r: r}, make([]byte, 1<<20))
	if err != nil {
		return "", n, err
	}
	sum = hex.EncodeToString(tc.Sum())
	if !HasTrailer(n) {
		return sum, n, ErrNoTrailer
	}
	return sum, n, tc.Check()
}

// ErrNoTrailer is returned when a snapshot file has no etcd SHA-256 trailer, as with a db file
// copied out of a data directory.
var ErrNoTrailer = errors.New("snapshot has no SHA-256 trailer")

// sourceError marks a failure reading from etcd, as opposed to writing to a target, so that the
// save can be retried on another member.
type sourceError struct{ err error }

func (e *sourceError) Error() string { return e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

type sourceReader struct {
	r       io.Reader
	n       int64
	onBytes func(int64)
	// readingSince is the time (UnixNano) the pending Read started, 0 when none is pending.
	readingSince atomic.Int64
	stalled      atomic.Bool
}

// midStream is how far into the snapshot stream the "save/mid-stream" failpoint is.
const midStream = 1 << 20

// sourceIdleTimeout is how long a read of the snapshot stream may wait for data before the
// member is given up on. Keepalives usually notice a dead member sooner.
const sourceIdleTimeout = 30 * time.Second

// watch cancels the stream when a single read has waited longer than idle; time spent writing to
// slow targets does not count. The returned function stops the watch.
func (s *sourceReader) watch(ctx context.Context, cancel context.CancelFunc, idle time.Duration) func() {
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(idle / 10)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
				if since := s.readingSince.Load(); since != 0 && time.Since(time.Unix(0, since)) > idle {
					s.stalled.Store(true)
					cancel()
					return
				}
			}
		}
	}()
	return func() { close(done) }
}

func (s *sourceReader) Read(p []byte) (int, error) {
	s.readingSince.Store(time.Now().UnixNano())
	n, err := s.r.Read(p)
	s.readingSince.Store(0)
	if s.n < midStream && s.n+int64(n) >= midStream {
		failpoint.Here("save/mid-stream")
	}
	s.n += int64(n)
	if n > 0 && s.onBytes != nil {
		s.onBytes(s.n)
	}
	if err != nil && err != io.EOF {
		return n, &sourceError{err}
	}
	return n, err
}

// fanout writes each block to every target still alive; a target that fails is dropped and the
// others go on. It fails only when no target is left.
type fanout struct {
	sinks []*sink
	// idle is how long one target may take to accept a block before it is given up on as
	// stalled; zero means no limit.
	idle time.Duration
}

type sink struct {
	w   *io.PipeWriter
	err error
	// cancel stops the target's upload; stalled says the watchdog gave up on it.
	cancel  context.CancelFunc
	stalled atomic.Bool
	// done is closed when the target's upload has returned.
	done chan struct{}
}

// errTargetStalled marks a target that stopped accepting data: it is dropped so that it does not
// hold back the others.
var errTargetStalled = errors.New("the target stopped accepting data")

var errNoTargetLeft = errors.New("every target failed")

func (f *fanout) Write(p []byte) (int, error) {
	alive := 0
	for _, s := range f.sinks {
		if s.err != nil {
			continue
		}
		if _, err := f.write(s, p); err != nil {
			s.err = err
			continue
		}
		alive++
	}
	if alive == 0 {
		return 0, errNoTargetLeft
	}
	return len(p), nil
}

// write gives one block to a target. A target that does not take it within the idle limit is
// stalled (a server that stopped reading, a network that blackholes): its upload is cancelled and
// its pipe closed, which also frees this write, and the other targets go on.
func (f *fanout) write(s *sink, p []byte) (int, error) {
	if f.idle <= 0 {
		return s.w.Write(p)
	}
	timer := time.AfterFunc(f.idle, func() {
		s.stalled.Store(true)
		if s.cancel != nil {
			s.cancel()
		}
		s.w.CloseWithError(fmt.Errorf("%w for %s", errTargetStalled, f.idle))
	})
	defer timer.Stop()
	return s.w.Write(p)
}

// awaitTargets waits, once the stream has ended, for every target to finish storing what it was
// given, each at most the idle limit; a target still busy then is stalled and cancelled.
func (f *fanout) awaitTargets() {
	if f.idle <= 0 {
		return
	}
	deadline := time.NewTimer(f.idle)
	defer deadline.Stop()
	for _, s := range f.sinks {
		if s.done == nil {
			continue
		}
		select {
		case <-s.done:
		case <-deadline.C:
			// Expired: every target not done by now is stalled.
			for _, late := range f.sinks {
				select {
				case <-late.done:
				default:
					late.stalled.Store(true)
					if late.cancel != nil {
						late.cancel()
					}
				}
			}
			return
		}
	}
}

// ScratchDir returns the folder for scratch copies of snapshots: dir if given, else /var/tmp
// (on disk on most systems, where /tmp may be a tmpfs in memory), else the system's temporary
// folder.
func ScratchDir(dir string) string {
	if dir != "" {
		return dir
	}
	if st, err := os.Stat("/var/tmp"); err == nil && st.IsDir() {
		return "/var/tmp"
	}
	return os.TempDir()
}
