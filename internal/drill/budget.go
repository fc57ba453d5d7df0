package drill

import (
	"context"
	"io"

	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"

	"github.com/etcdguard/etcdguard/internal/backend"
	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/restore"
	"github.com/etcdguard/etcdguard/internal/snapshot"
)

// Budget bounds what a drill takes from the host it shares with the cluster it protects.
type Budget struct {
	// GOMAXPROCS is the scratch member's GOMAXPROCS (0: 1): etcd then runs Go code on one core.
	GOMAXPROCS int
	// Nice is the scratch member's CPU niceness, 1 to 19 (0: 19, the lowest priority).
	Nice int
	// NoIdleIO leaves the scratch member's disk I/O in the default class; by default it is in
	// the idle class, served only when no one else uses the disk.
	NoIdleIO bool
	// Margin is added to the free space the drill needs (0: DefaultMargin).
	Margin int64
	// FetchRate bounds how fast the backup and its delta log are read from the target, in bytes
	// a second (0: no bound).
	FetchRate int64
	// Free, when set, replaces the measure of the work dir's free space (tests).
	Free func(dir string) (int64, error)
}

// DefaultMargin is what a drill needs beyond the data it restores: etcd's WAL files (64 MiB each,
// preallocated: the restore's and the one etcd makes when it starts) and some slack.
const DefaultMargin = 192 << 20

func (b Budget) withDefaults() Budget {
	if b.GOMAXPROCS <= 0 {
		b.GOMAXPROCS = 1
	}
	if b.Nice <= 0 || b.Nice > 19 {
		b.Nice = 19
	}
	if b.Margin <= 0 {
		b.Margin = DefaultMargin
	}
	if b.Free == nil {
		b.Free = freeSpace
	}
	return b
}

// Need is the free space a drill of the backup m with the delta log plan needs in its work dir:
// the fetched snapshot and the restored database, each the backup's raw size (both exist while
// the restore runs), the sealed segments replayed (what they add to the database is at most
// their plain size), and the margin.
func (b Budget) Need(m repository.Manifest, plan *restore.ChainPlan) int64 {
	need := 2*m.RawSize + b.Margin
	if plan != nil {
		for _, s := range plan.Chain.Segments {
			need += s.RawSize
		}
	}
	return need
}

// check refuses the drill when the work dir has less free space than it needs.
func (b Budget) check(dir string, m repository.Manifest, plan *restore.ChainPlan) error {
	free, err := b.Free(dir)
	if err != nil {
		return failf(ReasonBudget, "measure the free space of the work dir %s: %w", dir, err)
	}
	if need := b.Need(m, plan); free < need {
		return failf(ReasonBudget, "the work dir %s has %d MiB free; a drill of backup %s needs %d MiB (twice its %d MiB, its delta log and %d MiB for etcd's WAL): give a --work-dir with more room",
			dir, free>>20, m.ID, need>>20, m.RawSize>>20, b.Margin>>20)
	}
	return nil
}

// freeSpace is the space an unprivileged process may still write in dir's file system.
func freeSpace(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * st.Bsize, nil
}

// throttled returns cp read at most bytesPerSec (0: as it is).
func throttled(cp snapshot.Copy, bytesPerSec int64) snapshot.Copy {
	cp.Repo = throttledRepo(cp.Repo, bytesPerSec)
	return cp
}

// throttledRepo returns repo with its objects read at most bytesPerSec (0: repo itself). The
// repository returned shares repo's backend and takes its own locks.
func throttledRepo(repo *repository.Repository, bytesPerSec int64) *repository.Repository {
	if bytesPerSec <= 0 {
		return repo
	}
	burst := int(min(bytesPerSec, 1<<20))
	return repository.New(repo.Target, &slowBackend{Backend: repo.Backend(), lim: rate.NewLimiter(rate.Limit(bytesPerSec), burst)})
}

// slowBackend reads objects no faster than its limiter allows; everything else is its backend's.
type slowBackend struct {
	backend.Backend
	lim *rate.Limiter
}

var _ backend.Wrapper = (*slowBackend)(nil)

// Unwrap returns the backend read through, for backend.As.
func (s *slowBackend) Unwrap() backend.Backend { return s.Backend }

// Close does nothing: the backend is its repository's, closed with it.
func (s *slowBackend) Close() error { return nil }

// Open returns a reader of the object that waits for the limiter before each read.
func (s *slowBackend) Open(ctx context.Context, name string) (io.ReadCloser, error) {
	rc, err := s.Backend.Open(ctx, name)
	if err != nil {
		return nil, err
	}
	return &slowReader{ctx: ctx, rc: rc, lim: s.lim}, nil
}

type slowReader struct {
	ctx context.Context
	rc  io.ReadCloser
	lim *rate.Limiter
}

func (r *slowReader) Read(p []byte) (int, error) {
	if len(p) > r.lim.Burst() {
		p = p[:r.lim.Burst()]
	}
	n, err := r.rc.Read(p)
	if n > 0 {
		if werr := r.lim.WaitN(r.ctx, n); werr != nil {
			return n, werr
		}
	}
	return n, err
}

func (r *slowReader) Close() error { return r.rc.Close() }
