package restore

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/etcdguard/etcdguard/internal/cluster"
	"github.com/etcdguard/etcdguard/internal/repository"
)

// Recovery paths, from least to most invasive: cluster decides which one a cluster's members
// allow (Tally.Path); a plan carries it.
const (
	PathNone    = cluster.PathNone
	PathStart   = cluster.PathStart
	PathReplace = cluster.PathReplace
	PathRestore = cluster.PathRestore
)

// ErrUnsafe is returned (wrapped) when no recovery can be planned safely from what is known.
var ErrUnsafe = errors.New("no safe recovery")

// Member actions in a plan.
const (
	ActKeep    = "keep"    // running and healthy
	ActStart   = "start"   // stopped, data intact
	ActReplace = "replace" // data damaged or missing; the rest of the cluster has quorum
	ActRestore = "restore" // part of a whole-cluster restore
)

// Source kinds.
const (
	SourceBackup = "backup"
	SourceMember = "member"
)

// BackupInfo is the newest verified backup of the cluster, if any.
type BackupInfo struct {
	ID string `json:"id"`
	// ClusterID is the id of the etcd cluster the backup was taken of (hex).
	ClusterID string    `json:"cluster_id,omitempty"`
	Revision  int64     `json:"revision"`
	Created   time.Time `json:"created"`
	SHA256    string    `json:"sha256"`
	// TotalKey is the number of keys clients see (etcdutl's count less the bump's empty key).
	TotalKey int    `json:"total_key"`
	Target   string `json:"target,omitempty"`
	// Version is the etcd version of the backup: its storage version, else the server version it
	// was taken from.
	Version string `json:"version,omitempty"`
	// Delta is the backup's delta log that a restore replays onto it; nil when there is none.
	Delta *DeltaInfo `json:"delta,omitempty"`
}

// DeltaInfo is the part of a backup's delta log a restore replays: from the target that holds
// the most of it, up to revision UpTo, received at At.
type DeltaInfo struct {
	Target   string    `json:"target"`
	Segments int       `json:"segments"`
	Open     bool      `json:"open_segment,omitempty"`
	UpTo     int64     `json:"up_to"`
	At       time.Time `json:"at,omitzero"`
	Problem  string    `json:"problem,omitempty"`
}

// Source is where a whole-cluster restore takes its data from.
type Source struct {
	Kind     string `json:"kind"`
	BackupID string `json:"backup_id,omitempty"`
	// ClusterID is the backup's cluster id (Kind backup).
	ClusterID string `json:"cluster_id,omitempty"`
	Member    string `json:"member,omitempty"`
	// DBPath is the member database to restore from (Kind member).
	DBPath   string    `json:"db_path,omitempty"`
	Revision int64     `json:"revision"`
	SHA256   string    `json:"sha256,omitempty"`
	TotalKey int       `json:"total_key,omitempty"`
	At       time.Time `json:"at"`
	// Delta is the delta log replayed onto the backup (Kind backup): Revision and At are then
	// the point it reaches, and BackupRevision the backup's own revision.
	Delta          *DeltaInfo `json:"delta,omitempty"`
	BackupRevision int64      `json:"backup_revision,omitempty"`
}

// Action is what the plan does with one member.
type Action struct {
	Member string `json:"member"`
	Do     string `json:"do"`
	Why    string `json:"why"`
}

// Loss is the data a plan gives up.
type Loss struct {
	Revisions int64 `json:"revisions"`
	// Entries counts raft entries in the source member's WAL beyond its database.
	Entries uint64  `json:"entries,omitempty"`
	Seconds float64 `json:"seconds"`
	Note    string  `json:"note"`
}

// PlanFormat is the version of the plan file format.
const PlanFormat = 1

// Plan is a decided recovery: written before anything is changed, so that an interrupted
// recovery can be finished, and so that members on other hosts can apply their part.
type Plan struct {
	Format      int                  `json:"format"`
	ID          string               `json:"id"`
	Created     time.Time            `json:"created"`
	Path        string               `json:"path"`
	Why         []string             `json:"why"`
	Cluster     cluster.Cluster      `json:"cluster"`
	Assessments []cluster.Assessment `json:"assessments"`
	Actions     []Action             `json:"actions"`
	Source      *Source              `json:"source,omitempty"`
	// Token is the new cluster token of a restore.
	Token     string   `json:"token,omitempty"`
	Bump      uint64   `json:"bump,omitempty"`
	BumpWhy   []string `json:"bump_why,omitempty"`
	HighWater int64    `json:"high_water"`
	Loss      Loss     `json:"loss"`
}

