// Package datadir inspects an etcd member's data folder (its --data-dir) offline and strictly
// read-only, and predicts what etcd will do when started on it: start as is, repair a torn WAL
// tail by itself, or fail (or lose data) so that the member must be replaced or restored.
//
// It is what `etcdguard recover` uses to decide how to bring a cluster back after every member
// lost power, and what `etcdguard doctor` uses to explain a member that does not start.
//
// Nothing here writes, renames, truncates or locks for writing: the WAL and snapshot files are
// parsed by this package itself (etcd's own WAL reader repairs files when opened for writing, and
// its snapshot loader renames broken files), and the bbolt database is opened read-only, after
// this package has walked its pages itself, because bbolt panics in goroutines of its own, where
// no caller can recover, on the damaged pages a power loss can leave behind.
package datadir

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Verdict says, for one member, what etcd will do on its data folder and what recovery must do.
type Verdict string

const (
	// VerdictStarts means the data is intact: etcd starts on it as it is.
	VerdictStarts Verdict = "starts"
	// VerdictSelfRepairs means the last WAL segment ends inside a record, as a power cut during
	// a write leaves it: etcd drops the torn tail itself on start (logging "repairing" and
	// "repaired WAL", or, after a zero length, nothing) and starts. Torn by a power cut, the
	// dropped bytes were never synced, so never acknowledged.
	VerdictSelfRepairs Verdict = "self-repairs"
	// VerdictDamaged means the database or the WAL is damaged in a way etcd refuses to start on
	// (or would start on only by dropping intact data): the member must be replaced (removed and
	// re-added empty, to catch up from the others) or restored from a backup.
	VerdictDamaged Verdict = "damaged"
	// VerdictMissing means there is no member data at all: the folder is missing, empty, or holds
	// neither a database nor a WAL. The member must be replaced or restored.
	VerdictMissing Verdict = "missing"
	// VerdictInUse means a running process (an etcd member, most likely) holds the database's
	// lock: the folder cannot be judged offline, and must not be touched.
	VerdictInUse Verdict = "in-use"
)

// Report is what Inspect found in one data folder.
type Report struct {
	// Dir is the data folder inspected, as given to Inspect.
	Dir string
	// Exists reports whether the folder exists.
	Exists bool
	// Empty reports whether the folder exists but holds nothing.
	Empty bool
	// Problems describes, one finding per line, everything found wrong or worth knowing, each
	// naming the file and the offset or page concerned. It never quotes etcd's keys or values.
	Problems []string
	// DB is the state of the backend database, member/snap/db.
	DB DBState
	// WAL is the state of the write-ahead log, member/wal/*.wal.
	WAL WALState
	// Snap is the state of the raft snapshots, member/snap/*.snap.
	Snap SnapState
	// AppliedBeyondWAL is how many raft entries the database has applied beyond the last entry
	// etcd keeps of the WAL (after dropping a torn tail). etcd takes the indexes of its next
	// entries for ones already applied and skips them: alone (a one-member cluster, or every
	// member in that state), it cannot apply writes until as many new entries have gone by;
	// one is harmless (the new leader's empty entry takes it). A member of a healthy cluster
	// receives the same entries again from the leader, and skipping them is right.
	AppliedBeyondWAL uint64
}

// DBState describes the backend database (bbolt) of a member.
type DBState struct {
	// Path is the database file, <dir>/member/snap/db.
	Path string
	// Present reports whether the file exists.
	Present bool
	// Size and ModTime are the file's size and modification time.
	Size    int64
	ModTime time.Time
	// Revision is the store's current revision as etcd computes it on start: the newest main
	// revision in the key bucket, or the finished compaction's revision if that is newer.
	Revision int64
	// CompactRevision is the revision of the last finished compaction (0 if none).
	CompactRevision int64
	// ScheduledCompactRevision is the revision of the last compaction started; when it is newer
	// than CompactRevision, etcd finishes that compaction on start.
	ScheduledCompactRevision int64
	// ConsistentIndex and Term are the raft index and term of the last entry applied to the
	// database (its meta bucket).
	ConsistentIndex, Term uint64
	// Voters and Learners count the cluster's members as the database records them (etcd's
	// members bucket): the size of the cluster this member belonged to; 0 when not recorded.
	Voters, Learners int
	// InUse reports that another process holds the database's lock (a running etcd).
	InUse bool
	// OK reports that the database opened read-only and passed both this package's page walk and
	// bbolt's consistency check.
	OK bool
	// BoltCheckSkipped reports that bbolt's consistency check was not run because it would crash
	// on a meta page whose header is damaged (bbolt itself, and so etcd, uses the other meta
	// page): OK then rests on this package's walk of the pages alone.
	BoltCheckSkipped bool
	// Err says why the database is not OK, naming the pages concerned.
	Err string
	// BadPages lists the ids of the pages found damaged, smallest first.
	BadPages []uint64
}

