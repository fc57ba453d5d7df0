package restore

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/etcdguard/etcdguard/internal/cluster"
)

func TestResumeDiff(t *testing.T) {
	cut := time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)
	down := func(name string, rev int64, at time.Time) cluster.Assessment {
		return cluster.Assessment{Name: name, OnlineErr: "connection refused", Disk: &cluster.DiskState{Verdict: "damaged", DBRevision: rev, DBModTime: at, WALLastIndex: 40, ClusterID: 7}}
	}
	up := func(name string, rev int64) cluster.Assessment {
		return cluster.Assessment{Name: name, Online: true, Revision: rev}
	}
	remote := cluster.Assessment{Name: "m3", OnlineErr: "connection refused; its data dir is on host cp3"}
	lost := cluster.Assessment{Name: "m3", Disk: &cluster.DiskState{Verdict: cluster.VerdictLost}}
	plan := Plan{Path: PathRestore, Assessments: []cluster.Assessment{down("m1", 100, cut), down("m2", 120, cut), remote}}
	repair := Plan{Path: PathReplace, Assessments: []cluster.Assessment{up("m1", 10), up("m2", 10), down("m3", 5, cut)}}
	missing := cluster.Assessment{Name: "m1", Disk: &cluster.DiskState{Verdict: "missing"}}

	cases := []struct {
		name     string
		plan     Plan
		now      []cluster.Assessment
		touched  map[string]bool
		restored map[string]bool
		want     []string // substrings, one per expected difference
	}{
		{"nothing changed", plan, []cluster.Assessment{down("m1", 100, cut), down("m2", 120, cut), remote}, nil, nil, nil},
		{"a member brought back by hand answers", plan, []cluster.Assessment{down("m1", 100, cut), up("m2", 300), remote},
			nil, nil, []string{"member m2: when planned it did not answer; data dir damaged, database at revision 120 written 2026-12-01T03:00:00Z, WAL to index 40; now it answered with a leader at revision 300"}},
		{"new writes in a stopped member's database", plan, []cluster.Assessment{down("m1", 150, cut.Add(time.Hour)), down("m2", 120, cut), remote},
			nil, nil, []string{"member m1: when planned it did not answer; data dir damaged, database at revision 100 written 2026-12-01T03:00:00Z, WAL to index 40; now it did not answer; data dir damaged, database at revision 150"}},
		{"members the plan restored are its own", plan, []cluster.Assessment{up("m1", 1000500), down("m2", 120, cut), remote}, map[string]bool{"m1": true}, map[string]bool{"m1": true}, nil},
		{"restore path: stopped by the plan, data as recorded", plan, []cluster.Assessment{down("m1", 100, cut), down("m2", 120, cut), remote}, map[string]bool{"m1": true, "m2": true}, nil, nil},
		{"restore path: stopped by the plan, data moved aside", plan, []cluster.Assessment{missing, down("m2", 120, cut), remote}, map[string]bool{"m1": true, "m2": true}, nil, nil},
		{"restore path: stopped by the plan, then brought back by hand", plan, []cluster.Assessment{up("m1", 2000), down("m2", 120, cut), remote}, map[string]bool{"m1": true, "m2": true},
			nil, []string{"member m1: stopped by this plan and not restored by it, but now it answered with a leader at revision 2000"}},
		{"restore path: stopped by the plan, then restored by hand and stopped", plan, []cluster.Assessment{down("m1", 7, cut.Add(time.Hour)), down("m2", 120, cut), remote}, map[string]bool{"m1": true},
			nil, []string{"member m1: stopped by this plan and not restored by it, but now it did not answer; data dir damaged, database at revision 7"}},
		{"replace path: members the plan acted on may differ", repair, []cluster.Assessment{up("m1", 99), up("m2", 99), up("m3", 99)}, map[string]bool{"m3": true}, nil, nil},
		{"a member whose data dir was not read now answers", plan, []cluster.Assessment{down("m1", 100, cut), down("m2", 120, cut), up("m3", 500)}, nil, nil, []string{"member m3: when planned it did not answer and its data dir was not read"}},
		{"a member whose data dir was not read is read now", plan, []cluster.Assessment{down("m1", 100, cut), down("m2", 120, cut), down("m3", 90, cut)}, nil, nil, nil},
		{"a member declared lost is not read again", Plan{Assessments: []cluster.Assessment{down("m1", 100, cut), lost}}, []cluster.Assessment{down("m1", 100, cut), down("m3", 90, cut)}, nil, nil, nil},
		{"a member online when planned that went down", repair, []cluster.Assessment{up("m1", 99), down("m2", 10, cut), down("m3", 5, cut)}, nil, nil, []string{"member m2: when planned it answered"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := ResumeDiff(tc.plan, tc.now, tc.touched, tc.restored)
			require.Len(t, got, len(tc.want), "%q", got)
			for i, w := range tc.want {
				require.Contains(t, got[i], w)
			}
		})
	}
}

func TestMemberListProblems(t *testing.T) {
	c := testCluster(3)
	listed := func(name, peer string, learner bool) *etcdserverpb.Member {
		return &etcdserverpb.Member{ID: uint64(len(name) + len(peer)), Name: name, PeerURLs: []string{peer}, IsLearner: learner}
	}
	exact := []*etcdserverpb.Member{listed("m1", "https://10.0.0.1:2380", false), listed("m2", "https://10.0.0.2:2380", false), listed("m3", "https://10.0.0.3:2380", false)}
	cases := []struct {
		name string
		list []*etcdserverpb.Member
		want []string
	}{
		{"exactly the planned members", exact, nil},
		{"a zombie of the old cluster", append(exact[:3:3], listed("old4", "https://10.0.0.4:2380", false)), []string{`member 0000000000000019 (name "old4"`}},
		{"a learner never started", append(exact[:3:3], listed("", "https://10.0.0.9:2380", true)), []string{"learner"}},
		{"a planned member missing", exact[:2], []string{"member m3 (https://10.0.0.3:2380) is not in the member list"}},
		{"a planned member added and never started", append(exact[:2:2], listed("", "https://10.0.0.3:2380", false)), []string{"has never started"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := memberListProblems(c, tc.list)
			require.Len(t, got, len(tc.want), "%q", got)
			for i, w := range tc.want {
				require.Contains(t, got[i], w)
			}
		})
	}
}

func TestCheckLocalPathsNested(t *testing.T) {
	root := t.TempDir()
	c := testCluster(3)
	c.Members[0].DataDir = root + "/m1"
	c.Members[1].DataDir = root + "/m1/inside"
	c.Members[2].DataDir = root + "/m3"
	err := (&Recoverer{}).checkLocalPaths(c)
	require.ErrorIs(t, err, ErrPlanMismatch)
	require.ErrorContains(t, err, "one inside the other")
	c.Members[1].DataDir = root + "/m10" // a sibling whose name starts the same is fine
	require.NoError(t, (&Recoverer{}).checkLocalPaths(c))
}
