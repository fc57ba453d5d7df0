package restore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/etcdguard/etcdguard/internal/atomicfile"
	"github.com/etcdguard/etcdguard/internal/failpoint"
)

// Staged is a member's data dir restored from a snapshot into a staging folder beside the data
// dir it is to replace, not yet in place: the steps of a restore in between (replaying events
// into it, for a point-in-time restore; the revision bump) work on it while the old data dir
// is untouched. A Staged is used by one goroutine; it ends with Install or Discard.
type Staged struct {
	// Dir is the staging folder (.DIR.etcdguard-restore-RANDOM beside the data dir): a whole
	// data dir, still etcdguard's own scratch.
	Dir string
	// DataDir is the data dir it is to replace, a symlink followed (resolveDataDir).
	DataDir string

	opts    DataDirOptions
	hadData bool   // DataDir held data: Install moves it aside
	bump    uint64 // what Bump applied
	// replayErr is why a Replay failed: the database is then at a revision other than the
	// one asked for, and Bump and Install refuse it.
	replayErr error
}

// checkDataDirOptions refuses options that do not describe a member.
func checkDataDirOptions(opts DataDirOptions) error {
	if opts.DataDir == "" || opts.Name == "" || opts.InitialCluster == "" || len(opts.PeerURLs) == 0 {
		return errors.New("restore needs --data-dir, --name, --initial-cluster and --initial-advertise-peer-urls")
	}
	return nil
}

func bumpTooLarge(bump uint64) error {
	// etcd's restore takes the bump as an int64: past 2^63-1 it would lower every revision.
	return fmt.Errorf("%w: %d is above %d, the highest revision etcdguard bumps to", ErrBumpTooLarge, bump, MaxBumpedRevision)
}

// RestoreStaging restores opts.Snapshot with etcd's own restore code (etcdutl 3.6) into a new
// staging folder beside opts.DataDir, as a member of a new cluster (name, peer URLs, initial
// cluster and token), without any revision bump (opts.Bump is not looked at). Nothing outside
// the staging folder is written. A DataDir that holds data is refused unless opts.Quarantine,
// and then refused while an etcd may be running on it.
func RestoreStaging(ctx context.Context, opts DataDirOptions) (*Staged, error) {
	if err := checkDataDirOptions(opts); err != nil {
		return nil, err
	}
	dataDir, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return nil, err
	}
	if dataDir, err = resolveDataDir(dataDir); err != nil {
		return nil, err
	}
	if fi, err := os.Stat(dataDir); err == nil && !fi.IsDir() {
		return nil, fmt.Errorf("%w: --data-dir %s is a %s, not a folder: give the member's data dir", ErrInput, dataDir, fileKind(fi))
	}
	if isMountPoint(dataDir) {
		return nil, fmt.Errorf("%w: --data-dir %s is a mount point: a restore is built beside the data dir and renamed into place, and a mount point can be neither moved aside nor replaced; restore into a folder on that disk (such as %s) and point etcd's --data-dir at it", ErrInput, dataDir, filepath.Join(dataDir, "member-restored"))
	}
	empty, err := isEmptyOrAbsent(dataDir)
	if err != nil {
		return nil, err
	}
	if !empty && !opts.Quarantine {
		return nil, fmt.Errorf("%w: %s holds data: etcdguard never deletes or overwrites etcd data; stop the member and add --quarantine to move it aside, or choose another --data-dir", ErrDataDirInUse, dataDir)
	}
	if !empty {
		if err := checkNotRunning(ctx, dataDir, opts.PeerURLs); err != nil {
			return nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	// Build the restore first, beside the data dir: if that fails (a full disk, say), the old
	// data dir has not moved.
	parent := filepath.Dir(dataDir)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", parent, err)
	}
	s := &Staged{Dir: filepath.Join(parent, "."+filepath.Base(dataDir)+".etcdguard-restore-"+randomHex()), DataDir: dataDir, opts: opts, hadData: !empty}
	err = etcdutlRestore(snapshot.RestoreConfig{
		SnapshotPath:        opts.Snapshot,
		Name:                opts.Name,
		OutputDataDir:       s.Dir,
		PeerURLs:            opts.PeerURLs,
		InitialCluster:      opts.InitialCluster,
		InitialClusterToken: opts.InitialClusterToken,
		SkipHashCheck:       opts.SkipHashCheck,
	})
	if err != nil {
		s.Discard()
		return nil, fmt.Errorf("restore member %s from %s: %w", opts.Name, opts.Snapshot, err)
	}
	if err := ctx.Err(); err != nil {
		s.Discard()
		return nil, err
	}
	return s, nil
}

