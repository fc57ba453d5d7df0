package restore

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/cluster"
)

func testCluster(n int) cluster.Cluster {
	var c cluster.Cluster
	for i := 1; i <= n; i++ {
		c.Members = append(c.Members, cluster.Member{
			Name: fmt.Sprintf("m%d", i), PeerURL: fmt.Sprintf("https://10.0.0.%d:2380", i),
			ClientURL: fmt.Sprintf("https://10.0.0.%d:2379", i), DataDir: fmt.Sprintf("/var/lib/etcd%d", i),
			SystemdUnit: "etcd.service",
		})
	}
	return c
}

// testPlanID is the plan id the tests pass to Decide.
const testPlanID = "20261124T050000Z-0123abcd"

func TestDecide(t *testing.T) {
	now := time.Date(2026, 11, 24, 5, 0, 0, 0, time.UTC)
	cut := now.Add(-10 * time.Minute) // when the power went
	online := func(name string, rev int64) cluster.Assessment {
		return cluster.Assessment{Name: name, Online: true, Revision: rev}
	}
	disk := func(name, verdict string, intact, dbOK bool, rev int64) cluster.Assessment {
		return cluster.Assessment{Name: name, OnlineErr: "connection refused", Disk: &cluster.DiskState{
			Verdict: verdict, Intact: intact, DBOK: dbOK, DBRevision: rev, DBModTime: cut, DBPath: "/var/lib/" + name + "/member/snap/db",
		}}
	}
	backup := &BackupInfo{ID: "20261124T040000Z-aaaaaaaa", Revision: 900, Created: now.Add(-time.Hour), SHA256: "abc", TotalKey: 10}

	cases := []struct {
		name       string
		as         []cluster.Assessment
		backup     *BackupInfo
		wantPath   string
		wantDo     []string
		wantSource string // "backup", "member:NAME" or ""
		wantLoss   int64
		wantErr    string
	}{
		{"all online", []cluster.Assessment{online("m1", 5), online("m2", 5), online("m3", 5)}, backup, PathNone, []string{"keep", "keep", "keep"}, "", 0, ""},
		{"all killed, data intact: start them, lose nothing", []cluster.Assessment{disk("m1", "starts", true, true, 1000), disk("m2", "self-repairs", true, true, 1000), disk("m3", "starts", true, true, 999)}, backup, PathStart, []string{"start", "start", "start"}, "", 0, ""},
		{"two intact, one damaged: start two, replace one", []cluster.Assessment{disk("m1", "self-repairs", true, true, 1000), disk("m2", "damaged", false, false, 0), disk("m3", "starts", true, true, 1000)}, backup, PathStart, []string{"start", "replace", "start"}, "", 0, ""},
		{"quorum online, one data dir deleted: replace it", []cluster.Assessment{online("m1", 1000), online("m2", 1000), disk("m3", "missing", false, false, 0)}, backup, PathReplace, []string{"keep", "keep", "replace"}, "", 0, ""},
		{"no quorum: the intact member is newer than the backup", []cluster.Assessment{disk("m1", "damaged", false, false, 0), disk("m2", "damaged", false, true, 1000), disk("m3", "damaged", false, false, 0)}, backup, PathRestore, []string{"restore", "restore", "restore"}, "member:m2", 0, ""},
		{"no quorum: a backup never replaces newer member data", []cluster.Assessment{disk("m1", "damaged", false, true, 950), disk("m2", "missing", false, false, 0), disk("m3", "damaged", false, false, 1000)}, backup, PathRestore, nil, "member:m1", 50, ""},
		{"no quorum, no member database: the backup", []cluster.Assessment{disk("m1", "damaged", false, false, 1000), disk("m2", "missing", false, false, 0), disk("m3", "missing", false, false, 0)}, backup, PathRestore, nil, "backup", 100, ""},
		{"equal revisions: the verified backup", []cluster.Assessment{disk("m1", "damaged", false, true, 900), disk("m2", "missing", false, false, 0), disk("m3", "missing", false, false, 0)}, backup, PathRestore, nil, "backup", 0, ""},
		{"nothing to restore from", []cluster.Assessment{disk("m1", "damaged", false, false, 0), disk("m2", "missing", false, false, 0), disk("m3", "missing", false, false, 0)}, nil, "", nil, "", 0, "no intact source"},
		{"a member's data is on another host: no restore over it", []cluster.Assessment{disk("m1", "damaged", false, false, 0), disk("m2", "missing", false, false, 0), {Name: "m3", OnlineErr: "connection refused; its data dir is on host cp3"}}, backup, "", nil, "", 0, "could not be read from here"},
		{"a member runs without quorum: no restore over it", []cluster.Assessment{disk("m1", "damaged", false, false, 0), disk("m2", "missing", false, false, 0), {Name: "m3", Disk: &cluster.DiskState{Verdict: "in-use", Intact: true}}}, backup, "", nil, "", 0, "runs without quorum"},
		{"a member answers with a leader, the others unusable: no restore", []cluster.Assessment{online("m1", 5000), disk("m2", "damaged", false, false, 0), disk("m3", "missing", false, false, 0)}, backup, "", nil, "", 0, "answers with a leader"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Decide(DecideInputs{Cluster: testCluster(3), Assessments: tc.as, Backup: tc.backup, Now: now, PlanID: testPlanID})
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.wantPath, p.Path, "%v", p.Why)
			if tc.wantDo != nil {
				var do []string
				for _, a := range p.Actions {
					do = append(do, a.Do)
				}
				require.Equal(t, tc.wantDo, do)
			}
			switch {
			case tc.wantSource == "":
				require.Nil(t, p.Source)
				require.Zero(t, p.Loss.Revisions)
			case tc.wantSource == "backup":
				require.Equal(t, SourceBackup, p.Source.Kind)
			default:
				require.Equal(t, SourceMember, p.Source.Kind)
				require.Equal(t, tc.wantSource, "member:"+p.Source.Member)
			}
			if p.Path == PathRestore {
				require.Equal(t, tc.wantLoss, p.Loss.Revisions)
				require.NotEmpty(t, p.Token)
				require.GreaterOrEqual(t, p.Bump, uint64(MinBump))
			}
		})
	}
}

