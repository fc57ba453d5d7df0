package restore

import (
	"math"
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
		{"estimate past int64: capped at the maximum, not the floor", BumpInputs{
			Backup:  RevisionPoint{1 << 40, t0},
			History: []RevisionPoint{{0, t0.Add(-time.Second)}},
			Now:     t0.Add(100 * 365 * 24 * time.Hour),
		}, uint64(MaxBumpedRevision - 1<<40), "capped"},
		{"estimate above the maximum but within int64: capped", BumpInputs{
			Backup:  RevisionPoint{1_000_000, t0},
			History: []RevisionPoint{{0, t0.Add(-time.Second)}},
			Now:     t0.Add(1_000_000_000 * time.Second), // 1e6/s x 1e9 s x 10 = 1e16 > 2^53
		}, uint64(MaxBumpedRevision - 1_000_000), "capped"},
		{"high-water mark near 2^63: capped, never wrapping", BumpInputs{
			Backup:    RevisionPoint{1000, t0},
			HighWater: RevisionPoint{math.MaxInt64 - 10, t0.Add(time.Minute)},
			Now:       t0.Add(2 * time.Minute),
		}, uint64(MaxBumpedRevision - 1000), "capped"},
		{"backup already at the maximum: no bump fits", BumpInputs{
			Backup: RevisionPoint{MaxBumpedRevision, t0},
			Now:    t0.Add(time.Hour),
		}, 0, "--no-bump"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := SizeBump(tc.in)
			require.Equal(t, tc.want, b.Amount, "%v", b.Reasons)
			require.Contains(t, joined(b.Reasons), tc.reason)
			require.NoError(t, CheckBump(tc.in.Backup.Revision, b.Amount), "a sized bump always passes CheckBump")
		})
	}
}

func TestCheckBump(t *testing.T) {
	cases := []struct {
		name     string
		revision int64
		bump     uint64
		ok       bool
	}{
		{"no bump", 5, 0, true},
		{"the floor", 5, MinBump, true},
		{"up to the maximum exactly", 5, uint64(MaxBumpedRevision - 5), true},
		{"one past the maximum", 5, uint64(MaxBumpedRevision - 4), false},
		{"math.MaxInt64", 5, math.MaxInt64, false},
		{"wraps int64", math.MaxInt64 - 3, 10, false},
		{"past int64 as uint64", 5, math.MaxUint64, false},
		{"no bump on a revision above the maximum", MaxBumpedRevision + 1, 0, true},
		{"any bump on a revision above the maximum", MaxBumpedRevision + 1, 1, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckBump(tc.revision, tc.bump)
			if tc.ok {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrBumpTooLarge)
			require.ErrorContains(t, err, "the highest etcdguard bumps to")
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