// DecideInputs is everything Decide looks at.
type DecideInputs struct {
	Cluster     cluster.Cluster
	Assessments []cluster.Assessment
	// Backup is the newest verified backup of this cluster, nil if there is none; with its
	// delta log, when it has one.
	Backup *BackupInfo
	// PointInTime says the restore goes to a point asked for (--to-revision, --to-time): only
	// the backup and its delta log are sources, the members' newer data is not.
	PointInTime bool
	// History holds the other backups' revisions and times, for sizing the revision bump.
	History []RevisionPoint
	NoBump  bool
	// EtcdVersion is the etcd version the restored members will run when no member database
	// records it (--etcd-version); AllowVersionSkew turns a refused skew into a warning.
	EtcdVersion      string
	AllowVersionSkew bool
	// Now is the time of the decision: the plan's creation time, and the restore time the
	// revision bump is sized for.
	Now time.Time
	// PlanID is the new plan's id (an etcdguard id, NewPlanID), chosen by the caller so that
	// Decide draws no random number; the restore's cluster token is made from it.
	PlanID string
}

// NewPlanID returns a new plan id for DecideInputs: the time, and 8 random hex digits.
func NewPlanID(now time.Time) string { return repository.NewID(now) }

// Decide chooses the safest recovery path and says what it costs. It is pure: its inputs are
// all it looks at (no clock, no random numbers, no I/O; the caller passes Now and PlanID), so the
// same inputs always give the same plan. The rules, in order:
//
//  1. every member online: nothing to do;
//  2. a quorum online: start the stopped members whose data is intact, replace the others;
//  3. a quorum of members online or with intact data: start those, then replace the others;
//  4. otherwise restore every member from the freshest intact source: the member database or
//     backup with the highest revision. A backup never replaces newer data a member still has.
func Decide(in DecideInputs) (Plan, error) {
	p := Plan{Format: PlanFormat, ID: in.PlanID, Created: in.Now.UTC(), Cluster: in.Cluster, Assessments: in.Assessments}
	if !repository.ValidID(in.PlanID) {
		return p, fmt.Errorf("plan id %q is not an etcdguard id (see NewPlanID)", in.PlanID)
	}
	if len(in.Assessments) != len(in.Cluster.Members) {
		return p, fmt.Errorf("assessed %d members of %d", len(in.Assessments), len(in.Cluster.Members))
	}
	q := in.Cluster.Quorum()
	tally := cluster.TallyOf(in.Assessments)
	online, startable := tally.Online, tally.Startable
	for _, a := range in.Assessments {
		if a.Online && a.Revision > p.HighWater {
			p.HighWater = a.Revision
		}
		if a.Disk != nil && a.Disk.DBRevision > p.HighWater {
			p.HighWater = a.Disk.DBRevision
		}
	}
	p.Path = tally.Path(len(in.Assessments))
	switch p.Path {
	case PathNone:
		p.Why = append(p.Why, fmt.Sprintf("all %d members are online and healthy", online))
	case PathReplace:
		p.Why = append(p.Why, fmt.Sprintf("%d of %d members are online: the cluster has quorum (%d)", online, len(in.Assessments), q))
	case PathStart:
		p.Why = append(p.Why, fmt.Sprintf("%d of %d members are online or have intact data: enough for quorum (%d) once started", startable, len(in.Assessments), q))
	default:
		p.Why = append(p.Why, fmt.Sprintf("only %d of %d members are online or have intact data: no quorum (%d) can form", startable, len(in.Assessments), q))
	}

	if p.Path != PathRestore {
		for _, a := range in.Assessments {
			act := Action{Member: a.Name}
			switch s := a.State(); {
			case s == cluster.StateOnline:
				act.Do, act.Why = ActKeep, "online and healthy"
			case s.Startable():
				act.Do, act.Why = ActStart, "stopped, data intact ("+a.Disk.Verdict+")"
			default:
				act.Do, act.Why = ActReplace, "data "+diskVerdict(a.Disk)+": removed from the cluster, added back, started on an empty data dir to receive the data from the others"
			}
			p.Actions = append(p.Actions, act)
		}
		p.Loss = Loss{Note: "nothing is lost: the cluster keeps its data"}
		return p, nil
	}

	// A restore replaces every member's data. It is refused while a member answers (with a
	// leader, the cluster may be alive where this host cannot see it) or runs without quorum
	// (its data cannot be read while etcd holds it, and it may be the newest).
	for _, a := range in.Assessments {
		switch a.State() {
		case cluster.StateOnline:
			return p, fmt.Errorf("%w: member %s answers with a leader, yet no quorum is reachable from here: check the network from this host to every member before restoring anything", ErrUnsafe, a.Name)
		case cluster.StateInUse:
			return p, fmt.Errorf("%w: member %s runs without quorum and holds its data dir, which may hold the newest data: stop it (etcd only, not the host) and run recover again so its data can be read", ErrUnsafe, a.Name)
		case cluster.StateUnknown:
			return p, fmt.Errorf("%w: the data of member %s could not be read from here (%s), and it may be the newest: run etcdguard doctor --offline --data-dir DIR on its host, then run recover where every down member's data dir can be read, or declare its data lost with --lost %s", ErrUnsafe, a.Name, a.OnlineErr, a.Name)
		}
	}

	// Restore: the freshest intact source.
	var best *Source
	var candidates []Source
	for _, a := range in.Assessments {
		if a.Disk != nil && a.Disk.DBOK {
			candidates = append(candidates, Source{Kind: SourceMember, Member: a.Name, DBPath: a.Disk.DBPath, Revision: a.Disk.DBRevision, At: a.Disk.DBModTime})
		}
	}
	if in.PointInTime {
		candidates = nil // the members' data is newer than the point asked for
	}
	if in.Backup != nil {
		b := in.Backup
		src := Source{Kind: SourceBackup, BackupID: b.ID, ClusterID: b.ClusterID, Revision: b.Revision, SHA256: b.SHA256, TotalKey: b.TotalKey, At: b.Created}
		if d := b.Delta; d != nil && d.UpTo > b.Revision {
			// The keys' count after the replay is not known before it: not checked.
			src.Delta, src.BackupRevision, src.Revision, src.TotalKey = d, b.Revision, d.UpTo, 0
			if !d.At.IsZero() {
				src.At = d.At
			}
		}
		candidates = append(candidates, src)
	}
	sort.SliceStable(candidates, func(i, j int) bool {
		if candidates[i].Revision != candidates[j].Revision {
			return candidates[i].Revision > candidates[j].Revision
		}
		// Equal data: prefer the verified backup, whose checksums are known.
		return candidates[i].Kind == SourceBackup && candidates[j].Kind != SourceBackup
	})
	if len(candidates) > 0 {
		best = &candidates[0]
	}
	if best == nil {
		return p, fmt.Errorf("no intact source: no member database passed its check and there is no verified backup; nothing can be restored safely")
	}
	p.Source = best
	if best.Kind == SourceMember {
		p.Why = append(p.Why, fmt.Sprintf("freshest intact source: member %s's database at revision %d", best.Member, best.Revision))
		if in.Backup != nil {
			p.Why = append(p.Why, fmt.Sprintf("newer than the newest backup %s (revision %d)", in.Backup.ID, in.Backup.Revision))
		}
	} else if d := best.Delta; d != nil {
		p.Why = append(p.Why, fmt.Sprintf("freshest intact source: backup %s at revision %d and its delta log in target %s up to revision %d (received %s)",
			best.BackupID, best.BackupRevision, d.Target, d.UpTo, d.At.UTC().Format(time.RFC3339Nano)))
		if d.Problem != "" {
			p.Why = append(p.Why, "warning: the delta log stops early: "+d.Problem)
		}
	} else {
		p.Why = append(p.Why, fmt.Sprintf("freshest intact source: backup %s at revision %d", best.BackupID, best.Revision))
	}
	if best.Kind == SourceBackup {
		// A member database is of the cluster's own version; a backup may be of another.
		skew := CheckVersionSkew(in.Backup.Version, membersVersion(in.Assessments, in.EtcdVersion), in.AllowVersionSkew)
		if err := skew.Err(); err != nil {
			return p, err
		}
		if skew.Verdict != SkewOK {
			p.Why = append(p.Why, "etcd versions: "+skew.Reason)
		}
	}
	p.Token = "etcdguard-" + p.ID
	for _, a := range in.Assessments {
		p.Actions = append(p.Actions, Action{Member: a.Name, Do: ActRestore, Why: "data " + diskVerdict(a.Disk) + "; restored from the source with a new cluster token"})
	}
	if in.NoBump {
		p.BumpWhy = []string{"--no-bump: revisions are not raised; restart every kube-apiserver so no watch cache serves stale data"}
	} else {
		b := SizeBump(BumpInputs{
			Backup:    RevisionPoint{Revision: best.Revision, At: best.At},
			History:   in.History,
			HighWater: RevisionPoint{Revision: p.HighWater, At: latestModTime(in.Assessments)},
			Now:       in.Now,
		})
		p.Bump, p.BumpWhy = b.Amount, b.Reasons
		if b.Amount == 0 {
			return p, fmt.Errorf("%w: the source is already at revision %d, so no Kubernetes-safe bump fits below revision %d: recover with --no-bump, then restart every kube-apiserver", ErrUnsafe, best.Revision, MaxBumpedRevision)
		}
	}
	p.Loss.Revisions = max(0, p.HighWater-best.Revision)
	if lt := latestModTime(in.Assessments); !lt.IsZero() && !best.At.IsZero() && lt.After(best.At) {
		p.Loss.Seconds = lt.Sub(best.At).Seconds()
	}
	p.Loss.Note = fmt.Sprintf("revisions above %d known to the members are lost (highest seen: %d)", best.Revision, p.HighWater)
	if d := best.Delta; d != nil && !in.PointInTime {
		p.Loss.Note = fmt.Sprintf("writes after revision %d, received %s by the delta log's writer, are at risk: those the cluster acknowledged after it (the delta log syncs every few tens of milliseconds; the members' WALs may hold more, unreadable here)",
			d.UpTo, d.At.UTC().Format(time.RFC3339Nano))
		if p.HighWater > d.UpTo {
			p.Loss.Note += fmt.Sprintf("; revisions %d to %d known to the members are lost", d.UpTo+1, p.HighWater)
		}
	} else if in.PointInTime {
		p.Loss.Note = fmt.Sprintf("the cluster goes back to revision %d, as asked; what was written after it is not restored", best.Revision)
	}
	if best.Kind == SourceMember {
		for _, a := range in.Assessments {
			if a.Name == best.Member && a.Disk != nil && a.Disk.WALLastIndex > a.Disk.ConsistentIndex {
				p.Loss.Entries = a.Disk.WALLastIndex - a.Disk.ConsistentIndex
				p.Loss.Note += fmt.Sprintf("; the WAL of %s holds %d raft entries past its database (writes acknowledged or not, not yet applied) that a restore from the database leaves out", a.Name, p.Loss.Entries)
			}
		}
	}
	return p, nil
}

// membersVersion is the etcd version the members' databases record (the newest, if they differ),
// else the version given.
func membersVersion(as []cluster.Assessment, given string) string {
	v := ""
	for _, a := range as {
		if a.Disk == nil || a.Disk.Version == "" {
			continue
		}
		if v == "" || CheckVersionSkew(v, a.Disk.Version, false).Verdict == SkewWarning {
			v = a.Disk.Version
		}
	}
	if v == "" {
		return given
	}
	return v
}

func diskVerdict(d *cluster.DiskState) string {
	if d == nil {
		return "not examined"
	}
	return d.Verdict
}

// latestModTime is when the members last wrote their databases: about when they went down.
func latestModTime(as []cluster.Assessment) time.Time {
	var t time.Time
	for _, a := range as {
		if a.Disk != nil && a.Disk.DBModTime.After(t) {
			t = a.Disk.DBModTime
		}
	}
	return t
}
