package restore

import (
	"context"
	"fmt"
	"path/filepath"

	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.etcd.io/etcd/server/v3/storage/schema"
)

// Bump raises the staged database's revision by amount and marks every revision up to the new
// one compacted, so that clients' watches end with "compacted" and they re-list; zero does
// nothing. A bump that would raise the staged database's latest revision past
// MaxBumpedRevision is refused (ErrBumpTooLarge) and nothing is written. It is what etcdutl's restore does with --bump-revision and --mark-compacted
// (RestoreConfig.RevisionBump and MarkCompacted, v3Manager.modifyLatestRevision), done here as
// a step of its own on the staged data dir so that events can be replayed into it first:
//
//   - the latest revision is the highest (main, sub) key of the key bucket;
//   - one entry is written there at (latest main + amount, sub 0) with an empty value (not an
//     mvccpb.KeyValue record: etcd keeps it, and etcdguard's status counts it as the bump's
//     empty key, status.bump_keys);
//   - the meta bucket's scheduled compaction revision is set to that revision, which etcd
//     finishes compacting when it starts.
//
// etcdutl does it between copying the database and writing the new cluster's WAL, snapshot
// and consistent index; those write other buckets (members, meta's consistent index and term),
// so doing it after them leaves the same keys, revision and compaction marks.
func (s *Staged) Bump(ctx context.Context, amount uint64) error {
	if s.replayErr != nil {
		return s.refused()
	}
	if amount == 0 {
		return nil
	}
	if amount > uint64(MaxBumpedRevision) {
		return bumpTooLarge(amount)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := bumpDB(ctx, filepath.Join(s.Dir, "member", "snap", "db"), int64(amount)); err != nil {
		return fmt.Errorf("bump the revisions of member %s's restore by %d: %w", s.opts.Name, amount, err)
	}
	s.bump = amount
	return nil
}

// bumpDB applies the bump to the database at path with etcd's own backend, as etcdutl does, and
// refuses one that would raise its latest revision past MaxBumpedRevision (CheckBump). It checks
// ctx while it looks for the latest revision (a walk of every key).
func bumpDB(ctx context.Context, path string, amount int64) (err error) {
	defer func() {
		// etcd's backend reports a database it cannot open, or a write it cannot make, through
		// its logger, which panics (etcdLogger).
		if r := recover(); r != nil {
			err = fmt.Errorf("etcd's backend failed: %v", r)
		}
	}()
	be := backend.NewDefaultBackend(etcdLogger(), path)
	defer func() {
		be.ForceCommit()
		be.Close()
	}()
	tx := be.BatchTx()
	tx.LockOutsideApply()
	defer tx.Unlock()

	var latest mvcc.Revision
	n := 0
	if err := tx.UnsafeForEach(schema.Key, func(k, _ []byte) error {
		if n++; n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if rev := mvcc.BytesToRev(k); rev.GreaterThan(latest) {
			latest = rev
		}
		return nil
	}); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// The caller checked the bump against the snapshot's revision as it knew it; this is the
	// revision it is added to.
	if err := CheckBump(latest.Main, uint64(amount)); err != nil {
		return err
	}
	latest.Main += amount
	latest.Sub = 0
	tx.UnsafePut(schema.Key, mvcc.RevToBytes(latest, mvcc.NewRevBytes()), []byte{})
	mvcc.UnsafeSetScheduledCompact(tx, latest.Main)
	return nil
}
