package doctor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/etcdguard/etcdguard/internal/cluster"
	"github.com/etcdguard/etcdguard/internal/datadir"
)

// maxConcurrentScans bounds how many data dirs are inspected at the same time.
const maxConcurrentScans = 3

// undecidedVerdict is the verdict of a member that cannot start on its data, when the rest of
// the cluster is not known.
const undecidedVerdict = "must be replaced (if the others have quorum) or restored"

// checkDataDirs inspects data dirs offline (strictly read-only) and says, for each, whether
// etcd starts on it as it is, repairs itself, or the member must be replaced or restored; across
// several, which is freshest and whether an intact quorum exists. An inspection cut short by
// ctx is one finding saying so, and no verdict.
func checkDataDirs(ctx context.Context, dirs []string) []Finding {
	states, err := inspectDataDirs(ctx, dirs)
	if err != nil {
		return []Finding{{Severity: Warning, Check: "data-dir", Subject: strings.Join(dirs, ", "),
			Summary: "the offline inspection was interrupted: " + err.Error(), Next: "run etcdguard doctor --offline again"}}
	}
	damaged := undecidedVerdict
	var cluster []Finding
	if len(states) >= 2 {
		var f Finding
		f, damaged = clusterDataFinding(states)
		cluster = append(cluster, f)
	}
	var fs []Finding
	for _, s := range states {
		fs = append(fs, dataDirFindings(s.dir, s.rep, damaged)...)
	}
	return append(fs, cluster...)
}

// dirState is one data dir and what its inspection found.
type dirState struct {
	dir string
	rep datadir.Report
}

// inspectDataDirs inspects the data dirs, in the order given; the error is ctx's.
func inspectDataDirs(ctx context.Context, dirs []string) ([]dirState, error) {
	// The data dirs are read at the same time (each scan waits on its disk most of the time),
	// a few at once: each maps its files and reads its database ahead.
	states := make([]dirState, len(dirs))
	var wg sync.WaitGroup
	slots := make(chan struct{}, maxConcurrentScans)
	for i, d := range dirs {
		wg.Go(func() {
			slots <- struct{}{}
			defer func() { <-slots }()
			rep, _ := datadir.Inspect(ctx, d) // its only error is ctx's, returned below
			states[i] = dirState{d, rep}
		})
	}
	wg.Wait()
	return states, ctx.Err()
}

// clusterDataFinding judges several data dirs together: the freshest, whether the intact ones
// make a quorum of the cluster. It also returns the verdict of a member whose data is damaged,
// which only the whole cluster decides: replaced, restored with every member, or undecided
// while members are not checked.
func clusterDataFinding(states []dirState) (f Finding, damaged string) {
	// Across the data dirs: freshest, and an intact quorum or not. Each is read as recover reads
	// it (cluster.DiskOf): a data dir a running etcd holds counts as intact, its member is up.
	var ev []string
	fresh, freshRev := "", int64(-1)
	size := 0
	var as []cluster.Assessment
	for i, s := range states {
		ev = append(ev, fmt.Sprintf("%s: %s, revision %d, consistent index %d, WAL last index %d",
			s.dir, s.rep.Verdict(), s.rep.DB.Revision, s.rep.DB.ConsistentIndex, s.rep.WAL.LastIndex))
		if s.rep.DB.OK && s.rep.DB.Revision > freshRev {
			fresh, freshRev = s.dir, s.rep.DB.Revision
		}
		if s.rep.DB.OK {
			size = max(size, s.rep.DB.Voters)
		}
		as = append(as, cluster.Assessment{Name: fmt.Sprintf("dir%d", i+1), OnlineErr: "offline", Disk: cluster.DiskOf(s.rep)})
	}
	tally := cluster.TallyOf(as)
	intact := tally.Startable
	if fresh != "" {
		ev = append(ev, fmt.Sprintf("freshest intact database: %s (revision %d)", fresh, freshRev))
	}
	// The cluster's size as its databases record it; without one, the data dirs given are taken
	// for the whole cluster.
	given := len(states)
	if size < given {
		size = given
	}
	unchecked := size - given
	if unchecked > 0 {
		ev = append(ev, fmt.Sprintf("the databases record %d voting members: %d of them not checked here", size, unchecked))
	}
	q := cluster.Quorum(size)
	// The path recover would take on these members, when they are the whole cluster.
	path := tally.Path(given)
	// With enough of the cluster in view, a member that cannot start is one of the two: replaced
	// (the intact others have a quorum) or restored with every other member.
	damaged = undecidedVerdict
	switch {
	case intact >= q:
		damaged = fmt.Sprintf("must be replaced: removed and added back empty, it catches up from the %d intact members", intact)
	case intact+unchecked < q:
		damaged = fmt.Sprintf("must be restored, with every member: only %d of the %d members' data is intact, short of a quorum (%d)", intact, size, q)
	}
	f = Finding{Check: "cluster-data", Subject: fmt.Sprintf("%d data dirs", given), Evidence: ev}
	switch {
	case intact == given && unchecked == 0:
		f.Severity = OK
		f.Summary = fmt.Sprintf("all %d data dirs are intact: the members start as they are", intact)
	case intact >= q:
		f.Severity = Warning
		f.Summary = fmt.Sprintf("%d of %d members' data dirs are intact: a quorum (%d) can start; recover path: start", intact, size, q)
		f.Next = "etcdguard recover --dry-run --config CONFIG (starts the intact members, replaces the others; nothing lost)"
		if unchecked == 0 && path != "" {
			f.Summary = fmt.Sprintf("%d of %d data dirs are intact: a quorum (%d) can start; recover path: %s", intact, size, q, path)
		}
	case intact+unchecked >= q:
		f.Severity = Critical
		f.Summary = fmt.Sprintf("%d of the %d data dirs given are intact; the cluster has %d members, %d not checked here: "+
			"if enough of those are intact, a quorum (%d) can start without a restore", intact, given, size, unchecked, q)
		f.Next = "check the other members' data dirs (etcdguard doctor --offline --data-dir DIR on their hosts), then: etcdguard recover --dry-run --config CONFIG"
	case fresh != "":
		f.Severity = Critical
		f.Summary = fmt.Sprintf("only %d of %d members' data dirs are intact: no quorum (%d) can form; recover path: restore, from the freshest intact source", intact, size, q)
		f.Next = "etcdguard recover --dry-run --config CONFIG (restores every member from " + fresh + " or a newer backup)"
	default:
		f.Severity = Critical
		f.Summary = "no data dir has an intact database: recover path: restore from a backup"
		f.Next = "etcdguard recover --dry-run --config CONFIG, with the backup targets configured"
	}
	return f, damaged
}

