package snapshot

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"filippo.io/age"

	"github.com/etcdguard/etcdguard/internal/atomicfile"
	"github.com/etcdguard/etcdguard/internal/backend"
	"github.com/etcdguard/etcdguard/internal/failpoint"
	"github.com/etcdguard/etcdguard/internal/repository"
)

// Copy is one stored copy of a backup: a manifest in one target.
type Copy struct {
	Repo     *repository.Repository
	Manifest repository.Manifest
}

// Entry is one backup, merged by id across targets.
type Entry struct {
	Manifest repository.Manifest
	Copies   []Copy
}

// Catalog is every backup found in a set of targets, and the targets that could not be read.
type Catalog struct {
	Entries []Entry
	// Unreadable maps a target name to why it could not be listed (absent offline media included).
	Unreadable map[string]string
	// Skipped lists manifests that could not be read, each naming its target and backup.
	Skipped []string
	// Repos are the repositories that could be opened; Close closes them.
	Repos []*repository.Repository
}

// Close releases every opened repository.
func (c *Catalog) Close() {
	for _, r := range c.Repos {
		r.Close()
	}
}

// Find returns the entry of a backup id, or ErrNotFound naming the targets searched.
func (c *Catalog) Find(id string) (Entry, error) {
	for _, e := range c.Entries {
		if e.Manifest.ID == id {
			return e, nil
		}
	}
	return Entry{}, c.NotFoundError(id)
}

// NotFoundError returns the error for a backup that is in no target.
func (c *Catalog) NotFoundError(id string) error {
	return fmt.Errorf("%w: no target holds backup %q (list them with: etcdguard snapshot list)", repository.ErrNotFound, id)
}

// PreferredOrder sorts copies by how cheap and safe they are to read: local disks first, then
// S3, then offline media.
func PreferredOrder(copies []Copy) []Copy {
	rank := func(c Copy) int {
		t := c.Repo.Target
		switch {
		case t.Offline:
			return 2
		case t.IsLocal():
			return 0
		}
		return 1
	}
	out := slices.Clone(copies)
	sort.SliceStable(out, func(i, j int) bool { return rank(out[i]) < rank(out[j]) })
	return out
}

// Load opens every target and reads its manifests, merging backups by id, oldest first (by the
// time each snapshot was taken). A
// target that cannot be read is recorded in Unreadable, not fatal.
func Load(ctx context.Context, targets []repository.Target) (*Catalog, error) {
	c := &Catalog{Unreadable: map[string]string{}}
	type listing struct {
		repo    *repository.Repository
		ms      []repository.Manifest
		skipped []*repository.ManifestError
		err     error
	}
	out := make([]listing, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Go(func() {
			repo, err := repository.Open(ctx, t)
			if err != nil {
				out[i].err = err
				return
			}
			out[i].repo = repo
			out[i].ms, out[i].skipped, out[i].err = repo.Manifests(ctx)
		})
	}
	wg.Wait()
	byID := map[string]*Entry{}
	var ids []string
	for i, l := range out {
		if l.repo != nil {
			c.Repos = append(c.Repos, l.repo)
		}
		if l.err != nil {
			c.Unreadable[targets[i].Name] = l.err.Error()
			continue
		}
		for _, sk := range l.skipped {
			c.Skipped = append(c.Skipped, sk.Error())
		}
		for _, m := range l.ms {
			if m.Kind != repository.KindFull {
				continue // delta segments are not backups of their own
			}
			e, ok := byID[m.ID]
			if !ok {
				e = &Entry{Manifest: m}
				byID[m.ID] = e
				ids = append(ids, m.ID)
			}
			e.Copies = append(e.Copies, Copy{Repo: l.repo, Manifest: m})
		}
	}
	for _, id := range ids {
		c.Entries = append(c.Entries, *byID[id])
	}
	// Oldest first by the time the snapshot was taken: ids sort by second only, and two backups
	// can start within one second.
	sort.SliceStable(c.Entries, func(i, j int) bool {
		a, b := c.Entries[i].Manifest, c.Entries[j].Manifest
		if !a.Started.Equal(b.Started) {
			return a.Started.Before(b.Started)
		}
		return a.ID < b.ID
	})
	if len(c.Entries) == 0 && len(c.Unreadable) == len(targets) && len(targets) > 0 {
		var errs []error
		for _, l := range out {
			errs = append(errs, l.err)
		}
		return c, fmt.Errorf("no target could be read: %w", errors.Join(errs...))
	}
	return c, nil
}

