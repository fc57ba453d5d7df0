package doctor

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/etcdx"
)

func TestMemberFindings(t *testing.T) {
	base := etcdx.MemberStatus{Endpoint: "https://10.0.0.1:2379", Name: "cp1", ID: 1, Leader: 1, AppliedIndex: 5000, Version: "3.6.16", DBSize: 50 << 20, DBSizeInUse: 45 << 20, DBSizeQuota: 2 << 30}
	cases := []struct {
		name  string
		edit  func(*etcdx.MemberStatus)
		check string
		sev   Severity
		text  string
	}{
		{"3.5.2 can lose writes", func(s *etcdx.MemberStatus) { s.Version = "3.5.2" }, "version", Critical, "can lose committed writes"},
		{"3.5.4 below the minimum", func(s *etcdx.MemberStatus) { s.Version = "3.5.4" }, "version", Warning, "below 3.5.6"},
		{"lagging", func(s *etcdx.MemberStatus) { s.AppliedIndex = 3000 }, "lag", Warning, "2000 entries behind"},
		{"near the quota", func(s *etcdx.MemberStatus) { s.DBSize = 1900 << 20; s.DBSizeInUse = 1800 << 20 }, "db-size", Warning, "93% of its quota"},
		{"at the quota", func(s *etcdx.MemberStatus) { s.DBSize = 2040 << 20; s.DBSizeInUse = 2000 << 20 }, "db-size", Critical, "100% of its quota"},
		{"fragmented", func(s *etcdx.MemberStatus) { s.DBSize = 800 << 20; s.DBSizeInUse = 200 << 20 }, "fragmentation", Warning, "75% of the database file is free"},
		{"NOSPACE", func(s *etcdx.MemberStatus) { s.Alarms = []string{"alarm:NOSPACE"}; s.Revision = 77 }, "alarm", Critical, "NOSPACE"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := base
			tc.edit(&st)
			var found *Finding
			for _, f := range memberFindings(st, 5000) {
				if f.Check == tc.check {
					found = &f
				}
			}
			require.NotNil(t, found, "no %s finding", tc.check)
			require.Equal(t, tc.sev, found.Severity)
			require.Contains(t, found.Summary, tc.text)
		})
	}
	require.Empty(t, memberFindings(base, 5000), "a healthy member has nothing to report")
}

func TestEveryFaultHasANextStep(t *testing.T) {
	for _, fault := range etcdx.KnownFaults() {
		f := endpointFinding(etcdx.MemberStatus{Endpoint: "https://10.0.0.1:2379", Err: "x", Fault: fault})
		require.NotEmpty(t, nextForFault[fault], "fault %s has no next step of its own", fault)
		require.Equal(t, nextForFault[fault], f.Next)
		require.Equal(t, Critical, f.Severity)
	}
	f := endpointFinding(etcdx.MemberStatus{Endpoint: "https://10.0.0.1:2379", Err: "status: etcdserver: request timed out"})
	require.Contains(t, f.Next, "endpoint health")
	require.Equal(t, "status: etcdserver: request timed out", f.Summary)
}

func TestOddOnesOut(t *testing.T) {
	require.Equal(t, []string{"m3"}, oddOnesOut(map[string]uint32{"m1": 7, "m2": 7, "m3": 9}))
	require.Equal(t, []string{"m2", "m4"}, oddOnesOut(map[string]uint32{"m1": 7, "m2": 8, "m3": 7, "m4": 9, "m5": 7}))
	require.Nil(t, oddOnesOut(map[string]uint32{"m1": 7, "m2": 8}), "no majority: no odd one out")
	require.Empty(t, oddOnesOut(map[string]uint32{"m1": 7, "m2": 7}))
}