// dataDirFindings turns one data dir's inspection into findings; damaged is the verdict of a
// member that cannot start on its data.
func dataDirFindings(dir string, rep datadir.Report, damaged string) []Finding {
	subj := dir
	var fs []Finding
	switch rep.Verdict() {
	case datadir.VerdictMissing:
		return []Finding{{Severity: Critical, Check: "data-dir", Subject: subj,
			Summary: "no member data: the folder is missing or empty", Evidence: rep.Problems,
			Next: "this member must be replaced (or the cluster restored): etcdguard recover --dry-run --config CONFIG"}}
	case datadir.VerdictInUse:
		return []Finding{{Severity: OK, Check: "data-dir", Subject: subj,
			Summary: "a running etcd holds this data dir: the offline checks do not apply (the online ones do)"}}
	}
	fs = append(fs, layoutFindings(dir)...)
	w := rep.WAL
	switch {
	case w.Corrupt:
		fs = append(fs, Finding{Severity: Critical, Check: "wal", Subject: subj,
			Summary:  "WAL corrupt in the middle of the log: etcd cannot repair this and refuses to start (walpb: crc mismatch) or loses the later records",
			Evidence: append([]string{fmt.Sprintf("file %s, offset %d", w.CorruptFile, w.CorruptOffset), fmt.Sprintf("last readable index %d, term %d", w.LastIndex, w.LastTerm)}, rep.Problems...),
			Next:     "replace this member (if the others have quorum) or restore: etcdguard recover --dry-run --config CONFIG"})
	case w.TornTail:
		fs = append(fs, Finding{Severity: Warning, Check: "wal", Subject: subj,
			Summary:  fmt.Sprintf("WAL tail torn by the power loss: etcd repairs this itself on start, dropping %d bytes of the last, unfinished record", w.TornTailBytes),
			Evidence: []string{fmt.Sprintf("last segment cut at offset %d; last whole entry: index %d, term %d", w.TornTailOffset, w.LastIndex, w.LastTerm)},
			Next:     "start etcd on it as it is; it logs 'repairing' and 'repaired WAL' and starts"})
	case w.OK:
		fs = append(fs, Finding{Severity: OK, Check: "wal", Subject: subj,
			Summary: fmt.Sprintf("WAL intact: %d segment(s), last index %d, term %d, commit %d", len(w.Segments), w.LastIndex, w.LastTerm, w.Commit)})
	default:
		fs = append(fs, Finding{Severity: Critical, Check: "wal", Subject: subj, Summary: "WAL unreadable: " + w.Err,
			Next: "etcdguard recover --dry-run --config CONFIG"})
	}
	db := rep.DB
	switch {
	case !db.Present:
		fs = append(fs, Finding{Severity: Critical, Check: "db", Subject: subj, Summary: "no database file (member/snap/db)",
			Next: "etcdguard recover --dry-run --config CONFIG"})
	case !db.OK:
		ev := []string{db.Err}
		if len(db.BadPages) > 0 {
			ev = append(ev, fmt.Sprintf("damaged pages: %v", db.BadPages))
		}
		fs = append(fs, Finding{Severity: Critical, Check: "db", Subject: subj,
			Summary: "database damaged: etcd crashes on it (bbolt: page assertion failed)", Evidence: ev,
			Next: "replace this member (if the others have quorum) or restore: etcdguard recover --dry-run --config CONFIG"})
	default:
		fs = append(fs, Finding{Severity: OK, Check: "db", Subject: subj,
			Summary: fmt.Sprintf("database passes bbolt's check: revision %d, consistent index %d, term %d", db.Revision, db.ConsistentIndex, db.Term)})
	}
	if rep.Snap.Err != "" {
		fs = append(fs, Finding{Severity: Critical, Check: "snap", Subject: subj, Summary: rep.Snap.Err,
			Next: "etcdguard recover --dry-run --config CONFIG"})
	} else if rep.Snap.Newest != "" {
		fs = append(fs, Finding{Severity: OK, Check: "snap", Subject: subj,
			Summary: fmt.Sprintf("etcd would load snapshot %s (index %d, term %d)", rep.Snap.Newest, rep.Snap.NewestIndex, rep.Snap.NewestTerm)})
	}
	verdict := Finding{Severity: OK, Check: "verdict", Subject: subj}
	switch rep.Verdict() {
	case datadir.VerdictStarts:
		verdict.Summary = "starts as is"
	case datadir.VerdictSelfRepairs:
		verdict.Severity, verdict.Summary = Warning, "starts and repairs itself (torn WAL tail)"
	default:
		verdict.Severity, verdict.Summary = Critical, damaged
		verdict.Next = "etcdguard recover --dry-run --config CONFIG"
	}
	return append(fs, verdict)
}