// CopyReport is the result of re-reading one stored copy.
type CopyReport struct {
	ID     string `json:"id"`
	Target string `json:"target"`
	OK     bool   `json:"ok"`
	// Checks lists what was checked and passed.
	Checks []string `json:"checks"`
	Error  string   `json:"error,omitempty"`
	// ErrorKind is backend.Kind of the failure, when the storage named it ("denied", ...).
	ErrorKind string `json:"error_kind,omitempty"`
	Bytes     int64  `json:"bytes"`
	// Elapsed is how long the re-read took.
	Elapsed time.Duration `json:"elapsed_ns"`
}

// Fetch re-reads one stored copy and writes the plain snapshot to dst atomically, after checking
// everything the manifest promises: the stored bytes' SHA-256, decryption, decompression, the plain
// snapshot's SHA-256 and etcd trailer, bbolt's consistency check and the status (hash, revision,
// key count). On any failure dst is untouched and no partial file is left.
// It holds a read lock on the copy's target while it reads (lockForRead).
func Fetch(ctx context.Context, lg *slog.Logger, cp Copy, identities []age.Identity, dst string) (CopyReport, error) {
	release, err := lockForRead(ctx, lg, cp.Repo, cp.Manifest.ID)
	if err != nil {
		return copyFailed(ctx, reportOf(cp), time.Now(), err)
	}
	defer release()
	return fetch(ctx, cp, identities, dst)
}

// copyFailed completes rep, the report of a re-read started at start, for its failure err, and
// returns it with the error.
func copyFailed(ctx context.Context, rep CopyReport, start time.Time, err error) (CopyReport, error) {
	if cerr := ctx.Err(); cerr != nil {
		// Interrupted (Ctrl-C, a deadline): the copy is not to blame.
		err = fmt.Errorf("interrupted: %w", cerr)
	}
	rep.Error, rep.ErrorKind = err.Error(), backend.Kind(err)
	rep.Elapsed = time.Since(start)
	return rep, fmt.Errorf("copy of %s in target %s: %w", rep.ID, rep.Target, err)
}

// reportOf is the empty report of a re-read of cp.
func reportOf(cp Copy) CopyReport { return CopyReport{ID: cp.Manifest.ID, Target: cp.Repo.Target.Name} }

