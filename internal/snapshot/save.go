package snapshot

import (
	"cmp"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/etcdguard/etcdguard/internal/backend"
	"github.com/etcdguard/etcdguard/internal/etcdx"
	"github.com/etcdguard/etcdguard/internal/failpoint"
	"github.com/etcdguard/etcdguard/internal/repository"
)

// ErrPartial is returned (wrapped) when a backup was stored and verified in some targets but
// failed in others. The backup counts; the failed targets are named in the error.
var ErrPartial = errors.New("backup stored in some targets only")

// ErrNoTarget is returned (wrapped) when the backup could be stored in no target at all.
var ErrNoTarget = errors.New("backup stored in no target")

// SaveOptions configures a backup run.
type SaveOptions struct {
	// Etcd is how to reach the members.
	Etcd etcdx.Config
	// Discover adds the client URLs of every cluster member to the endpoints given.
	Discover bool
	// Targets are where the backup is stored.
	Targets []repository.Target
	// Codec is how the snapshot is compressed and encrypted.
	Codec repository.Codec
	// WorkDir holds the plain copy of the snapshot that is verified before the backup counts;
	// it is removed at the end. Empty means ScratchDir's default.
	WorkDir string
	Logger  *slog.Logger
	// Progress, when set, is called as snapshot bytes arrive, with the expected total (0 when
	// unknown).
	Progress func(done, total int64)
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// TargetIdleTimeout is how long one target may take to accept a block of the stream before
	// it is dropped as stalled, so that the others finish (zero: DefaultTargetIdleTimeout).
	TargetIdleTimeout time.Duration
	// Command names the run in the locks it takes (who holds a target); empty means
	// "snapshot save".
	Command string
}

// DefaultTargetIdleTimeout is how long a target may stop accepting the stream before it is given
// up on. It is generous: an S3 target accepts nothing while it uploads a part.
const DefaultTargetIdleTimeout = 2 * time.Minute

// SaveResult is what a backup run did.
type SaveResult struct {
	Manifest repository.Manifest
	// Attempts lists the members tried, in order, with the error of each failed attempt.
	Attempts []Attempt
	// Cleaned lists incomplete objects removed from the targets before the run.
	Cleaned []string
	Elapsed time.Duration
}

// Attempt is one try at streaming a snapshot from one member.
type Attempt struct {
	Endpoint string `json:"endpoint"`
	Error    string `json:"error,omitempty"`
}

type openTarget struct {
	repo   *repository.Repository
	lock   *repository.Lock
	result repository.TargetResult
	err    error // the error of a failed or absent target, as result.Error says it
}

// fail records that the target failed (or, offline, is absent) with err.
func (t *openTarget) fail(state string, err error) {
	t.err = err
	t.result.State, t.result.Error, t.result.ErrorKind = state, err.Error(), backend.Kind(err)
}

