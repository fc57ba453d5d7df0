package snapshot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/etcdguard/etcdguard/internal/backend"
	"github.com/etcdguard/etcdguard/internal/repository"
)

// lockForRead takes a shared lock on a repository whose backup is about to be read (restore,
// get, verify, the source of a copy), so that a deletion, which needs the exclusive lock, waits
// until the read is over (docs/design.md, "Lock protocol"). A target that refuses the lock's
// write (a read-only medium or mount, credentials that may only read) is read without a lock,
// with a warning: the read still checks everything against the manifest's hashes, so a copy
// removed while it is read fails its checks and is never taken for a good one. Any other
// failure, a live exclusive holder included, is returned and the copy is not read.
func lockForRead(ctx context.Context, lg *slog.Logger, repo *repository.Repository, id string) (release func(), err error) {
	lk, err := repo.Lock(ctx, lg, repository.LockShared, "read backup "+id, time.Now())
	switch {
	case err == nil:
		return func() {
			if err := lk.Unlock(ctx); err != nil {
				lg.Warn("could not release the read lock", "target", repo.Target.Name, "error", err)
			}
		}, nil
	case errors.Is(err, backend.ErrDenied) && ctx.Err() == nil:
		lg.Warn("reading without a lock: the target refuses the lock file (read-only?); a deletion running meanwhile makes the read fail its checks, never pass", "target", repo.Target.Name, "error", err)
		return func() {}, nil
	}
	return nil, fmt.Errorf("take a read lock: %w", err)
}
