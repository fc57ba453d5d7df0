package restore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/pkg/v3/traceutil"
	"go.etcd.io/etcd/server/v3/lease"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.etcd.io/etcd/server/v3/storage/schema"
)

// ErrRevisionGap is returned (wrapped) by Replay when the source skips a revision: a cluster's
// revisions are contiguous, so a chain that skips one has lost events.
var ErrRevisionGap = errors.New("revisions missing from the replay")

// ErrReplayMismatch is returned (wrapped) by Replay when a revision's events do not give, applied
// by etcd's own store, what they record (create and mod revisions, version, lease), or when a
// revision already in the database differs from the source's: the chain is not the history of
// the snapshot's cluster.
var ErrReplayMismatch = errors.New("replayed revision differs from its record")

// ErrReplayShort is returned (wrapped) by Replay when the source ends before the revision asked
// for.
var ErrReplayShort = errors.New("replay ended before the target revision")

// Revision is one revision of a cluster's history: the events of one write (a put, a delete
// range, a whole txn) in the order etcd applied them, as a watch delivers them. A put's Kv is
// the key as it was after the put (create and mod revision, version, lease); a delete's Kv needs
// only the key.
type Revision struct {
	Rev    int64
	Events []*mvccpb.Event
}

// RevisionSource yields a chain's revisions in increasing order, one at a time, so that a replay
// holds one revision in memory, not the chain. Next returns io.EOF after the last one. It takes
// no context: a source decodes a stream opened with one (as a bufio.Scanner does), and Replay
// checks its context between revisions.
type RevisionSource interface {
	Next() (Revision, error)
}

// ReplayResult says what a replay did.
type ReplayResult struct {
	// From is the staged database's revision before the replay (the snapshot's, for the first).
	From int64 `json:"from"`
	// To is its revision after: the last revision applied, From if none was.
	To int64 `json:"to"`
	// Revisions and Events count what was applied.
	Revisions int64 `json:"revisions"`
	Events    int64 `json:"events"`
	// Skipped counts the revisions of the source at or below the database's revision, already
	// in it (overlapping segments of a writer handover), each checked against the database
	// where its history is still there (above the compaction revision).
	Skipped int64 `json:"skipped"`
	// LeasesNotRestored lists the leases that keys live at To are attached to and that the
	// database holds no grant of after the replay (no lease record of the source granted
	// them). The keys carry the lease id as they did in the cluster, but etcd cannot expire
	// them. LeaseKeys is how many keys that is.
	LeasesNotRestored []int64 `json:"leases_not_restored,omitempty"`
	// LeasesRestored and LeasesRemoved count the leases written into and removed from the
	// database's lease bucket from the source's lease records (a LeaseSource).
	LeasesRestored int `json:"leases_restored,omitempty"`
	LeasesRemoved  int `json:"leases_removed,omitempty"`
	LeaseKeys      int `json:"lease_keys,omitempty"`
}

// replayBatchLimit is how many writes the replay's backend buffers before it commits them:
// commits are where time goes (each writes the dirty pages), and the batch stays a few MiB.
const replayBatchLimit = 20000

// Replay applies the revisions of src, in order, to the staged database, up to and including
// revision upTo (upTo <= 0: to the end of src), between RestoreStaging and Bump. Each revision
// is one write transaction of etcd's own mvcc store, so that the sub revisions, create and mod
// revisions and versions are computed as the cluster computed them; each is checked against the
// events' own record and the store's revision against the revision's number. Revisions at or
// below the database's revision are skipped (ReplayResult.Skipped); a revision that skips one
// is ErrRevisionGap, naming both. Reaching the end of src before upTo is ErrReplayShort. ctx is
// checked between revisions.
//
// The consistent index and term that etcd's restore wrote into the meta bucket are left as
// they are (the store writes none without the server's hooks), so the member starts as
// restored. Give one Replay the whole chain: each call opens etcd's store, which reads every
// key of the database into its index, as a member does when it starts.
//
// After a failed Replay the staged data dir is at a revision of the cluster, but not the one
// asked for: Bump and Install refuse it, and the caller discards it.
func (s *Staged) Replay(ctx context.Context, src RevisionSource, upTo int64) (ReplayResult, error) {
	if s.replayErr != nil {
		return ReplayResult{}, s.refused()
	}
	if err := ctx.Err(); err != nil {
		return ReplayResult{}, err
	}
	res, err := replayDB(ctx, filepath.Join(s.Dir, "member", "snap", "db"), src, upTo)
	if err != nil {
		s.replayErr = err
		return res, fmt.Errorf("replay revisions into member %s's restore (at revision %d after %d revisions): %w", s.opts.Name, res.To, res.Revisions, err)
	}
	return res, nil
}

