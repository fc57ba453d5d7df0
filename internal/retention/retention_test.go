package retention

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// every returns backups every step from start, n of them, all verified.
func every(start time.Time, step time.Duration, n int) []Backup {
	out := make([]Backup, n)
	for i := range out {
		t := start.Add(time.Duration(i) * step)
		out[i] = Backup{ID: fmt.Sprintf("%s-%04d", t.Format("20060102T150405Z"), i), Time: t, Verified: true}
	}
	return out
}

var day = 24 * time.Hour

// TestApplyGolden runs the policy over synthetic backups and compares each decision and its
// reasons with a golden file (go test ./internal/retention -update rewrites them). The cases
// include the incident's regime: the local disk keeps 7 days, S3 STANDARD_IA 30 days, the archive
// (Deep Archive, tape) one backup a month for 5 years.
func TestApplyGolden(t *testing.T) {
	start := time.Date(2020, 12, 1, 0, 30, 0, 0, time.UTC)
	cases := []struct {
		name    string
		backups []Backup
		policy  Policy
		now     time.Time
	}{
		{"local-7-days", every(start, time.Hour, 10*24), Policy{Within: 7 * day}, start.Add(10 * day)},
		{"s3-30-days", every(start, 6*time.Hour, 40*4), Policy{Within: 30 * day}, start.Add(40 * day)},
		{"archive-monthly-5-years", every(start, 7*day, 6*52), Policy{Monthly: 60}, start.Add(6 * 52 * 7 * day)},
		{"gfs", every(start, 6*time.Hour, 400*4), Policy{Last: 3, Hourly: 6, Daily: 7, Weekly: 4, Monthly: 12, Yearly: 2}, start.Add(400 * day)},
		{"nothing-stored", nil, Policy{Within: 7 * day, Monthly: 60}, start},
		{"clock-jumped-backwards", every(start, 12*time.Hour, 20), Policy{Within: 2 * day}, start.Add(5 * day)},
		{"newest-not-verified", append(every(start, day, 5), Backup{ID: "20201206T003000Z-unverified", Time: start.Add(5 * day)}), Policy{}, start.Add(30 * day)},
		{"locked-ones-stay", func() []Backup {
			bs := every(start, day, 10)
			bs[2].Locked, bs[3].Locked = true, true
			return bs
		}(), Policy{Last: 2}, start.Add(10 * day)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := Summary(Apply(tc.backups, tc.policy, tc.now))
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
			}
			want, err := os.ReadFile(path)
			require.NoError(t, err, "run with -update to create it")
			require.Equal(t, string(want), got)
		})
	}
}

// TestApplyYearsOfHourlyBackups: the incident's regime over five years and a month of hourly
// full backups (44,600 of them, each with its delta chain, which goes with it), one golden file
// per tier holding what is kept and why, and how many go.
func TestApplyYearsOfHourlyBackups(t *testing.T) {
	start := time.Date(2021, 11, 1, 0, 15, 0, 0, time.UTC)
	now := start.Add(5*365*day + 31*day)
	bs := every(start, time.Hour, int(now.Sub(start)/time.Hour))
	for _, tc := range []struct {
		name   string
		policy Policy
		kept   int // what the policy keeps: the hours of the window (the backup exactly 7 days old is not within it), or one a month
	}{
		{"years-hourly-local-7-days", Policy{Within: 7 * day}, 7*24 - 1},
		{"years-hourly-s3-30-days", Policy{Within: 30 * day}, 30*24 - 1},
		{"years-hourly-archive-monthly-60", Policy{Monthly: 60}, 60},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var kept []Decision
			removed := 0
			for _, d := range Apply(bs, tc.policy, now) {
				if d.Keep {
					kept = append(kept, d)
				} else {
					removed++
				}
			}
			require.Equal(t, tc.kept, len(kept))
			require.Equal(t, len(bs), len(kept)+removed)
			got := Summary(kept) + fmt.Sprintf("removed: %d of %d\n", removed, len(bs))
			path := filepath.Join("testdata", tc.name+".golden")
			if *update {
				require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
			}
			want, err := os.ReadFile(path)
			require.NoError(t, err, "run with -update to create it")
			require.Equal(t, string(want), got)
		})
	}
}

// TestApplyAlwaysKeeps: whatever the policy, the newest verified backup and every locked one are
// kept, every backup gets a reason, and the decisions do not depend on the input's order.
func TestApplyAlwaysKeeps(t *testing.T) {
	now := time.Date(2026, 12, 2, 5, 0, 0, 0, time.UTC)
	bs := every(now.Add(-400*day), 13*time.Hour, 700)
	bs[10].Locked = true
	bs[len(bs)-1].Verified = false
	for _, p := range []Policy{{}, {Last: 1}, {Within: time.Hour}, {Daily: 3}, {Monthly: 2, Yearly: 1}} {
		ds := Apply(bs, p, now)
		require.Len(t, ds, len(bs))
		byID := map[string]Decision{}
		for _, d := range ds {
			require.NotEmpty(t, d.Reasons)
			byID[d.Backup.ID] = d
		}
		require.True(t, byID[bs[len(bs)-2].ID].Keep, "the newest verified backup, %+v", p)
		require.True(t, byID[bs[10].ID].Keep, "a locked backup, %+v", p)
		rev := make([]Backup, len(bs))
		for i := range bs {
			rev[i] = bs[len(bs)-1-i]
		}
		require.Equal(t, Summary(ds), Summary(Apply(rev, p, now)), "the input's order does not matter")
	}
}
