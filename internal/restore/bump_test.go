package restore

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestSizeBump(t *testing.T) {
	t0 := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name   string
		in     BumpInputs
		want   uint64
		reason string
	}{
		{"nothing known: the floor", BumpInputs{Backup: RevisionPoint{1000, t0}, Now: t0.Add(5 * time.Hour)}, MinBump, "no revision rate known"},
		{"slow cluster: still the floor", BumpInputs{
			Backup:  RevisionPoint{1000, t0},
			History: []RevisionPoint{{400, t0.Add(-time.Hour)}},
			Now:     t0.Add(time.Hour),
		}, MinBump, "peak rate"},
		{"busy cluster, old backup: rate x age x 10", BumpInputs{
			Backup:  RevisionPoint{1_000_000, t0},
			History: []RevisionPoint{{640_000, t0.Add(-30 * time.Minute)}, {100_000, t0.Add(-2 * time.Hour)}},
			Now:     t0.Add(5 * time.Hour),
		}, 200 * 5 * 3600 * 10, "peak rate 200.0 revisions/s"},
		{"high-water mark far above", BumpInputs{
			Backup:    RevisionPoint{1000, t0},
			HighWater: RevisionPoint{5_001_000, t0.Add(time.Minute)},
			Now:       t0.Add(2 * time.Minute),
		}, 100_000_000, "high-water mark 5001000"}, // the rate to the mark (83,333/s x 120 s x 10) dominates 2 x the gap
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := SizeBump(tc.in)
			require.Equal(t, tc.want, b.Amount, "%v", b.Reasons)
			require.Contains(t, joined(b.Reasons), tc.reason)
		})
	}
}

func joined(ss []string) string {
	out := ""
	for _, s := range ss {
		out += s + "; "
	}
	return out
}