func TestDecideFiveMembers(t *testing.T) {
	now := time.Date(2026, 11, 24, 5, 0, 0, 0, time.UTC)
	var as []cluster.Assessment
	for i := 1; i <= 5; i++ {
		a := cluster.Assessment{Name: fmt.Sprintf("m%d", i), Disk: &cluster.DiskState{Verdict: "damaged"}}
		if i <= 3 {
			a.Disk = &cluster.DiskState{Verdict: "starts", Intact: true, DBOK: true, DBRevision: 10}
		}
		as = append(as, a)
	}
	p, err := Decide(DecideInputs{Cluster: testCluster(5), Assessments: as, Now: now, PlanID: testPlanID})
	require.NoError(t, err)
	require.Equal(t, PathStart, p.Path, "3 of 5 intact is a quorum")
	as[2].Disk = &cluster.DiskState{Verdict: "damaged", DBOK: true, DBRevision: 12}
	p, err = Decide(DecideInputs{Cluster: testCluster(5), Assessments: as, Now: now, PlanID: testPlanID})
	require.NoError(t, err)
	require.Equal(t, PathRestore, p.Path)
	require.Equal(t, "m3", p.Source.Member, "the freshest intact database, even of a member whose WAL is damaged")
}

// TestDecideVersionSkew: a restore from a backup is checked against the etcd version the members'
// readable databases record (else --etcd-version): a downgrade is refused unless allowed, one
// minor up is said in the plan's reasons.
func TestDecideVersionSkew(t *testing.T) {
	now := time.Date(2026, 11, 24, 5, 0, 0, 0, time.UTC)
	member := func(name, version string) cluster.Assessment {
		return cluster.Assessment{Name: name, Disk: &cluster.DiskState{Verdict: "damaged", DBOK: version != "", DBRevision: 100, Version: version}}
	}
	backup := func(version string) *BackupInfo {
		return &BackupInfo{ID: "20261124T040000Z-aaaaaaaa", Revision: 900, Created: now.Add(-time.Hour), SHA256: "abc", Version: version}
	}
	cases := []struct {
		name    string
		as      []cluster.Assessment
		backup  *BackupInfo
		given   string
		allow   bool
		wantErr string
		wantWhy string
	}{
		{"same minor", []cluster.Assessment{member("m1", "3.6.0"), member("m2", ""), member("m3", "")}, backup("3.6.0"), "", false, "", ""},
		{"a 3.6 backup for 3.5 members is refused", []cluster.Assessment{member("m1", "3.5.0"), member("m2", ""), member("m3", "")}, backup("3.6.0"), "", false, "is a downgrade", ""},
		{"allowed", []cluster.Assessment{member("m1", "3.5.0"), member("m2", ""), member("m3", "")}, backup("3.6.0"), "", true, "", "allowed by --allow-version-skew"},
		{"a 3.5 backup for 3.6 members: said", []cluster.Assessment{member("m1", "3.6.0"), member("m2", ""), member("m3", "")}, backup("3.5.35"), "", false, "", "upgrades the data"},
		{"no readable database: --etcd-version decides", []cluster.Assessment{member("m1", ""), member("m2", ""), member("m3", "")}, backup("3.6.0"), "3.5", false, "is a downgrade", ""},
		{"nothing known: a note", []cluster.Assessment{member("m1", ""), member("m2", ""), member("m3", "")}, backup("3.6.0"), "", false, "", "not known"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Decide(DecideInputs{Cluster: testCluster(3), Assessments: tc.as, Backup: tc.backup, EtcdVersion: tc.given, AllowVersionSkew: tc.allow, Now: now, PlanID: testPlanID})
			if tc.wantErr != "" {
				require.ErrorIs(t, err, ErrVersionSkew)
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, SourceBackup, p.Source.Kind)
			if tc.wantWhy != "" {
				require.Contains(t, fmt.Sprint(p.Why), tc.wantWhy)
			}
		})
	}
}