// fetch is Fetch for a caller that holds the read lock.
func fetch(ctx context.Context, cp Copy, identities []age.Identity, dst string) (CopyReport, error) {
	start := time.Now()
	m := cp.Manifest
	rep := reportOf(cp)
	fail := func(err error) (CopyReport, error) { return copyFailed(ctx, rep, start, err) }
	dir := filepath.Dir(dst)
	tmp, release, err := createPartial(dst)
	if err != nil {
		return fail(fmt.Errorf("create a file in %s: %w", dir, err))
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
		release()
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return fail(err)
	}

	data, err := cp.Repo.OpenData(ctx, m)
	if err != nil {
		return fail(err)
	}
	defer data.Close()
	rc := ctxReader{ctx: ctx, r: data}
	storedSum := repository.NewDigest()
	dec, err := repository.NewDecoder(io.TeeReader(rc, storedSum), m.Compression, m.Encryption, identities, m.RawSize)
	if err != nil {
		return fail(err)
	}
	defer dec.Close()
	trailer := newTrailerCheck() // also gives the snapshot's SHA-256, in the same pass
	buf := make([]byte, 1<<20)
	failpoint.Here("fetch/opened")
	if _, err := io.CopyBuffer(io.MultiWriter(tmp, trailer), dec, buf); err != nil {
		if errors.Is(err, repository.ErrWrongKey) {
			return fail(err)
		}
		// Drain what is left, so the stored checksum can name the cause.
		_, _ = io.Copy(io.Discard, io.TeeReader(rc, storedSum))
		if !storedSum.Matches(m.StoredSize, m.StoredSHA256) {
			return fail(fmt.Errorf("%w: stored object %s is damaged (%d of %d bytes, SHA-256 differs from the manifest); decoding failed: %v", ErrCorrupt, m.Data, storedSum.Size(), m.StoredSize, err))
		}
		return fail(fmt.Errorf("%w: decode %s: %v", ErrCorrupt, m.Data, err))
	}
	// Read to the end of the stored object, in case the decoder stopped early.
	if _, err := io.Copy(io.Discard, io.TeeReader(rc, storedSum)); err != nil {
		return fail(fmt.Errorf("read %s: %w", m.Data, err))
	}
	rep.Bytes = storedSum.Size()
	if !storedSum.Matches(m.StoredSize, m.StoredSHA256) {
		return fail(fmt.Errorf("%w: stored object %s has %d bytes with SHA-256 %s; the manifest says %d bytes, %s", ErrCorrupt, m.Data, storedSum.Size(), storedSum.Sum(), m.StoredSize, m.StoredSHA256))
	}
	rep.Checks = append(rep.Checks, "stored-sha256")
	if m.Encryption != nil {
		rep.Checks = append(rep.Checks, "decrypt")
	}
	if m.Compression == repository.CompressionZstd {
		rep.Checks = append(rep.Checks, "decompress")
	}
	if rawSum := hex.EncodeToString(trailer.Sum()); trailer.Size() != m.RawSize || rawSum != m.SHA256 {
		return fail(fmt.Errorf("%w: the decoded snapshot has %d bytes with SHA-256 %s; the manifest says %d bytes, %s", ErrCorrupt, trailer.Size(), rawSum, m.RawSize, m.SHA256))
	}
	rep.Checks = append(rep.Checks, "sha256")
	if err := trailer.Check(); err != nil {
		return fail(err)
	}
	rep.Checks = append(rep.Checks, "etcd-sha256-trailer")
	if err := tmp.Sync(); err != nil {
		return fail(fmt.Errorf("write %s: %w", tmp.Name(), err))
	}
	if err := tmp.Close(); err != nil {
		return fail(fmt.Errorf("write %s: %w", tmp.Name(), err))
	}
	st, err := ReadStatus(ctx, tmp.Name())
	if err != nil {
		return fail(err)
	}
	if st.Hash != m.Status.Hash || st.Revision != m.Status.Revision || st.TotalKey != m.Status.TotalKey {
		return fail(fmt.Errorf("%w: status differs from the manifest: hash %d revision %d keys %d, want %d %d %d", ErrCorrupt, st.Hash, st.Revision, st.TotalKey, m.Status.Hash, m.Status.Revision, m.Status.TotalKey))
	}
	rep.Checks = append(rep.Checks, "bbolt-check", "status")
	failpoint.Here("fetch/partial-written")
	// Link, not rename: a file that appeared at dst meanwhile is never replaced.
	if err := os.Link(tmp.Name(), dst); err != nil {
		return fail(fmt.Errorf("move the verified snapshot into place at %s: %w", dst, err))
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		return fail(err)
	}
	rep.OK = true
	rep.Elapsed = time.Since(start)
	return rep, nil
}

// FetchBest fetches a backup from the first of its copies, in PreferredOrder, that passes every
// check of Fetch. Each copy that fails is logged and returned in skipped; the error says that no
// copy passed.
func FetchBest(ctx context.Context, lg *slog.Logger, e Entry, identities []age.Identity, dst string) (rep CopyReport, skipped []error, err error) {
	SweepPartials(dst, lg)
	for _, c := range PreferredOrder(e.Copies) {
		rep, err := Fetch(ctx, lg, c, identities, dst)
		if err == nil {
			return rep, skipped, nil
		}
		if ctx.Err() != nil {
			return CopyReport{}, skipped, err
		}
		if errors.Is(err, repository.ErrLocked) {
			lg.Warn("skipping a copy whose target another run holds locked", "id", e.Manifest.ID, "target", c.Repo.Target.Name, "error", err)
		} else {
			lg.Warn("skipping a copy that failed its checks", "id", e.Manifest.ID, "target", c.Repo.Target.Name, "error", err)
		}
		skipped = append(skipped, err)
	}
	return CopyReport{}, skipped, fmt.Errorf("no copy of backup %s passed its checks: %w", e.Manifest.ID, errors.Join(skipped...))
}

// Verify re-reads one stored copy completely (see Fetch) into a scratch file in workDir, which
// is removed afterwards.
func Verify(ctx context.Context, lg *slog.Logger, cp Copy, identities []age.Identity, workDir string) (CopyReport, error) {
	release, err := lockForRead(ctx, lg, cp.Repo, cp.Manifest.ID)
	if err != nil {
		return copyFailed(ctx, reportOf(cp), time.Now(), err)
	}
	defer release()
	return verify(ctx, cp, identities, workDir)
}