// Save takes a snapshot from the best member, streams it once through the etcd trailer check,
// hashing, compression and encryption into every target at the same time, verifies it, and only
// then writes the manifests that make it count. See docs/design.md, "Taking a backup".
func Save(ctx context.Context, opts SaveOptions) (SaveResult, error) {
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	lg := opts.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	start := now()
	var res SaveResult

	// Plain snapshots left by runs that were killed: every Secret in clear, one per crash.
	SweepScratch(opts.WorkDir, lg)

	statuses := opts.Etcd.Status(ctx, opts.Discover)
	ranked, why, err := etcdx.ChooseSource(statuses)
	if err != nil {
		return res, err
	}

	targets, err := openTargets(ctx, lg, opts.Targets, cmp.Or(opts.Command, "snapshot save"), now())
	defer func() {
		for _, t := range targets {
			if t.lock != nil {
				if err := t.lock.Unlock(ctx); err != nil {
					lg.Warn("could not release the repository lock", "target", t.result.Name, "error", err)
				}
			}
			if t.repo != nil {
				t.repo.Close()
			}
		}
	}()
	if err != nil {
		return res, err
	}
	failpoint.Here("save/targets-locked")
	var usable []*openTarget
	for _, t := range targets {
		if t.repo != nil && t.result.State == "" {
			usable = append(usable, t)
			removed, odd, err := t.repo.CleanupIncomplete(ctx)
			if err != nil {
				lg.Warn("could not clean up incomplete backups", "target", t.result.Name, "error", err)
			}
			for _, o := range odd {
				lg.Warn("odd backup folder left as it is", "target", t.result.Name, "folder", o)
			}
			if len(removed) > 0 {
				lg.Info("removed objects of incomplete backups", "target", t.result.Name, "count", len(removed))
			}
			for _, r := range removed {
				res.Cleaned = append(res.Cleaned, t.result.Name+":"+r)
			}
		}
	}
	if len(usable) == 0 {
		return res, withCauses(fmt.Errorf("%w: %s", ErrNoTarget, describeFailures(targets)), targetCauses(targets))
	}
	failpoint.Here("save/cleaned-up")

	id := repository.NewID(start)
	var m *repository.Manifest
	for i, src := range ranked {
		if i >= 2 {
			break
		}
		reason := why
		if i > 0 {
			reason = fmt.Sprintf("retry after %s failed mid-stream: %s", ranked[0].Endpoint, res.Attempts[0].Error)
		}
		lg.Info("taking snapshot", "endpoint", src.Endpoint, "member", src.Name, "reason", reason)
		m, err = attempt(ctx, lg, opts, id, src, reason, usable, targets, now)
		a := Attempt{Endpoint: src.Endpoint}
		if err != nil {
			a.Error = err.Error()
		}
		res.Attempts = append(res.Attempts, a)
		var se *sourceError
		if err == nil || !errors.As(err, &se) || ctx.Err() != nil {
			break
		}
		lg.Warn("the source member failed mid-stream", "endpoint", src.Endpoint, "error", err)
		for _, t := range usable {
			t.result.State, t.result.Error, t.result.ErrorKind, t.err = "", "", "", nil
		}
	}
	res.Elapsed = now().Sub(start)
	if err != nil {
		var se *sourceError
		if errors.As(err, &se) {
			return res, fmt.Errorf("%w: the snapshot stream failed on every member tried: %w", etcdx.ErrUnavailable, err)
		}
		return res, err
	}
	res.Manifest = *m
	var failed []string
	for _, t := range m.Targets {
		if t.State == repository.StateFailed {
			failed = append(failed, fmt.Sprintf("%s (%s)", t.Name, t.Error))
		}
	}
	if len(failed) > 0 {
		return res, withCauses(fmt.Errorf("%w: backup %s is stored and verified, but these targets failed: %s", ErrPartial, m.ID, strings.Join(failed, "; ")), targetCauses(targets))
	}
	return res, nil
}

func openTargets(ctx context.Context, lg *slog.Logger, ts []repository.Target, command string, now time.Time) ([]*openTarget, error) {
	out := make([]*openTarget, len(ts))
	var wg sync.WaitGroup
	for i, t := range ts {
		ot := &openTarget{result: repository.TargetResult{Name: t.Name, URL: t.Redacted(), Media: t.Media, Offline: t.Offline}}
		out[i] = ot
		wg.Go(func() {
			repo, err := repository.Open(ctx, t)
			switch {
			case err != nil && t.Offline && errors.Is(err, backend.ErrUnavailable):
				ot.fail(repository.StateAbsent, err)
				lg.Warn("offline target is absent; copy to it later with etcdguard snapshot copy", "target", t.Name, "command", "etcdguard snapshot copy --to "+t.Name, "error", err)
				return
			case err != nil:
				ot.fail(repository.StateFailed, err)
				lg.Error("target unavailable", "target", t.Name, "error", err)
				return
			}
			ot.repo = repo
		})
	}
	wg.Wait()
	for _, ot := range out {
		if ot.repo == nil {
			continue
		}
		lock, err := ot.repo.Lock(ctx, lg, repository.LockShared, command, now)
		if errors.Is(err, repository.ErrLocked) {
			return out, err
		}
		if err != nil {
			ot.fail(repository.StateFailed, err)
			lg.Error("target unavailable", "target", ot.result.Name, "error", err)
			continue
		}
		ot.lock = lock
	}
	return out, nil
}