// TestDecideNoRoomToBump: a source already at the highest revision a bump may reach gets no
// silent unbumped restore; the plan is refused and asks for --no-bump.
func TestDecideNoRoomToBump(t *testing.T) {
	now := time.Date(2026, 11, 24, 5, 0, 0, 0, time.UTC)
	as := []cluster.Assessment{
		{Name: "m1", Disk: &cluster.DiskState{Verdict: "damaged"}}, {Name: "m2", Disk: &cluster.DiskState{Verdict: "missing"}}, {Name: "m3", Disk: &cluster.DiskState{Verdict: "missing"}},
	}
	b := &BackupInfo{ID: "20261124T040000Z-aaaaaaaa", Revision: MaxBumpedRevision, Created: now.Add(-time.Hour), SHA256: "abc"}
	_, err := Decide(DecideInputs{Cluster: testCluster(3), Assessments: as, Backup: b, Now: now, PlanID: testPlanID})
	require.ErrorIs(t, err, ErrUnsafe)
	require.ErrorContains(t, err, "--no-bump")
	p, err := Decide(DecideInputs{Cluster: testCluster(3), Assessments: as, Backup: b, NoBump: true, Now: now, PlanID: testPlanID})
	require.NoError(t, err)
	require.Zero(t, p.Bump)
}