// Discard removes the staging folder: etcdguard's own half-built restore, never etcd data.
func (s *Staged) Discard() { _ = os.RemoveAll(s.Dir) }

// Install puts the staged data dir in place: the old data dir (if it held data) is moved aside
// (quarantined, checked again first that no etcd runs on it), opts.Marker is called, and the
// staging folder is renamed to the data dir. DataDir is at every moment the old data, absent,
// or the whole restored member. ctx is checked before the old data dir moves; after that the
// install is finished whatever ctx says, since stopping there would leave the member with no
// data dir.
func (s *Staged) Install(ctx context.Context) (DataDirResult, error) {
	res := DataDirResult{DataDir: s.DataDir, Bump: s.bump}
	if s.replayErr != nil {
		s.Discard()
		return res, s.refused()
	}
	// The staged data dir is complete: built, and bumped if it is to be.
	failpoint.Here("restore/staging-built")
	if err := ctx.Err(); err != nil {
		s.Discard()
		return res, err
	}
	if s.hadData {
		// Again, just before the move: the member may have been started while the restore was
		// being built.
		if err := checkNotRunning(ctx, s.DataDir, s.opts.PeerURLs); err != nil {
			s.Discard()
			return res, err
		}
		moved, err := Quarantine(s.DataDir, s.opts.Now)
		if err != nil {
			s.Discard()
			return res, err
		}
		res.Quarantined = moved
		failpoint.Here("restore/quarantined")
	}
	// The marker goes down before the rename: after a crash between the two, the data dir is
	// absent (nothing to quarantine again) and the restore is simply done again.
	if s.opts.Marker != nil {
		if err := s.opts.Marker(s.Dir); err != nil {
			return res, err
		}
	}
	failpoint.Here("restore/marked")
	if err := os.Chmod(s.Dir, 0o700); err != nil {
		return res, err
	}
	// A data dir that appeared meanwhile is not replaced: rename fails on a non-empty folder.
	if empty, _ := isEmptyOrAbsent(s.DataDir); empty {
		_ = os.Remove(s.DataDir)
	}
	if err := os.Rename(s.Dir, s.DataDir); err != nil {
		return res, fmt.Errorf("move the restored member into place at %s (it is complete in %s): %w", s.DataDir, s.Dir, err)
	}
	if err := atomicfile.SyncDir(filepath.Dir(s.DataDir)); err != nil {
		return res, err
	}
	return res, nil
}

// isMountPoint reports whether dir is a folder on another file system than its parent's: where
// a file system is mounted.
func isMountPoint(dir string) bool {
	fi, err := os.Stat(dir)
	if err != nil || !fi.IsDir() {
		return false
	}
	pi, err := os.Stat(filepath.Dir(dir))
	if err != nil {
		return false
	}
	d, ok1 := fi.Sys().(*syscall.Stat_t)
	p, ok2 := pi.Sys().(*syscall.Stat_t)
	return ok1 && ok2 && d.Dev != p.Dev
}

// fileKind names what a path that is not a folder is, for messages.
func fileKind(fi os.FileInfo) string {
	if fi.Mode().IsRegular() {
		return "file"
	}
	return "file of type " + fi.Mode().Type().String()
}

// etcdutlRestore runs etcd's own restore. etcdutl reports some failures (a database it cannot
// open) by panicking through its logger; they are returned as errors here.
func etcdutlRestore(cfg snapshot.RestoreConfig) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("etcd's restore failed: %v", r)
		}
	}()
	return snapshot.NewV3(etcdLogger()).Restore(cfg)
}

// etcdLogger is the logger handed to etcd's restore and backend code: silent, and a Fatal
// (etcd's backend reports a failed write or commit, a full disk say, with one) panics instead
// of exiting the process, so that the callers' recover turns it into an error and the staging
// folder is removed and the exit code is etcdguard's.
func etcdLogger() *zap.Logger {
	return zap.NewNop().WithOptions(zap.WithFatalHook(zapcore.WriteThenPanic))
}