// layoutFindings checks the folders and their permissions (etcd wants 0700 data dirs).
func layoutFindings(dir string) []Finding {
	var fs []Finding
	for _, sub := range []string{"member", filepath.Join("member", "snap"), filepath.Join("member", "wal")} {
		p := filepath.Join(dir, sub)
		st, err := os.Stat(p)
		if err != nil {
			fs = append(fs, Finding{Severity: Critical, Check: "layout", Subject: dir, Summary: sub + " is missing: " + err.Error(),
				Next: "etcdguard recover --dry-run --config CONFIG"})
			continue
		}
		if sub == "member" {
			if perm := st.Mode().Perm(); perm&0o077 != 0 {
				fs = append(fs, Finding{Severity: Warning, Check: "layout", Subject: dir,
					Summary: fmt.Sprintf("%s is readable by others (mode %#o): it holds every Kubernetes Secret", p, perm),
					Next:    "chmod 700 " + p})
			}
		}
	}
	if st, err := os.Stat(dir); err == nil && st.Mode().Perm()&0o077 != 0 {
		fs = append(fs, Finding{Severity: Warning, Check: "layout", Subject: dir,
			Summary: fmt.Sprintf("data dir mode %#o: etcd wants 0700", st.Mode().Perm()), Next: "chmod 700 " + dir})
	}
	// etcd writes its database and WAL segments 0600; they hold the keyspace. (Its .snap files,
	// written 0666 less the umask, hold only the cluster's membership in etcd 3.)
	holdsData := func(name string) bool {
		// etcd 3.5's WAL repair keeps a copy of the segment as .wal.broken, made 0644.
		return name == "db" || strings.HasSuffix(name, ".snap.db") || strings.HasSuffix(name, ".wal") ||
			strings.HasSuffix(name, ".wal.broken")
	}
	var open []string
	for _, sub := range []string{filepath.Join("member", "snap"), filepath.Join("member", "wal")} {
		entries, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			continue
		}
		for _, e := range entries {
			if !holdsData(e.Name()) {
				continue
			}
			if info, err := e.Info(); err == nil && info.Mode().IsRegular() && info.Mode().Perm()&0o077 != 0 {
				open = append(open, fmt.Sprintf("%s (mode %#o)", filepath.Join(dir, sub, e.Name()), info.Mode().Perm()))
			}
		}
	}
	if len(open) > 0 {
		fs = append(fs, Finding{Severity: Warning, Check: "layout", Subject: dir,
			Summary:  fmt.Sprintf("%d file(s) of the data dir are readable by other users: they hold every Kubernetes Secret", len(open)),
			Evidence: open,
			Next:     "chmod -R go-rwx " + dir})
	}
	return fs
}