func describeFailures(ts []*openTarget) string {
	var parts []string
	for _, t := range ts {
		parts = append(parts, fmt.Sprintf("%s: %s", t.result.Name, t.result.Error))
	}
	return strings.Join(parts, "; ")
}

// attempt streams one snapshot from src into every usable target and, if it verifies, writes
// the manifests.
func attempt(ctx context.Context, lg *slog.Logger, opts SaveOptions, id string, src etcdx.MemberStatus, reason string, targets, all []*openTarget, now func() time.Time) (*repository.Manifest, error) {
	started := now()
	cli, err := opts.Etcd.Client(ctx, src.Endpoint)
	if err != nil {
		return nil, &sourceError{err}
	}
	defer cli.Close()

	workDir, removeWorkDir, err := MakeScratch(opts.WorkDir, "save")
	if err != nil {
		return nil, fmt.Errorf("create work directory in %q (set --work-dir): %w", opts.WorkDir, err)
	}
	defer removeWorkDir()
	rawPath := filepath.Join(workDir, "snapshot.db")
	raw, err := os.OpenFile(rawPath, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", rawPath, err)
	}
	defer raw.Close()

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	resp, err := cli.SnapshotWithVersion(sctx)
	if err != nil {
		return nil, &sourceError{fmt.Errorf("%s: start snapshot stream: %w", src.Endpoint, err)}
	}
	defer resp.Snapshot.Close()

	dataName := repository.DataName(id, opts.Codec)
	results := make([]stored, len(targets))
	fan := &fanout{idle: cmp.Or(opts.TargetIdleTimeout, DefaultTargetIdleTimeout)}
	var wg sync.WaitGroup
	for i, t := range targets {
		pr, pw := io.Pipe()
		// Each target has its own context: a stalled one is cancelled alone.
		tctx, tcancel := context.WithCancel(sctx)
		defer tcancel()
		s := &sink{w: pw, cancel: tcancel, done: make(chan struct{})}
		fan.sinks = append(fan.sinks, s)
		wg.Go(func() {
			defer close(s.done)
			n, err := t.repo.Save(tctx, dataName, pr)
			if s.stalled.Load() {
				err = fmt.Errorf("target %s: %w for %s: dropped so that the other targets finish; check the target (is the server or the medium responding?)", t.result.Name, errTargetStalled, fan.idle)
			}
			results[i] = stored{n, err}
			// Unblock the writer: a failed target stops receiving, the others go on.
			pr.CloseWithError(fmt.Errorf("target %s stopped: %w", t.result.Name, errOr(err, io.ErrClosedPipe)))
		})
	}
	closeSinks := func(err error) {
		for _, s := range fan.sinks {
			s.w.CloseWithError(err)
		}
	}

	storedSum := repository.NewDigest()
	enc, err := opts.Codec.NewEncoder(io.MultiWriter(storedSum, fan))
	if err != nil {
		closeSinks(err)
		cancel()
		wg.Wait()
		return nil, err
	}
	trailer := newTrailerCheck() // also gives the snapshot's SHA-256, in the same pass
	in := &sourceReader{r: resp.Snapshot}
	stopWatchdog := in.watch(sctx, cancel, sourceIdleTimeout)
	defer stopWatchdog()
	if opts.Progress != nil {
		in.onBytes = func(n int64) { opts.Progress(n, src.DBSize+trailerSize) }
	}
	buf := make([]byte, 1<<20)
	_, copyErr := io.CopyBuffer(io.MultiWriter(raw, trailer, enc), in, buf)
	if copyErr == nil {
		copyErr = enc.Close()
	}
	if copyErr != nil {
		// Cancel first, so that every target discards what it received.
		cancel()
		closeSinks(copyErr)
		wg.Wait()
		if errors.Is(copyErr, errNoTargetLeft) {
			return nil, withCauses(fmt.Errorf("%w: %s", ErrNoTarget, targetErrors(results)), storedCauses(results))
		}
		var se *sourceError
		if errors.As(copyErr, &se) {
			if in.stalled.Load() {
				return nil, &sourceError{fmt.Errorf("%s: the snapshot stream sent nothing for %s after %d bytes (member down or network lost)", src.Endpoint, sourceIdleTimeout, in.n)}
			}
			return nil, &sourceError{fmt.Errorf("%s: snapshot stream broke after %d bytes: %w", src.Endpoint, in.n, se.err)}
		}
		return nil, fmt.Errorf("write snapshot: %w", copyErr)
	}
	closeSinks(nil)
	// A target may still be uploading what it buffered (S3 parts); one that has not finished
	// within the idle limit is stalled, and cancelled alone.
	fan.awaitTargets()
	wg.Wait()
	failpoint.Here("save/streamed")
	lg.Info("snapshot streamed", "endpoint", src.Endpoint, "bytes", in.n, "seconds", now().Sub(started).Seconds())
	if err := raw.Close(); err != nil {
		cancel()
		return nil, fmt.Errorf("write %s: %w", rawPath, err)
	}

	// Verify before anything counts: etcd's trailer, then bbolt's check and the status.
	// A snapshot that fails here is the source's fault (a short stream, a damaged db): another
	// member may give a good one, so these are source errors too.
	if err := trailer.Check(); err != nil {
		removeData(ctx, lg, targets, dataName)
		return nil, &sourceError{fmt.Errorf("snapshot from %s: %w", src.Endpoint, err)}
	}
	verifyStart := now()
	st, err := ReadStatus(ctx, rawPath)
	if err != nil {
		removeData(ctx, lg, targets, dataName)
		if ctx.Err() != nil {
			return nil, err
		}
		return nil, &sourceError{fmt.Errorf("snapshot from %s failed verification: %w", src.Endpoint, err)}
	}
	failpoint.Here("save/verified")
	lg.Info("snapshot verified", "revision", st.Revision, "total_key", st.TotalKey, "seconds", now().Sub(verifyStart).Seconds())

	m := repository.Manifest{
		Format:    repository.FormatVersion,
		ID:        id,
		Kind:      repository.KindFull,
		ClusterID: fmt.Sprintf("%016x", src.ClusterID),
		// The member's server version. resp.Version, sent with a 3.6 snapshot stream, is the
		// snapshot's storage version ("3.6.0"), not the server's: it was once recorded here.
		EtcdVersion:    src.Version,
		StorageVersion: firstNonEmpty(st.Version, resp.Version),
		Source: repository.Source{
			Endpoint: src.Endpoint, MemberID: fmt.Sprintf("%016x", src.ID), Name: src.Name,
			IsLeader: src.IsLeader(), Reason: reason,
		},
		Revision:  st.Revision,
		RaftIndex: st.ConsistentIndex,
		RaftTerm:  st.Term,
		Started:   started.UTC(),
		DataObject: repository.DataObject{
			RawSize:      trailer.Size(),
			SHA256:       hex.EncodeToString(trailer.Sum()),
			StoredSize:   storedSum.Size(),
			StoredSHA256: storedSum.Sum(),
			Data:         dataName,
			Compression:  opts.Codec.Compression,
			Encryption:   opts.Codec.Encryption(),
		},
		Status: repository.SnapshotStatus{
			Hash: st.Hash, Revision: st.Revision, TotalKey: st.TotalKey, BumpKeys: st.BumpKeys, TotalSize: st.TotalSize, Version: st.Version,
		},
		Verification: repository.Verification{At: now().UTC(), Checks: []string{"etcd-sha256-trailer", "bbolt-check", "status"}},
	}

	// Each stored copy must be whole.
	for i, t := range targets {
		if results[i].err == nil {
			results[i].err = checkStored(ctx, t.repo, dataName, m.StoredSize)
		}
		if results[i].err != nil {
			t.fail(repository.StateFailed, results[i].err)
			lg.Error("target failed", "target", t.result.Name, "error", results[i].err)
		} else {
			t.result.State = repository.StateStored
		}
	}
	m.Created = now().UTC()
	m.Targets = allResults(opts.Targets, all)
	// The manifest of a run that has a failed target is still written to the others: the
	// failed target keeps no manifest and its leftovers are removed by the next run.
	wrote := 0
	for _, t := range targets {
		if t.result.State != repository.StateStored {
			continue
		}
		if err := t.repo.SaveManifest(ctx, m); err != nil {
			t.fail(repository.StateFailed, err)
			lg.Error("target failed", "target", t.result.Name, "error", err)
			continue
		}
		wrote++
		failpoint.Here("save/manifest-written")
	}
	m.Targets = allResults(opts.Targets, all)
	failpoint.Here("save/manifests-written")
	if wrote == 0 {
		return nil, withCauses(fmt.Errorf("%w: %s", ErrNoTarget, targetErrors(results)), targetCauses(targets))
	}
	return &m, nil
}