// WALState describes the write-ahead log of a member, as etcd would read it on start.
type WALState struct {
	// Dir is the WAL folder, <dir>/member/wal.
	Dir string
	// Segments are the WAL segment file names, oldest first.
	Segments []string
	// MemberID and ClusterID are the ids recorded in the WAL's metadata (0 if unreadable).
	MemberID, ClusterID uint64
	// LastIndex and LastTerm are the raft index and term of the last readable entry.
	LastIndex, LastTerm uint64
	// Commit is the commit index of the last readable HardState.
	Commit uint64
	// OK reports that the WAL reads to its end, or to a torn tail that etcd repairs by itself.
	OK bool
	// TornTail reports that the last segment ends inside a record (a power cut mid-write):
	// etcd repairs this itself on start by dropping the torn bytes.
	TornTail bool
	// TornTailOffset is where the torn record starts in the last segment: where etcd cuts.
	TornTailOffset int64
	// TornTailBytes is how many bytes of written (non-zero) data etcd drops from the last
	// segment: from TornTailOffset to the last non-zero byte.
	TornTailBytes int64
	// Corrupt reports damage that etcd refuses to start on (a CRC mismatch before the tail or
	// in a segment that is not the last, a record cut short in such a segment, an unreadable
	// record), or that it would "repair" only by dropping intact records after it.
	Corrupt bool
	// CorruptFile and CorruptOffset locate the first damaged record: a segment name and the
	// byte offset of the record's frame in it.
	CorruptFile   string
	CorruptOffset int64
	// DroppedRecords counts intact records that follow a damaged one in the last segment, which
	// etcd's repair would throw away with it.
	DroppedRecords int
	// Err says why the WAL is not OK.
	Err string
}

// SnapState describes the raft snapshot files (.snap) of a member.
type SnapState struct {
	// Files are the .snap file names found, oldest first.
	Files []string
	// Broken are the .snap files that do not read back (etcd renames them to .broken on start
	// and falls back to an older one).
	Broken []string
	// Newest is the snapshot etcd would start from: the newest readable .snap file that the WAL
	// records as committed. Empty when etcd would start from the beginning of the WAL.
	Newest string
	// NewestIndex and NewestTerm are that snapshot's raft index and term.
	NewestIndex, NewestTerm uint64
	// Err says why etcd cannot start from the snapshots (for example, the snapshot is newer than
	// the database and its .snap.db file is missing).
	Err string
}

// Intact reports whether etcd starts on the folder without losing data: the database is OK, the
// WAL is OK (a torn tail counts as OK: etcd repairs it itself) and the snapshot needed is usable.
func (r Report) Intact() bool {
	return r.DB.OK && r.WAL.OK && r.Snap.Err == ""
}

// Verdict says what etcd will do on the folder and, so, what recovery must do with the member.
func (r Report) Verdict() Verdict {
	switch {
	case !r.Exists || r.Empty:
		return VerdictMissing
	case r.DB.InUse:
		return VerdictInUse
	case !r.DB.Present && len(r.WAL.Segments) == 0:
		return VerdictMissing
	case !r.Intact():
		return VerdictDamaged
	case r.WAL.TornTail:
		return VerdictSelfRepairs
	default:
		return VerdictStarts
	}
}

