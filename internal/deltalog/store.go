// Package deltalog keeps the delta log in backup repositories: the writer that follows a
// cluster's watch into segments (open on a local target, synced at a short cadence, then sealed
// and stored through the codec), the shipping of sealed segments to the other targets, and the
// reading of a chain back as the revisions a point-in-time restore replays. The bytes of one
// segment are package delta's; the names and manifests are package repository's; docs/design.md,
// "Delta segments", describes both.
package deltalog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/etcdguard/etcdguard/internal/backend"
	"github.com/etcdguard/etcdguard/internal/repository"
)

// ErrCorrupt is returned (wrapped) when a stored segment does not read back as it was written.
var ErrCorrupt = repository.ErrCorrupt

// storeSegment stores the plain, sealed segment that plain reads (header to trailer) as segment
// m.Ref() of repo: its data object through codec (written once, with SaveNew), read back and
// compared, then its manifest. m carries everything but the stored data's description, which
// storeSegment fills in; when m.SHA256 is set, the plain bytes must hash to it, or nothing
// counts. It returns the manifest stored.
func storeSegment(ctx context.Context, repo *repository.Repository, codec repository.Codec, plain io.Reader, m repository.SegmentManifest) (repository.SegmentManifest, error) {
	ref := m.Ref()
	m.Data = ref.DataName(codec)
	m.Compression = codec.Compression
	m.Encryption = codec.Encryption()
	pr, pw := io.Pipe()
	stored, raw := repository.NewDigest(), repository.NewDigest()
	go func() {
		enc, err := codec.NewEncoder(io.MultiWriter(stored, pw))
		if err == nil {
			_, err = io.Copy(enc, io.TeeReader(plain, raw))
			if cerr := enc.Close(); err == nil {
				err = cerr
			}
		}
		if err == nil && m.SHA256 != "" && !raw.Matches(m.RawSize, m.SHA256) {
			err = fmt.Errorf("%w: segment %s reads as %d bytes with SHA-256 %s; %d bytes, %s were written", ErrCorrupt, ref, raw.Size(), raw.Sum(), m.RawSize, m.SHA256)
		}
		pw.CloseWithError(err) // nil: EOF
	}()
	_, err := repo.SaveNew(ctx, m.Data, pr)
	pr.CloseWithError(errors.New("store ended")) // unblock the encoder if the store stopped early
	if errors.Is(err, backend.ErrExist) {
		// A data object without a manifest under the segment's name: this writer's own, from a
		// store that was cut off before its manifest (a crash, a lost connection). It is
		// incomplete, and what the clean-up would remove; the caller stores the segment again.
		if _, merr := repo.SegmentManifest(ctx, ref); errors.Is(merr, backend.ErrNotExist) {
			if rerr := repo.Backend().Remove(ctx, m.Data); rerr == nil {
				return m, fmt.Errorf("store segment %s: an incomplete data object of an earlier try was there and is removed; store it again: %w", ref, errRetry)
			}
		}
	}
	if err != nil {
		return m, fmt.Errorf("store segment %s: %w", ref, err)
	}
	m.StoredSize, m.StoredSHA256 = stored.Size(), stored.Sum()
	m.RawSize, m.SHA256 = raw.Size(), raw.Sum()
	if err := repo.ReadBack(ctx, m.DataObject); err != nil {
		return m, fmt.Errorf("store segment %s: %w", ref, err)
	}
	if err := repo.SaveNewSegmentManifest(ctx, m); err != nil {
		return m, fmt.Errorf("store segment %s: %w", ref, err)
	}
	return m, nil
}

// copySegment copies a stored segment, as stored (the agent that ships it holds no key to
// decrypt it), from one repository to another: the data object checked against its manifest
// on the way, read back from the destination, then the manifest.
func copySegment(ctx context.Context, from, to *repository.Repository, m repository.SegmentManifest) error {
	rc, err := from.OpenObject(ctx, m.DataObject)
	if err != nil {
		return err
	}
	defer rc.Close()
	vr := repository.CheckedReader(rc, m.StoredSize, m.StoredSHA256, from.Target.Name+":"+m.Data)
	_, err = to.SaveNew(ctx, m.Data, vr)
	if errors.Is(err, backend.ErrExist) && to.ReadBack(ctx, m.DataObject) == nil {
		err = nil // an earlier copy stored the same bytes, and was cut off before the manifest
	}
	if err != nil {
		return fmt.Errorf("copy segment %s from %s to %s: %w", m.Ref(), from.Target.Name, to.Target.Name, err)
	}
	if err := to.ReadBack(ctx, m.DataObject); err != nil {
		return fmt.Errorf("copy segment %s to %s: %w", m.Ref(), to.Target.Name, err)
	}
	if err := to.SaveNewSegmentManifest(ctx, m); err != nil {
		return fmt.Errorf("copy segment %s to %s: %w", m.Ref(), to.Target.Name, err)
	}
	return nil
}

// errRetry marks a store that failed in a way that storing again fixes.
var errRetry = errors.New("try again")

// nowUTC is t in UTC without its monotonic reading, as times are stored.
func nowUTC(now func() time.Time) time.Time { return now().UTC().Round(0) }