// allResults lists every configured target's result, including absent and failed ones that
// were never opened.
func allResults(configured []repository.Target, opened []*openTarget) []repository.TargetResult {
	out := make([]repository.TargetResult, 0, len(configured))
	byName := map[string]repository.TargetResult{}
	for _, t := range opened {
		byName[t.result.Name] = t.result
	}
	for _, t := range configured {
		if r, ok := byName[t.Name]; ok {
			out = append(out, r)
		}
	}
	return out
}

// checkStored checks that a stored copy is whole: present, with the size that was sent. Its
// bytes are not read back here: on a local disk they would come from the page cache, which
// proves nothing, and S3 servers check every part's checksum on upload. `snapshot verify` reads
// them back from the medium.
func checkStored(ctx context.Context, repo *repository.Repository, name string, size int64) error {
	fi, err := repo.Backend().Stat(ctx, name)
	if err != nil {
		return fmt.Errorf("check stored copy %s: %w", name, err)
	}
	if fi.Size != size {
		return fmt.Errorf("%w: stored copy %s has %d bytes, %d were sent", ErrCorrupt, name, fi.Size, size)
	}
	return nil
}

func removeData(ctx context.Context, lg *slog.Logger, targets []*openTarget, name string) {
	for _, t := range targets {
		if err := t.repo.Backend().Remove(ctx, name); err != nil {
			lg.Warn("could not remove an unverified copy; the next run will", "target", t.result.Name, "error", err)
		}
	}
}