// verify is Verify for a caller that holds the read lock.
func verify(ctx context.Context, cp Copy, identities []age.Identity, workDir string) (CopyReport, error) {
	dir, remove, err := MakeScratch(workDir, "verify")
	if err != nil {
		return CopyReport{ID: cp.Manifest.ID, Target: cp.Repo.Target.Name, Error: err.Error()}, fmt.Errorf("create work directory in %q (set --work-dir): %w", workDir, err)
	}
	defer remove()
	return fetch(ctx, cp, identities, filepath.Join(dir, "snapshot.db"))
}

// CopyTo stores a backup that dst lacks, reading the data object from src as stored (still
// compressed and encrypted, so no key is needed), checking its SHA-256 on the way, then checking
// the copy in dst before writing dst's manifest. It never saves over an object of dst (SaveNew:
// an object already under the name fails the copy with backend.ErrExist and is left as it is),
// and removes only the data object it wrote itself.
func CopyTo(ctx context.Context, lg *slog.Logger, src Copy, dst *repository.Repository, now time.Time) (string, error) {
	m := src.Manifest
	release, err := lockForRead(ctx, lg, src.Repo, m.ID)
	if err != nil {
		return "", fmt.Errorf("copy %s from target %s: %w", m.ID, src.Repo.Target.Name, err)
	}
	defer release()
	rc, err := src.Repo.OpenData(ctx, m)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	crc := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	vr := repository.CheckedReader(io.TeeReader(rc, crc), m.StoredSize, m.StoredSHA256, src.Repo.Target.Name+":"+m.Data)
	if _, err := dst.SaveNew(ctx, m.Data, vr); err != nil {
		return "", fmt.Errorf("copy %s from %s to %s: %w", m.ID, src.Repo.Target.Name, dst.Target.Name, err)
	}
	check, err := checkCopy(ctx, dst, m, crc.Sum32())
	if err != nil {
		_ = dst.Backend().Remove(ctx, m.Data) // written by this copy, just now
		return "", fmt.Errorf("copy %s to %s: %w", m.ID, dst.Target.Name, err)
	}
	result := repository.TargetResult{
		Name: dst.Target.Name, URL: dst.Target.Redacted(), Media: dst.Target.Media, Offline: dst.Target.Offline,
		State: repository.StateStored, CopiedFrom: src.Repo.Target.Name, Check: check,
	}
	replaced := false
	for i, t := range m.Targets {
		if t.Name == dst.Target.Name {
			m.Targets[i], replaced = result, true
		}
	}
	if !replaced {
		m.Targets = append(m.Targets, result)
	}
	if err := dst.SaveNewManifest(ctx, m); err != nil {
		// The data object stays: without a manifest it is incomplete, and the next run that
		// holds the lock removes it (unless something odd is under the manifest's name).
		return "", fmt.Errorf("copy %s to %s: %w", m.ID, dst.Target.Name, err)
	}
	lg.Info("copied backup", "id", m.ID, "from", src.Repo.Target.Name, "to", dst.Target.Name, "bytes", m.StoredSize, "check", check)
	return check, nil
}

// Copy checks.
const (
	CheckReadBack     = "read-back"
	CheckServerCRC32C = "server-crc32c"
)

// checkCopy checks a data object just copied: read back from the medium (for tape and removable
// disks this is the check), or, where it cannot be read back at once (an archive storage class),
// by the CRC-32C the server computed and kept against sent, the one computed while sending.
func checkCopy(ctx context.Context, dst *repository.Repository, m repository.Manifest, sent uint32) (string, error) {
	ar, archival := backend.As[backend.Archival](dst.Backend())
	if !archival || !ar.Archived(m.Data) {
		return CheckReadBack, dst.ReadBack(ctx, m.DataObject)
	}
	cs, ok := backend.As[backend.Checksumer](dst.Backend())
	if !ok {
		return "", fmt.Errorf("%s cannot be read back at once and its storage keeps no checksum: it cannot be checked", m.Data)
	}
	got, err := cs.ServerCRC32C(ctx, m.Data)
	if err != nil {
		return "", err
	}
	if got != sent {
		return "", fmt.Errorf("%w: the server's CRC-32C of %s is %08x; %08x was sent", ErrCorrupt, m.Data, got, sent)
	}
	return CheckServerCRC32C, nil
}

// ctxReader stops a long read when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