// Inspect examines dir (an etcd --data-dir) and reports what it finds. It never modifies
// anything. A WAL kept outside the data folder (etcd's --wal-dir) is not looked for. When a
// running etcd holds the folder (VerdictInUse), only the WAL's segments and ids are reported.
//
// The only error is ctx's: it is checked between the files and steps of the inspection (each
// WAL segment, the database, its bbolt check, the snapshots), and an inspection cut short
// returns no findings at all, so that nothing half-read is taken for damage.
func Inspect(ctx context.Context, dir string) (Report, error) {
	if err := ctx.Err(); err != nil {
		return Report{Dir: dir}, err
	}
	r := inspectDir(ctx, dir)
	if err := ctx.Err(); err != nil {
		return Report{Dir: dir}, err
	}
	return r, nil
}

func inspectDir(ctx context.Context, dir string) Report {
	r := Report{Dir: dir}
	entries, err := os.ReadDir(dir)
	if err != nil {
		if !os.IsNotExist(err) {
			r.Exists = true
			r.Problems = append(r.Problems, fmt.Sprintf("%s: cannot list: %v", dir, err))
		}
		return r
	}
	r.Exists = true
	if len(entries) == 0 {
		r.Empty = true
		return r
	}
	member := filepath.Join(dir, "member")
	var dbNotes, snapProblems []string
	// The database and the WAL are independent reads: do them at the same time.
	var scan *walScan
	done := make(chan struct{})
	go func() {
		defer close(done)
		scan = scanWAL(ctx, filepath.Join(member, "wal"))
	}()
	r.DB, dbNotes = inspectDB(ctx, filepath.Join(member, "snap", "db"))
	<-done
	if r.DB.InUse {
		// A running etcd writes the WAL as it is read: only its ids are worth reporting.
		r.WAL = WALState{Dir: scan.state.Dir, Segments: scan.state.Segments, MemberID: scan.state.MemberID, ClusterID: scan.state.ClusterID}
		r.Problems = append(r.Problems, r.DB.Err)
		return r
	}
	if ctx.Err() != nil {
		return r // Inspect returns nothing of it
	}
	r.Snap, snapProblems = inspectSnaps(filepath.Join(member, "snap"), scan, r.DB)
	r.WAL = scan.state
	// etcd reads the WAL from the snapshot it starts from: problems that only show from there
	// (a gap in the entries, a missing segment) are judged now that the snapshot is known.
	scan.checkFrom(&r.WAL, r.Snap.NewestIndex, r.Snap.NewestTerm)
	r.Problems = append(r.Problems, dbProblems(r.DB)...)
	r.Problems = append(r.Problems, dbNotes...)
	r.Problems = append(r.Problems, scan.problems...)
	if r.WAL.Err != "" && !r.WAL.Corrupt {
		r.Problems = append(r.Problems, r.WAL.Err) // no WAL, or an unreadable folder
	}
	if r.Snap.Err != "" {
		r.Problems = append(r.Problems, r.Snap.Err)
	}
	r.Problems = append(r.Problems, snapProblems...)
	r.Problems = append(r.Problems, crossChecks(&r)...)
	return r
}

// crossChecks compares the database with the WAL, and sets what it finds in r.
func crossChecks(r *Report) []string {
	var out []string
	if r.DB.OK && r.WAL.OK && len(r.WAL.Segments) > 0 && r.DB.ConsistentIndex > r.WAL.LastIndex {
		r.AppliedBeyondWAL = r.DB.ConsistentIndex - r.WAL.LastIndex
		out = append(out, fmt.Sprintf("%s: the database has applied raft index %d but the WAL ends at index %d: "+
			"on start etcd skips its next %d entries as already applied", r.DB.Path, r.DB.ConsistentIndex,
			r.WAL.LastIndex, r.AppliedBeyondWAL))
	}
	return out
}

// dbProblems returns the database's problem, if any, as a line of Report.Problems.
func dbProblems(db DBState) []string {
	if db.Present && !db.OK && db.Err != "" {
		return []string{db.Err}
	}
	if !db.Present {
		return []string{fmt.Sprintf("%s: missing", db.Path)}
	}
	return nil
}