// stored is the outcome of writing the data object to one target.
type stored struct {
	n   int64
	err error
}

func targetErrors(results []stored) string {
	var parts []string
	for i := range results {
		if results[i].err != nil {
			parts = append(parts, results[i].err.Error())
		}
	}
	return strings.Join(parts, "; ")
}

// causedError is an error whose chain also holds the errors of the targets that caused it,
// which its message already names: a target's own cause (backend.ErrNoSpace, ErrDenied,
// ErrUnreachable) reaches main, which maps it to an exit code, as its type.
type causedError struct {
	err    error
	causes []error
}

// Only the causes that are the storage's own (a backend sentinel) join the chain: a copy that
// failed its read-back is named in the message, but a run that stored nothing is a storage failure
// (exit code 8), not a corrupt backup.
func withCauses(err error, causes []error) error {
	var storage []error
	for _, c := range causes {
		if backend.Kind(c) != "" {
			storage = append(storage, c)
		}
	}
	if len(storage) == 0 {
		return err
	}
	return &causedError{err: err, causes: storage}
}

func (e *causedError) Error() string { return e.err.Error() }

func (e *causedError) Unwrap() []error { return append([]error{e.err}, e.causes...) }

// targetCauses returns the errors of the targets that failed or are absent.
func targetCauses(ts []*openTarget) []error {
	var errs []error
	for _, t := range ts {
		if t.err != nil {
			errs = append(errs, t.err)
		}
	}
	return errs
}

// storedCauses returns the errors of the targets whose data object could not be stored.
func storedCauses(results []stored) []error {
	var errs []error
	for _, r := range results {
		if r.err != nil {
			errs = append(errs, r.err)
		}
	}
	return errs
}

func errOr(err, def error) error {
	if err != nil {
		return err
	}
	return def
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}
