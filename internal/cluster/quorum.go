package cluster

// Recovery paths, from least to most invasive. docs/design.md, "Recovering a cluster", explains
// why each is safe.
const (
	// PathNone: every member is healthy; nothing to do.
	PathNone = "none"
	// PathStart: enough members have intact data to form a quorum: start them (etcd repairs a
	// torn WAL tail itself), then replace any member whose data is damaged. Nothing is lost.
	PathStart = "start"
	// PathReplace: a quorum is running; members that are down with damaged or missing data are
	// replaced (removed, added back, started on an empty data dir). Nothing is lost.
	PathReplace = "replace"
	// PathRestore: no quorum can form: every member is restored from the freshest intact
	// source, a surviving member's database or the newest verified backup.
	PathRestore = "restore"
)

// Quorum is the number of voting members a cluster of that many voters needs to elect a leader:
// a majority. Learners do not vote and are not counted.
func Quorum(voters int) int { return voters/2 + 1 }

// Tally counts members by what they give a quorum.
type Tally struct {
	// Online members answer, healthy, in a cluster with a leader.
	Online int
	// Startable members are online or down with data etcd starts on as it is (State.Startable).
	Startable int
}

// TallyOf counts the members assessed.
func TallyOf(as []Assessment) Tally {
	var t Tally
	for _, a := range as {
		s := a.State()
		if s == StateOnline {
			t.Online++
		}
		if s.Startable() {
			t.Startable++
		}
	}
	return t
}

// Path is the least invasive recovery path open to a cluster of size voting members with this
// tally: nothing to do when every member is online; replace the others when a quorum is online;
// start the intact ones (then replace the others) when a quorum can start; else restore.
func (t Tally) Path(size int) string {
	q := Quorum(size)
	switch {
	case t.Online == size:
		return PathNone
	case t.Online >= q:
		return PathReplace
	case t.Startable >= q:
		return PathStart
	}
	return PathRestore
}
