package cluster

import (
	"time"

	"github.com/etcdguard/etcdguard/internal/datadir"
)

// VerdictLost is the data dir verdict of a member the operator declared lost (--lost): its data
// dir is not read.
const VerdictLost = "declared lost"

// DiskState is what an offline look at a member's data dir found.
type DiskState struct {
	// Verdict is datadir's (starts, self-repairs, damaged, missing, in-use), or VerdictLost.
	Verdict string `json:"verdict"`
	// Intact means etcd can start on the data dir as it is (a torn WAL tail included), or runs
	// on it already.
	Intact bool `json:"intact"`
	// DBOK means the database passed bbolt's check: it can serve as a restore source.
	DBOK            bool      `json:"db_ok"`
	DBPath          string    `json:"db_path,omitempty"`
	DBRevision      int64     `json:"db_revision,omitempty"`
	DBModTime       time.Time `json:"db_mod_time,omitempty"`
	ConsistentIndex uint64    `json:"consistent_index,omitempty"`
	WALLastIndex    uint64    `json:"wal_last_index,omitempty"`
	// ClusterID and MemberID are read from the WAL's metadata (0 when unreadable).
	ClusterID uint64   `json:"cluster_id,omitempty"`
	MemberID  uint64   `json:"member_id,omitempty"`
	Problems  []string `json:"problems,omitempty"`
	// Version is the etcd version its database records (storage version, else cluster
	// version), read only from a database that passed its checks.
	Version string `json:"version,omitempty"`
}

// DiskOf is the one reading of a data dir's offline inspection that doctor and recover share.
// A data dir a running etcd holds counts as intact: its member is up (without quorum), starting
// it is a no-op, and it counts towards a quorum. Version is left to the caller, which reads it
// from the database only when it passed its checks.
func DiskOf(rep datadir.Report) *DiskState {
	v := rep.Verdict()
	return &DiskState{
		Verdict: string(v), Intact: rep.Intact() || v == datadir.VerdictInUse,
		DBOK: rep.DB.OK, DBPath: rep.DB.Path, DBRevision: rep.DB.Revision, DBModTime: rep.DB.ModTime,
		ConsistentIndex: rep.DB.ConsistentIndex, WALLastIndex: rep.WAL.LastIndex,
		Problems: rep.Problems, ClusterID: rep.WAL.ClusterID, MemberID: rep.WAL.MemberID,
	}
}

// LostDisk is the disk state of a member whose data the operator declared lost.
func LostDisk() *DiskState {
	return &DiskState{Verdict: VerdictLost, Problems: []string{"declared lost by the operator (--lost)"}}
}

// Assessment is what is known of one member before deciding.
type Assessment struct {
	Name string `json:"name"`
	// Online means the member answered, healthy, as part of a cluster with a leader.
	Online    bool   `json:"online"`
	OnlineErr string `json:"online_error,omitempty"`
	MemberID  uint64 `json:"member_id,omitempty"`
	// Revision is the member's current revision, when online.
	Revision int64 `json:"revision,omitempty"`
	// Disk is the offline look at the data dir, for members that are not online; nil when it
	// was not read (its data dir is on another host).
	Disk *DiskState `json:"disk,omitempty"`
}

// State is a member as recovery sees it: what it can give a quorum and what is done with it.
type State string

// A member's states, from an assessment.
const (
	// StateOnline: it answers, healthy, in a cluster with a leader; it is kept.
	StateOnline State = "online"
	// StateIntact: it is down, and etcd starts on its data as it is (a torn WAL tail included).
	StateIntact State = "intact"
	// StateInUse: a running etcd (without quorum) holds its data dir: it counts as intact, but its
	// data cannot be read, and no restore may go over it.
	StateInUse State = "in-use"
	// StateDamaged: etcd cannot start on its data: the member is replaced, or restored with the
	// others.
	StateDamaged State = "damaged"
	// StateMissing: its data dir holds no member data.
	StateMissing State = "missing"
	// StateLost: the operator declared its data lost; it is not read.
	StateLost State = "lost"
	// StateUnknown: it did not answer and its data dir was not read (it is on another host): its
	// data may be the newest, and is never taken for lost.
	StateUnknown State = "unknown"
)

// State is the member's state.
func (a Assessment) State() State {
	switch {
	case a.Online:
		return StateOnline
	case a.Disk == nil:
		return StateUnknown
	case a.Disk.Verdict == string(datadir.VerdictInUse):
		return StateInUse
	case a.Disk.Intact:
		return StateIntact
	case a.Disk.Verdict == VerdictLost:
		return StateLost
	case a.Disk.Verdict == string(datadir.VerdictMissing):
		return StateMissing
	}
	return StateDamaged
}

// Startable reports whether a member in this state counts towards a quorum that can start: it is
// online, or etcd starts (or runs) on its data as it is.
func (s State) Startable() bool { return s == StateOnline || s == StateIntact || s == StateInUse }
