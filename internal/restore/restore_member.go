package restore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/snapshot"
)

// ErrInput is returned (wrapped) when what a restore is asked to do cannot be done as given: a
// snapshot file that is not one, a data dir that is a file or whose folder does not exist, a bump
// that does not fit. Nothing was changed; the message says what to give instead.
var ErrInput = errors.New("bad input")

// MemberOptions say what one member is restored from and into (`etcdguard restore`).
type MemberOptions struct {
	// From is "latest" (the newest backup whose copy verifies), a backup id, or the path of a
	// plain snapshot file.
	From string
	// Targets and Identities are where backups are read from and the keys that decrypt them.
	Targets    []repository.Target
	Identities []age.Identity
	// WorkDir holds the fetched snapshot while it is restored; empty: beside DataDir, on the
	// same disk and as private as the data.
	WorkDir string

	// Name, InitialCluster, Token and PeerURLs are etcd's --name, --initial-cluster,
	// --initial-cluster-token and --initial-advertise-peer-urls. An empty Token becomes
	// etcdguard-BACKUP (or etcdguard-file-SHA256 for a file), the same on every member restored
	// from the same backup.
	Name           string
	InitialCluster string
	Token          string
	PeerURLs       []string
	// DataDir is the member's --data-dir.
	DataDir string

	// Bump, when BumpGiven, raises revisions by exactly that; NoBump raises none; otherwise
	// the bump is sized (SizeBump) from the backups' revision history and the backup's age.
	Bump      uint64
	BumpGiven bool
	NoBump    bool
	// Quarantine moves a data dir that holds data aside; SkipHashCheck accepts a snapshot file
	// without etcd's trailer.
	Quarantine    bool
	SkipHashCheck bool
	// EtcdVersion is the version the member will run when the data dir replaced records none;
	// AllowVersionSkew restores even a downgrade.
	EtcdVersion      string
	AllowVersionSkew bool
	// Point is where the restore goes: with a backup (latest or an id), its delta log is
	// replayed onto it, to its newest durable point or to Point's revision or moment; "latest"
	// then means the newest backup at or before that point.
	Point Point

	Logger *slog.Logger
	Now    time.Time
}

// MemberReport is what RestoreMember did (`restore -o json`).
type MemberReport struct {
	Backup      string               `json:"backup,omitempty"`
	File        string               `json:"file,omitempty"`
	Target      string               `json:"target,omitempty"`
	Revision    int64                `json:"revision"`
	Bump        uint64               `json:"bump"`
	BumpReasons []string             `json:"bump_reasons,omitempty"`
	Skipped     []string             `json:"skipped,omitempty"`
	Member      DataDirResult        `json:"member"`
	Token       string               `json:"token"`
	Status      snapshot.Status      `json:"status"`
	VersionSkew VersionSkew          `json:"version_skew"`
	Manifest    *repository.Manifest `json:"manifest,omitempty"`
	Copy        *snapshot.CopyReport `json:"copy,omitempty"`
	// Point is where the restore was asked to go; Chain the delta log replayed onto the backup
	// (nil: none), and Reached the revision and moment the restored member holds.
	Point       string     `json:"point"`
	Chain       *ChainPlan `json:"chain,omitempty"`
	Reached     int64      `json:"reached_revision"`
	ReachedTime time.Time  `json:"reached_time,omitzero"`
	// Notes are for the operator (a version skew warning, what could not be read), in order.
	Notes []string `json:"-"`
}