// refused is the error of a step on a Staged whose replay failed.
func (s *Staged) refused() error {
	return fmt.Errorf("member %s's restore is not at the revision asked for: its replay failed: %w", s.opts.Name, s.replayErr)
}

// replayDB is Replay on the database at path.
func replayDB(ctx context.Context, path string, src RevisionSource, upTo int64) (res ReplayResult, err error) {
	defer func() {
		// etcd's backend and store report what they cannot do (a failed write, a record they
		// cannot read) through the logger, which panics (etcdLogger).
		if r := recover(); r != nil {
			err = fmt.Errorf("etcd's store failed: %v", r)
		}
	}()
	cfg := backend.DefaultBackendConfig(etcdLogger())
	cfg.Path = path
	cfg.BatchLimit = replayBatchLimit
	// The staged data dir is scratch until Install; after a crash it is a leftover, never
	// used. So the commits skip fsync and the file is synced once at the end.
	cfg.UnsafeNoFsync = true
	be := backend.New(cfg)
	leases := newKeyLeases()
	st := mvcc.NewStore(etcdLogger(), be, leases, mvcc.StoreConfig{})
	closed := false
	closeAll := func() error {
		if closed {
			return nil
		}
		closed = true
		st.Close()
		be.ForceCommit()
		return be.Close()
	}
	defer func() { _ = closeAll() }()

	res.From = st.Rev()
	res.To = res.From
	if upTo > 0 && upTo < res.From {
		return res, fmt.Errorf("%w: replay to revision %d: the staged database is at revision %d already", ErrInput, upTo, res.From)
	}
	floor := historyFloor(be)
	for upTo <= 0 || res.To < upTo {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		r, err := src.Next()
		if errors.Is(err, io.EOF) {
			if upTo > 0 {
				return res, fmt.Errorf("%w: the source ends at revision %d, before %d", ErrReplayShort, res.To, upTo)
			}
			break
		}
		if err != nil {
			return res, fmt.Errorf("read the revision after %d: %w", res.To, err)
		}
		if err := checkEvents(r); err != nil {
			return res, err
		}
		switch {
		case r.Rev <= res.To:
			if r.Rev > floor {
				if err := checkStored(be, r); err != nil {
					return res, err
				}
			}
			res.Skipped++
			continue
		case r.Rev > res.To+1:
			return res, fmt.Errorf("%w: revision %d follows revision %d: revisions %d to %d are not in the source", ErrRevisionGap, r.Rev, res.To, res.To+1, r.Rev-1)
		}
		if err := applyRevision(st, r); err != nil {
			return res, err
		}
		res.To = r.Rev
		res.Revisions++
		res.Events += int64(len(r.Events))
	}
	if got := st.Rev(); got != res.To {
		return res, fmt.Errorf("%w: etcd's store is at revision %d after revision %d", ErrReplayMismatch, got, res.To)
	}
	res.LeasesRestored, res.LeasesRemoved = restoreLeases(be, src, res.To)
	res.LeasesNotRestored, res.LeaseKeys = leases.missing(be)
	if err := closeAll(); err != nil {
		return res, fmt.Errorf("close the staged database: %w", err)
	}
	return res, syncFile(path)
}

// historyFloor is the revision at and below which the database may have lost history to a
// compaction (finished or scheduled): above it, every revision's entries are all there.
func historyFloor(be backend.Backend) int64 {
	tx := be.ReadTx()
	tx.RLock()
	defer tx.RUnlock()
	finished, _ := mvcc.UnsafeReadFinishedCompact(tx)
	scheduled, _ := mvcc.UnsafeReadScheduledCompact(tx)
	return max(finished, scheduled)
}

// checkEvents refuses a revision that cannot be applied: no events, or an event without a key.
func checkEvents(r Revision) error {
	if len(r.Events) == 0 {
		return fmt.Errorf("%w: revision %d has no events", ErrReplayMismatch, r.Rev)
	}
	for i, ev := range r.Events {
		switch {
		case ev == nil || ev.Kv == nil || len(ev.Kv.Key) == 0:
			return fmt.Errorf("%w: revision %d, event %d has no key", ErrReplayMismatch, r.Rev, i)
		case ev.Type != mvccpb.PUT && ev.Type != mvccpb.DELETE:
			return fmt.Errorf("%w: revision %d, event %d is of unknown type %d", ErrReplayMismatch, r.Rev, i, ev.Type)
		}
	}
	return nil
}

