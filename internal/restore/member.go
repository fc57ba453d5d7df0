package restore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/etcdguard/etcdguard/internal/atomicfile"
)

// ErrDataDirInUse is returned (wrapped) when a restore would write into a data dir that holds
// data and moving it aside was not asked for.
var ErrDataDirInUse = errors.New("data dir is not empty")

// DataDirOptions describes the restore of one member's data dir from a plain, verified snapshot.
type DataDirOptions struct {
	// Snapshot is the plain snapshot file (as etcdctl snapshot save writes it).
	Snapshot string
	// Name, InitialCluster, InitialClusterToken and PeerURLs are etcd's --name,
	// --initial-cluster, --initial-cluster-token and --initial-advertise-peer-urls.
	Name                string
	InitialCluster      string
	InitialClusterToken string
	PeerURLs            []string
	// DataDir is the member's --data-dir.
	DataDir string
	// Bump raises every revision by this much and marks the old ones compacted; zero skips it.
	// RestoreDataDir applies it; RestoreStaging does not look at it (Staged.Bump takes the
	// amount, once events have been replayed into the staged data dir).
	Bump uint64
	// Quarantine moves a non-empty DataDir aside instead of refusing.
	Quarantine bool
	// SkipHashCheck accepts a snapshot without etcd's SHA-256 trailer (a db file copied out of
	// a data dir).
	SkipHashCheck bool
	// Now is the clock, for quarantine names (Staged.Install).
	Now time.Time
	// Marker, when set, is called by Staged.Install once the old data dir is out of the way and
	// just before the restored one is moved into place (recover records there which plan
	// restored it).
	Marker func(staging string) error
	// Replay, when set, opens the revisions to replay between the restore and the bump (a delta
	// chain), up to revision ReplayTo (0: to its end). RestoreDataDir calls it once.
	Replay   func() (RevisionSource, func(), error)
	ReplayTo int64
}

// DataDirResult is what a member restore did.
type DataDirResult struct {
	DataDir string `json:"data_dir"`
	// Quarantined is where the old data dir was moved, if it was.
	Quarantined string        `json:"quarantined,omitempty"`
	Bump        uint64        `json:"bump"`
	Elapsed     time.Duration `json:"elapsed_ns"`
	// Replay is what the replay of DataDirOptions.Replay did.
	Replay *ReplayResult `json:"replay,omitempty"`
}

// RestoreDataDir restores one member's data dir. The restore is built in a sibling folder and renamed
// into place only when complete, so DataDir is either the old data, absent, or the whole
// restored member, whatever happens. An existing non-empty DataDir is refused unless
// Quarantine is set, in which case it is moved to a sibling folder whose name is returned.
//
// It is the composition of the three steps of a staged restore, for callers that replay
// nothing in between: RestoreStaging (the snapshot into a staging folder), Staged.Bump (the
// revision bump and the mark-compacted), Staged.Install (the old data dir quarantined, the
// marker, the rename into place). ctx is checked between steps; once the old data dir has been
// moved aside, the restore is finished whatever ctx says.
func RestoreDataDir(ctx context.Context, opts DataDirOptions) (DataDirResult, error) {
	start := time.Now()
	res := DataDirResult{DataDir: opts.DataDir, Bump: opts.Bump}
	if opts.Bump > uint64(MaxBumpedRevision) {
		// Before anything is written (RestoreStaging checks the rest of opts).
		if err := checkDataDirOptions(opts); err != nil {
			return res, err
		}
		return res, bumpTooLarge(opts.Bump)
	}
	s, err := RestoreStaging(ctx, opts)
	if err != nil {
		return res, err
	}
	res.DataDir = s.DataDir
	if opts.Replay != nil {
		src, done, err := opts.Replay()
		if err != nil {
			s.Discard()
			return res, err
		}
		rr, err := s.Replay(ctx, src, opts.ReplayTo)
		done()
		res.Replay = &rr
		if err != nil {
			s.Discard()
			return res, err
		}
	}
	if err := s.Bump(ctx, opts.Bump); err != nil {
		s.Discard()
		return res, err
	}
	replayed := res.Replay
	res, err = s.Install(ctx)
	res.Replay = replayed
	if err == nil {
		res.Elapsed = time.Since(start)
	}
	return res, err
}

// resolveDataDir follows a data dir that is a symlink (/var/lib/etcd pointing at a disk mounted
// for etcd) to the folder it names: the restore is built beside that folder, on the same disk,
// and the symlink is left as it is. Replacing the symlink itself would move etcd's data onto
// another filesystem, with nothing quarantined.
//
// A link whose target is absent (moved aside by an interrupted restore of this data dir, or never
// made) names where the restore goes: there is nothing there to lose.
func resolveDataDir(dir string) (string, error) {
	fi, err := os.Lstat(dir)
	if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		return dir, nil
	}
	if target, err := filepath.EvalSymlinks(dir); err == nil {
		return target, nil
	}
	link, err := os.Readlink(dir)
	if err != nil {
		return "", fmt.Errorf("data dir %s is a symlink that cannot be read: %w", dir, err)
	}
	if !filepath.IsAbs(link) {
		link = filepath.Join(filepath.Dir(dir), link)
	}
	link = filepath.Clean(link)
	if fi, err := os.Lstat(link); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		return "", fmt.Errorf("data dir %s is a chain of symlinks that cannot be followed to a folder: give the real data dir", dir)
	}
	return link, nil
}

// realDataDir is where a data dir's data is: the folder a symlinked data dir points to (see
// resolveDataDir), else the path itself.
func realDataDir(dir string) string {
	if r, err := resolveDataDir(dir); err == nil {
		return r
	}
	return dir
}

// Quarantine moves a data dir aside, to a sibling folder named after it and the time, and
// returns the new path. It never deletes anything.
func Quarantine(dir string, now time.Time) (string, error) {
	base := dir + ".quarantine-" + now.UTC().Format("20060102T150405Z")
	dst := base
	for i := 2; ; i++ {
		if _, err := os.Lstat(dst); errors.Is(err, fs.ErrNotExist) {
			break
		}
		dst = fmt.Sprintf("%s-%d", base, i)
	}
	if err := os.Rename(dir, dst); err != nil {
		return "", fmt.Errorf("move %s aside to %s: %w", dir, dst, err)
	}
	if err := atomicfile.SyncDir(filepath.Dir(dir)); err != nil {
		return dst, err
	}
	return dst, nil
}

func isEmptyOrAbsent(dir string) (bool, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("read data dir %s: %w", dir, err)
	}
	return len(entries) == 0, nil
}

func randomHex() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// IsStaging reports whether a folder name is one of Member's unfinished restores.
func IsStaging(name string) bool { return strings.Contains(name, ".etcdguard-restore-") }