// RestoreMember restores one member's data dir from a backup or a snapshot file: it fetches and
// checks the snapshot completely, refuses a version skew it may not cross, sizes the bump, then
// restores (RestoreDataDir: built beside the data dir, moved into place only when complete). The
// report is filled as far as the restore went, also when it fails.
func RestoreMember(ctx context.Context, o MemberOptions) (MemberReport, error) {
	var rep MemberReport
	lg := o.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	dataDir := absPath(o.DataDir)
	scratchParent := o.WorkDir
	if scratchParent == "" {
		scratchParent = filepath.Dir(realDataDir(dataDir)) // beside the folder a symlinked data dir points to: its disk
		if _, err := os.Stat(scratchParent); err != nil {
			return rep, fmt.Errorf("%w: the folder of --data-dir %s: %w: create it (the restore is built beside the data dir, on the same disk)", ErrInput, dataDir, err)
		}
	}
	scratch, err := os.MkdirTemp(scratchParent, ".etcdguard-restore-snapshot-")
	if err != nil {
		return rep, fmt.Errorf("create a scratch folder in %s (set --work-dir): %w", scratchParent, err)
	}
	defer os.RemoveAll(scratch)
	plain := filepath.Join(scratch, "snapshot.db")
	rep.Notes = append(rep.Notes, leftoverNotes(dataDir, scratchParent, scratch)...)

	token := o.Token
	var backupPoint RevisionPoint
	var history []RevisionPoint
	rep.Point = o.Point.String()
	var chain *ChainPlan
	if st, err := os.Stat(o.From); err == nil && !st.IsDir() {
		if o.Point.Revision > 0 || !o.Point.Time.IsZero() {
			return rep, fmt.Errorf("%w: --to-revision and --to-time restore a backup and its delta log: a snapshot file has none (give a backup id or latest)", ErrInput)
		}
		rep.File, plain = o.From, o.From
		sum, err := checkSnapshotFile(ctx, plain, o.SkipHashCheck)
		if err != nil {
			return rep, err
		}
		if token == "" && len(sum) >= 16 {
			token = "etcdguard-file-" + sum[:16]
		}
		if rep.Status, err = snapshot.ReadStatus(ctx, plain); err != nil {
			return rep, err
		}
		backupPoint = RevisionPoint{Revision: rep.Status.Revision, At: st.ModTime()}
	} else {
		m, copyRep, skipped, cat, err := fetchForRestore(ctx, lg, o, plain)
		if cat != nil {
			defer cat.Close()
		}
		for _, sk := range skipped {
			rep.Skipped = append(rep.Skipped, sk.Error())
		}
		if err != nil {
			return rep, err
		}
		rep.Copy, rep.Manifest, rep.Backup, rep.Target = &copyRep, &m, m.ID, copyRep.Target
		if token == "" {
			token = "etcdguard-" + m.ID
		}
		rep.Status = snapshot.Status{Hash: m.Status.Hash, Revision: m.Status.Revision, TotalKey: m.Status.TotalKey, TotalSize: m.Status.TotalSize, Version: m.Status.Version}
		backupPoint = RevisionPoint{Revision: m.Revision, At: m.Started}
		for _, e := range cat.Entries {
			if e.Manifest.ClusterID == m.ClusterID && e.Manifest.ID != m.ID {
				history = append(history, RevisionPoint{Revision: e.Manifest.Revision, At: e.Manifest.Started})
			}
		}
		if e, err := cat.Find(m.ID); err == nil {
			var notes []string
			chain, notes, err = PlanChain(ctx, e, o.Point)
			rep.Notes = append(rep.Notes, notes...)
			if err != nil {
				return rep, err
			}
			rep.Chain = chain
			history = append(history, marksOf(ctx, e)...)
		}
	}
	rep.Revision = backupPoint.Revision

	// Before anything moves: a backup of a newer etcd is not restored for an older one.
	rep.VersionSkew, err = memberVersionSkew(ctx, o, plain, rep.Manifest, &rep.Notes)
	if err != nil {
		return rep, err
	}
	if err := rep.VersionSkew.Err(); err != nil {
		return rep, fmt.Errorf("restore member %s into %s: %w; nothing was changed", o.Name, dataDir, err)
	}
	switch rep.VersionSkew.Verdict {
	case SkewWarning:
		rep.Notes = append(rep.Notes, "warning: "+rep.VersionSkew.Reason)
	case SkewUnknown:
		rep.Notes = append(rep.Notes, "note: "+rep.VersionSkew.Reason)
	}

	switch {
	case o.NoBump:
		rep.BumpReasons = []string{"--no-bump: revisions are not raised; Kubernetes watch caches may go stale: restart every kube-apiserver"}
	case o.BumpGiven:
		if err := CheckBump(backupPoint.Revision, o.Bump); err != nil {
			return rep, fmt.Errorf("%w: --bump-revision %d: %w", ErrInput, o.Bump, err)
		}
		rep.Bump, rep.BumpReasons = o.Bump, []string{"--bump-revision given"}
	default:
		b := SizeBump(BumpInputs{Backup: backupPoint, History: history, Now: o.Now})
		if b.Amount == 0 {
			return rep, fmt.Errorf("%w: %s", ErrInput, b.Reasons[len(b.Reasons)-1])
		}
		rep.Bump, rep.BumpReasons = b.Amount, b.Reasons
	}

	rep.Token = token
	dopts := DataDirOptions{
		Snapshot: plain, Name: o.Name, InitialCluster: o.InitialCluster, InitialClusterToken: token,
		PeerURLs: o.PeerURLs, DataDir: o.DataDir, Bump: rep.Bump, Quarantine: o.Quarantine,
		SkipHashCheck: o.SkipHashCheck, Now: o.Now,
	}
	var src *ChainSource
	if chain != nil {
		open := chain.Source(ctx, o.Identities)
		dopts.Replay = func() (RevisionSource, func(), error) {
			s, done, err := open()
			src, _ = s.(*ChainSource)
			return s, done, err
		}
		dopts.ReplayTo = chain.UpTo
	}
	rep.Reached = backupPoint.Revision
	rep.Member, err = RestoreDataDir(ctx, dopts)
	if src != nil {
		rep.Reached, rep.ReachedTime = src.Reached, src.ReachedTime
	}
	return rep, err
}