// TestDecideIsPure: Decide draws on nothing but its inputs (no clock, no random id, no I/O), so
// the same inputs give the same plan, field for field, and it leaves its inputs as they were.
func TestDecideIsPure(t *testing.T) {
	now := time.Date(2026, 11, 24, 5, 0, 0, 0, time.UTC)
	cut := now.Add(-10 * time.Minute)
	disk := func(name string, intact, dbOK bool, rev int64, walBeyond uint64) cluster.Assessment {
		return cluster.Assessment{Name: name, OnlineErr: "connection refused", Disk: &cluster.DiskState{
			Verdict: "damaged", Intact: intact, DBOK: dbOK, DBRevision: rev, DBModTime: cut, DBPath: "/var/lib/" + name + "/member/snap/db",
			ConsistentIndex: 50, WALLastIndex: 50 + walBeyond, Version: "3.6.0",
		}}
	}
	cases := []struct {
		name string
		in   func() DecideInputs
	}{
		{"restore from a backup, bump sized from the history", func() DecideInputs {
			return DecideInputs{Cluster: testCluster(3), Now: now, PlanID: testPlanID,
				Assessments: []cluster.Assessment{disk("m1", false, false, 1000, 0), disk("m2", false, false, 0, 0), disk("m3", false, false, 0, 0)},
				Backup:      &BackupInfo{ID: "20261124T040000Z-aaaaaaaa", Revision: 900, Created: now.Add(-time.Hour), SHA256: "abc", TotalKey: 10, Version: "3.6.0"},
				History:     []RevisionPoint{{Revision: 100, At: now.Add(-3 * time.Hour)}, {Revision: 500, At: now.Add(-2 * time.Hour)}},
			}
		}},
		{"restore from a member database, WAL entries lost", func() DecideInputs {
			return DecideInputs{Cluster: testCluster(3), Now: now, PlanID: testPlanID,
				Assessments: []cluster.Assessment{disk("m1", false, true, 1200, 7), disk("m2", false, false, 0, 0), disk("m3", false, false, 0, 0)},
				Backup:      &BackupInfo{ID: "20261124T040000Z-aaaaaaaa", Revision: 900, Created: now.Add(-time.Hour), SHA256: "abc"},
			}
		}},
		{"start and replace", func() DecideInputs {
			return DecideInputs{Cluster: testCluster(3), Now: now, PlanID: testPlanID,
				Assessments: []cluster.Assessment{disk("m1", true, true, 1000, 0), disk("m2", false, false, 0, 0), disk("m3", true, true, 1000, 0)},
			}
		}},
		{"no bump", func() DecideInputs {
			return DecideInputs{Cluster: testCluster(3), Now: now, PlanID: testPlanID, NoBump: true,
				Assessments: []cluster.Assessment{disk("m1", false, true, 1000, 0), disk("m2", false, false, 0, 0), disk("m3", false, false, 0, 0)},
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in()
			first, err := Decide(in)
			require.NoError(t, err)
			second, err := Decide(in)
			require.NoError(t, err)
			require.Equal(t, first, second, "the same inputs give the same plan")
			again, err := Decide(tc.in())
			require.NoError(t, err)
			require.Equal(t, first, again, "equal inputs give equal plans")
			require.Equal(t, tc.in(), in, "Decide leaves its inputs as they were")
			require.Equal(t, testPlanID, first.ID, "the plan id is the caller's")
			require.Equal(t, now, first.Created)
			if first.Path == PathRestore {
				require.Equal(t, "etcdguard-"+testPlanID, first.Token)
			}
		})
	}
	t.Run("a plan id that is not an etcdguard id is refused", func(t *testing.T) {
		in := cases[0].in()
		for _, id := range []string{"", "../x", "20261124T050000Z"} {
			in.PlanID = id
			_, err := Decide(in)
			require.ErrorContains(t, err, "not an etcdguard id")
		}
	})
}

// TestDecideWithDeltaLog: a backup's delta log makes it the source when the log reaches past
// the members' databases, and the plan names both revisions and what is at risk; a point in time
// asked for makes the backup and its log the only source, even when a member's database is newer.
func TestDecideWithDeltaLog(t *testing.T) {
	now := time.Date(2026, 12, 2, 5, 0, 0, 0, time.UTC)
	cut := now.Add(-10 * time.Minute)
	damaged := func(name string, dbOK bool, rev int64) cluster.Assessment {
		return cluster.Assessment{Name: name, OnlineErr: "connection refused", Disk: &cluster.DiskState{
			Verdict: "damaged", DBOK: dbOK, DBRevision: rev, DBModTime: cut, DBPath: "/var/lib/" + name + "/member/snap/db",
		}}
	}
	as := []cluster.Assessment{damaged("m1", true, 5000), damaged("m2", false, 0), damaged("m3", false, 0)}
	logged := func(upTo int64) *BackupInfo {
		return &BackupInfo{ID: "20261202T043000Z-aaaaaaaa", Revision: 900, Created: now.Add(-30 * time.Minute), SHA256: "abc", TotalKey: 10,
			Delta: &DeltaInfo{Target: "local", Segments: 12, Open: true, UpTo: upTo, At: cut.Add(-40 * time.Millisecond)}}
	}
	for _, tc := range []struct {
		name        string
		backup      *BackupInfo
		pointInTime bool
		want        string // "backup" or "member:NAME"
		revision    int64
		why, loss   string
	}{
		{"the log reaches past the member's database", logged(5100), false, "backup", 5100,
			"backup 20261202T043000Z-aaaaaaaa at revision 900 and its delta log in target local up to revision 5100", "writes after revision 5100"},
		{"the member's database is newer than the log", logged(4000), false, "member:m1", 5000, "member m1's database at revision 5000", "revisions above 5000"},
		{"a point in time: the backup and its log, even below the member", logged(3000), true, "backup", 3000,
			"up to revision 3000", "the cluster goes back to revision 3000, as asked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Decide(DecideInputs{Cluster: testCluster(3), Assessments: as, Backup: tc.backup, PointInTime: tc.pointInTime, Now: now, PlanID: testPlanID})
			require.NoError(t, err)
			require.Equal(t, PathRestore, p.Path)
			got := p.Source.Kind
			if got == SourceMember {
				got += ":" + p.Source.Member
			}
			require.Equal(t, tc.want, got)
			require.Equal(t, tc.revision, p.Source.Revision)
			require.Contains(t, fmt.Sprint(p.Why), tc.why)
			require.Contains(t, p.Loss.Note, tc.loss)
			if p.Source.Kind == SourceBackup {
				require.Equal(t, tc.backup.Delta.UpTo, p.Source.Delta.UpTo)
				require.Equal(t, int64(900), p.Source.BackupRevision)
				require.Zero(t, p.Source.TotalKey, "the key count after a replay is not known before it")
			}
		})
	}
}