// applyRevision applies r's events as one write transaction of st and checks the result: the
// store's revision before it against r.Rev-1 (each txn of changes raises it by one, so this
// also checks the previous revision's txn), and each change the store made against its event.
func applyRevision(st mvcc.KV, r Revision) error {
	changes, err := writeRevision(st, r)
	if err != nil {
		return err
	}
	for i, ev := range r.Events {
		if err := sameChange(r.Rev, i, ev, &changes[i]); err != nil {
			return err
		}
	}
	return nil
}

// writeRevision applies r's events in one write transaction of st and returns the changes it
// made. The transaction ends however it ends (a panic of etcd's included), so that the store's
// locks are free for closing it.
func writeRevision(st mvcc.KV, r Revision) ([]mvccpb.KeyValue, error) {
	tw := st.Write(traceutil.TODO())
	defer tw.End()
	// The revision the store starts the txn at; it writes the next one. (st.Rev() would say
	// the same, but copies the backend's read buffer each time: half the replay's time.)
	if got := tw.Rev(); got != r.Rev-1 {
		return nil, fmt.Errorf("%w: revision %d: etcd's store is at revision %d before it", ErrReplayMismatch, r.Rev, got)
	}
	for i, ev := range r.Events {
		if ev.Type == mvccpb.PUT {
			tw.Put(ev.Kv.Key, ev.Kv.Value, lease.LeaseID(ev.Kv.Lease))
			continue
		}
		if n, _ := tw.DeleteRange(ev.Kv.Key, nil); n != 1 {
			return nil, fmt.Errorf("%w: revision %d, event %d deletes a key the database does not hold at revision %d", ErrReplayMismatch, r.Rev, i, r.Rev-1)
		}
	}
	return tw.Changes(), nil
}

// checkStored checks that revision r, already in the database, is what r records: the same
// number of entries, a put or a tombstone each as the events say, with the same records.
func checkStored(be backend.Backend, r Revision) error {
	tx := be.BatchTx()
	tx.LockOutsideApply()
	defer tx.Unlock()
	from := mvcc.RevToBytes(mvcc.Revision{Main: r.Rev}, mvcc.NewRevBytes())
	to := mvcc.RevToBytes(mvcc.Revision{Main: r.Rev + 1}, mvcc.NewRevBytes())
	keys, vals := tx.UnsafeRange(schema.Key, from, to, 0)
	if len(keys) != len(r.Events) {
		return fmt.Errorf("%w: revision %d, already in the database with %d events, has %d in the source", ErrReplayMismatch, r.Rev, len(keys), len(r.Events))
	}
	for i, ev := range r.Events {
		bk := mvcc.BytesToBucketKey(keys[i])
		var kv mvccpb.KeyValue
		if err := kv.Unmarshal(vals[i]); err != nil {
			return fmt.Errorf("revision %d, event %d in the database: %w", r.Rev, i, err)
		}
		if bk.Sub != int64(i) || mvcc.IsTombstone(keys[i]) != (ev.Type == mvccpb.DELETE) {
			return fmt.Errorf("%w: revision %d, event %d: the database holds another kind of event there", ErrReplayMismatch, r.Rev, i)
		}
		if err := sameChange(r.Rev, i, ev, &kv); err != nil {
			return err
		}
	}
	return nil
}

// sameChange compares what the database holds for event i of revision rev with the event. Key
// and value bytes are compared, never quoted: they are the cluster's data.
func sameChange(rev int64, i int, ev *mvccpb.Event, got *mvccpb.KeyValue) error {
	want := ev.Kv
	if !bytes.Equal(got.Key, want.Key) {
		return fmt.Errorf("%w: revision %d, event %d: another key", ErrReplayMismatch, rev, i)
	}
	if ev.Type == mvccpb.DELETE {
		return nil
	}
	if !bytes.Equal(got.Value, want.Value) {
		return fmt.Errorf("%w: revision %d, event %d: another value", ErrReplayMismatch, rev, i)
	}
	for _, f := range []struct {
		name      string
		got, want int64
	}{
		{"create_revision", got.CreateRevision, want.CreateRevision},
		{"mod_revision", got.ModRevision, want.ModRevision},
		{"version", got.Version, want.Version},
		{"lease", got.Lease, want.Lease},
	} {
		if f.got != f.want {
			return fmt.Errorf("%w: revision %d, event %d: the event records %s %d, etcd's store gives %d", ErrReplayMismatch, rev, i, f.name, f.want, f.got)
		}
	}
	return nil
}

// syncFile fsyncs the file at path.
func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return f.Close()
}