// checkSnapshotFile checks a plain snapshot file's trailer before it is restored and returns the
// SHA-256 its trailer holds.
func checkSnapshotFile(ctx context.Context, path string, skipHashCheck bool) (string, error) {
	f, err := snapshot.OpenFile(path)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrInput, err)
	}
	defer f.Close()
	sum, _, err := snapshot.CheckTrailer(ctx, f)
	switch {
	case errors.Is(err, snapshot.ErrNoTrailer) && !skipHashCheck:
		return sum, fmt.Errorf("%w: %s has no etcd SHA-256 trailer (a db copied from a data dir?): add --skip-hash-check to restore it anyway", snapshot.ErrCorrupt, path)
	case err != nil && !errors.Is(err, snapshot.ErrNoTrailer):
		return sum, fmt.Errorf("%s: %w", path, err)
	}
	return sum, nil
}

// fetchForRestore writes the backup o.From names to plain: "latest" is the newest backup whose
// copy verifies (older ones are tried when none of a backup's copies passes; an interrupted fetch
// tries no older one), an id that backup's best copy. The catalog is returned for the bump's
// history, to be closed by the caller.
func fetchForRestore(ctx context.Context, lg *slog.Logger, o MemberOptions, plain string) (repository.Manifest, snapshot.CopyReport, []error, *snapshot.Catalog, error) {
	cat, err := snapshot.Load(ctx, o.Targets)
	if err != nil {
		return repository.Manifest{}, snapshot.CopyReport{}, nil, cat, err
	}
	if o.From == "latest" {
		// The backup whose delta log reaches furthest, when that is not the newest (a backup
		// taken by hand while the agent streamed an older one's chain); if none of its copies
		// passes its checks, the newest that does, as without a log.
		if ch, err := cat.Latest(ctx, o.Point.Query()); err == nil {
			if pick := FurthestReaching(ctx, ch.Candidates, o.Point); pick.Manifest.ID != "" && pick.Manifest.ID != ch.Entry.Manifest.ID {
				cr, skipped, err := snapshot.FetchBest(ctx, lg, pick, o.Identities, plain)
				if err == nil || ctx.Err() != nil {
					lg.Info("latest: an older backup's delta log reaches further than the newest backup", "chosen", pick.Manifest.ID, "newest", ch.Entry.Manifest.ID)
					return pick.Manifest, cr, skipped, cat, err
				}
				lg.Warn("the backup whose delta log reaches furthest has no copy that passes its checks; taking the newest that does", "backup", pick.Manifest.ID, "error", err)
			}
		}
		f, err := snapshot.FetchLatest(ctx, lg, cat, o.Point.Query(), o.Identities, plain)
		return f.Entry.Manifest, f.Copy, f.Skipped, cat, err
	}
	e, err := cat.Find(o.From)
	if err != nil {
		return repository.Manifest{}, snapshot.CopyReport{}, nil, cat, err
	}
	cr, skipped, err := snapshot.FetchBest(ctx, lg, e, o.Identities, plain)
	if err != nil && ctx.Err() == nil { // interrupted: the backup is not blamed
		err = fmt.Errorf("no copy of %s passed its checks: %w", o.From, err)
	}
	return e.Manifest, cr, skipped, cat, err
}

