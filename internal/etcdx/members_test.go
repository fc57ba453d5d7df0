package etcdx

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestChooseSource(t *testing.T) {
	leader := uint64(1)
	m := func(ep string, id, applied uint64, mod ...func(*MemberStatus)) MemberStatus {
		s := MemberStatus{Endpoint: ep, ID: id, Leader: leader, AppliedIndex: applied, RaftIndex: applied}
		for _, f := range mod {
			f(&s)
		}
		return s
	}
	down := func(s *MemberStatus) { s.Err = s.Endpoint + ": connection refused" }
	alarm := func(s *MemberStatus) { s.Alarms = []string{"alarm:NOSPACE"} }
	learner := func(s *MemberStatus) { s.IsLearner = true }

	cases := []struct {
		name     string
		in       []MemberStatus
		want     []string // ranked endpoints
		wantWhy  string
		wantFail string
	}{
		{"equal indexes prefer a follower", []MemberStatus{m("a", 1, 10), m("b", 2, 10), m("c", 3, 10)}, []string{"b", "c", "a"}, "a follower", ""},
		{"highest applied index wins, even the leader", []MemberStatus{m("a", 1, 12), m("b", 2, 10), m("c", 3, 11)}, []string{"a", "c", "b"}, "the leader", ""},
		{"down, alarmed and learner members are skipped", []MemberStatus{m("a", 1, 10, down), m("b", 2, 99, alarm), m("c", 3, 99, learner), m("d", 4, 5)}, []string{"d"}, "skipped 3", ""},
		{"nothing usable", []MemberStatus{m("a", 1, 10, down), m("b", 2, 10, alarm)}, nil, "", "no etcd member can be used: a: connection refused; b: alarm alarm:NOSPACE"},
		{"applied index missing falls back to raft index", []MemberStatus{m("a", 2, 0, func(s *MemberStatus) { s.RaftIndex = 7 }), m("b", 3, 6)}, []string{"a", "b"}, "index 7", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ranked, why, err := ChooseSource(tc.in)
			if tc.wantFail != "" {
				require.ErrorIs(t, err, ErrUnavailable)
				require.ErrorContains(t, err, tc.wantFail)
				return
			}
			require.NoError(t, err)
			var got []string
			for _, r := range ranked {
				got = append(got, r.Endpoint)
			}
			require.Equal(t, tc.want, got)
			require.Contains(t, why, tc.wantWhy)
		})
	}
}

func TestDedupe(t *testing.T) {
	in := []MemberStatus{
		{Endpoint: "https://127.0.0.1:2379", ID: 7},
		{Endpoint: "https://10.0.0.1:2379", ID: 7},
		{Endpoint: "https://10.0.0.2:2379", Err: "refused"},
		{Endpoint: "https://10.0.0.3:2379", ID: 9},
	}
	var got []string
	for _, s := range dedupe(in) {
		got = append(got, s.Endpoint)
	}
	require.Equal(t, []string{"https://127.0.0.1:2379", "https://10.0.0.2:2379", "https://10.0.0.3:2379"}, got)
}
