package cluster

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/datadir"
)

// TestStateOf covers every state a member can be in, from what doctor and recover both read:
// a data dir's inspection through DiskOf, or what is known without one.
func TestStateOf(t *testing.T) {
	at := time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)
	goodDB := datadir.DBState{Path: "/d/member/snap/db", Present: true, OK: true, Revision: 120, ModTime: at, ConsistentIndex: 40}
	goodWAL := datadir.WALState{Segments: []string{"0000000000000000-0000000000000000.wal"}, OK: true, LastIndex: 42, ClusterID: 7, MemberID: 9}
	inspected := func(rep datadir.Report) Assessment {
		return Assessment{Name: "m1", OnlineErr: "connection refused", Disk: DiskOf(rep)}
	}
	cases := []struct {
		name      string
		a         Assessment
		want      State
		startable bool
		verdict   string // the disk's verdict, "" when there is no disk
		dbOK      bool   // a restore source
	}{
		{"online", Assessment{Name: "m1", Online: true, Revision: 5}, StateOnline, true, "", false},
		{"down, intact", inspected(datadir.Report{Exists: true, DB: goodDB, WAL: goodWAL}), StateIntact, true, "starts", true},
		{"down, torn WAL tail: etcd repairs it", inspected(datadir.Report{Exists: true, DB: goodDB,
			WAL: datadir.WALState{Segments: goodWAL.Segments, OK: true, TornTail: true}}), StateIntact, true, "self-repairs", true},
		{"held by a running etcd without quorum", inspected(datadir.Report{Exists: true, DB: datadir.DBState{Present: true, InUse: true}, WAL: goodWAL}),
			StateInUse, true, "in-use", false},
		{"database damaged", inspected(datadir.Report{Exists: true, DB: datadir.DBState{Present: true, Err: "page 7: bad"}, WAL: goodWAL}),
			StateDamaged, false, "damaged", false},
		{"WAL corrupt, database intact: a restore source", inspected(datadir.Report{Exists: true, DB: goodDB,
			WAL: datadir.WALState{Segments: goodWAL.Segments, Corrupt: true}}), StateDamaged, false, "damaged", true},
		{"snapshot unusable", inspected(datadir.Report{Exists: true, DB: goodDB, WAL: goodWAL, Snap: datadir.SnapState{Err: "no .snap.db"}}),
			StateDamaged, false, "damaged", true},
		{"data dir absent", inspected(datadir.Report{}), StateMissing, false, "missing", false},
		{"data dir empty", inspected(datadir.Report{Exists: true, Empty: true}), StateMissing, false, "missing", false},
		{"neither database nor WAL", inspected(datadir.Report{Exists: true}), StateMissing, false, "missing", false},
		{"declared lost", Assessment{Name: "m1", Disk: LostDisk()}, StateLost, false, VerdictLost, false},
		{"not read: its data dir is on another host", Assessment{Name: "m1", OnlineErr: "connection refused; its data dir is on host cp3"},
			StateUnknown, false, "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, tc.a.State())
			require.Equal(t, tc.startable, tc.a.State().Startable())
			if tc.verdict == "" {
				require.Nil(t, tc.a.Disk)
				return
			}
			require.Equal(t, tc.verdict, tc.a.Disk.Verdict)
			require.Equal(t, tc.startable, tc.a.Disk.Intact, "intact on disk is what counts towards a quorum")
			require.Equal(t, tc.dbOK, tc.a.Disk.DBOK)
		})
	}
}

func TestDiskOfCarriesTheInspection(t *testing.T) {
	at := time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)
	d := DiskOf(datadir.Report{Exists: true, Problems: []string{"p"},
		DB:  datadir.DBState{Path: "/d/member/snap/db", Present: true, OK: true, Revision: 120, ModTime: at, ConsistentIndex: 40},
		WAL: datadir.WALState{Segments: []string{"w"}, OK: true, LastIndex: 42, ClusterID: 7, MemberID: 9}})
	require.Equal(t, &DiskState{Verdict: "starts", Intact: true, DBOK: true, DBPath: "/d/member/snap/db", DBRevision: 120, DBModTime: at,
		ConsistentIndex: 40, WALLastIndex: 42, ClusterID: 7, MemberID: 9, Problems: []string{"p"}}, d)
}

func TestQuorumAndPath(t *testing.T) {
	for voters, q := range map[int]int{1: 1, 2: 2, 3: 2, 4: 3, 5: 3, 7: 4} {
		require.Equal(t, q, Quorum(voters), "%d voters", voters)
	}
	on := Assessment{Online: true}
	intact := Assessment{Disk: &DiskState{Verdict: "starts", Intact: true}}
	inUse := Assessment{Disk: &DiskState{Verdict: "in-use", Intact: true}}
	damaged := Assessment{Disk: &DiskState{Verdict: "damaged"}}
	unknown := Assessment{}
	cases := []struct {
		name string
		as   []Assessment
		want Tally
		path string
	}{
		{"all online", []Assessment{on, on, on}, Tally{3, 3}, PathNone},
		{"a quorum online", []Assessment{on, on, damaged}, Tally{2, 2}, PathReplace},
		{"a quorum online or intact", []Assessment{on, intact, damaged}, Tally{1, 2}, PathStart},
		{"a running etcd counts as intact", []Assessment{inUse, intact, unknown}, Tally{0, 2}, PathStart},
		{"no quorum can form", []Assessment{intact, damaged, unknown}, Tally{0, 1}, PathRestore},
		{"five members, two intact", []Assessment{intact, intact, damaged, damaged, unknown}, Tally{0, 2}, PathRestore},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := TallyOf(tc.as)
			require.Equal(t, tc.want, got)
			require.Equal(t, tc.path, got.Path(len(tc.as)))
		})
	}
}