// memberVersionSkew decides whether the backup in the plain snapshot file fits the etcd version
// the restored member will run. The backup's version is what the snapshot records (its storage
// version, else its cluster version), else what its manifest says. The member's is the version
// recorded by the data dir being replaced (read-only), else o.EtcdVersion, else unknown. Notes
// about what could not be read are added to notes.
func memberVersionSkew(ctx context.Context, o MemberOptions, plain string, m *repository.Manifest, notes *[]string) (VersionSkew, error) {
	bv, err := ReadDBVersions(ctx, plain)
	if err != nil {
		return VersionSkew{}, err
	}
	backup := bv.Version()
	if backup == "" && m != nil {
		backup = m.Status.Version
		if backup == "" {
			backup = m.EtcdVersion
		}
	}
	target := ""
	tv, found, err := ReadDataDirVersions(ctx, o.DataDir)
	switch {
	case err != nil:
		*notes = append(*notes, fmt.Sprintf("note: the etcd version of the data dir being replaced could not be read (%v)", err))
	case found:
		target = tv.Version()
	}
	switch {
	case target == "":
		target = o.EtcdVersion
	case o.EtcdVersion != "" && o.EtcdVersion != target:
		*notes = append(*notes, fmt.Sprintf("note: --etcd-version %s is not used: the data dir being replaced records etcd %s", o.EtcdVersion, target))
	}
	return CheckVersionSkew(backup, target, o.AllowVersionSkew), nil
}

// leftoverNotes names the staging folders beside the data dir and the scratch folders in
// scratchParent (except own) that a restore killed before it could clean up left behind: each
// holds the cluster's data, every Secret, in clear. They are named, not removed: they may also
// be those of a restore of the same data dir running now.
func leftoverNotes(dataDir, scratchParent, own string) []string {
	var notes []string
	add := func(parent, prefix string) {
		entries, _ := os.ReadDir(parent)
		for _, e := range entries {
			if path := filepath.Join(parent, e.Name()); strings.HasPrefix(e.Name(), prefix) && path != own {
				notes = append(notes, fmt.Sprintf("warning: %s was left by an interrupted restore (or is a restore running now) and holds the cluster's data in clear: remove it", path))
			}
		}
	}
	real := realDataDir(dataDir) // the restore is built beside the folder a symlink points to
	add(filepath.Dir(real), "."+filepath.Base(real)+".etcdguard-restore-")
	add(scratchParent, ".etcdguard-restore-snapshot-")
	return notes
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}
