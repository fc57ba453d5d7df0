package doctor

import (
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestHistogramQuantile(t *testing.T) {
	text := `# HELP etcd_disk_wal_fsync_duration_seconds The latency distributions of fsync called by WAL.
# TYPE etcd_disk_wal_fsync_duration_seconds histogram
etcd_disk_wal_fsync_duration_seconds_bucket{le="0.001"} 900
etcd_disk_wal_fsync_duration_seconds_bucket{le="0.002"} 980
etcd_disk_wal_fsync_duration_seconds_bucket{le="0.004"} 990
etcd_disk_wal_fsync_duration_seconds_bucket{le="0.032"} 1000
etcd_disk_wal_fsync_duration_seconds_bucket{le="+Inf"} 1000
etcd_disk_wal_fsync_duration_seconds_sum 1.2
etcd_disk_wal_fsync_duration_seconds_count 1000
`
	h := parseHistograms(strings.NewReader(text))["etcd_disk_wal_fsync_duration_seconds"]
	require.Equal(t, float64(1000), h.count)
	for _, tc := range []struct {
		q, want, lower, upper float64
	}{
		{0.99, 0.004, 0.002, 0.004},              // rank 990: the top of the 2-4 ms bucket
		{0.5, 0.001 * 500 / 900, 0, 0.001},       // rank 500 of the first 900, from 0
		{0.999, 0.004 + 0.028*0.9, 0.004, 0.032}, // rank 999: 9 of the 10 in 4-32 ms
	} {
		v, lower, upper := h.quantile(tc.q)
		require.InDelta(t, tc.want, v, 1e-12, "q %v", tc.q)
		require.Equal(t, tc.lower, lower)
		require.Equal(t, tc.upper, upper)
	}
	// A p99 of 9 ms in etcd's 8-16 ms bucket is not taken for 16 ms (above the 10 ms alert).
	slow := histogram{count: 100, buckets: []bucket{{0.008, 98}, {0.016, 100}, {math.Inf(+1), 100}}}
	v, _, _ := slow.quantile(0.99)
	require.InDelta(t, 0.012, v, 1e-12)
	fast := histogram{count: 1000, buckets: []bucket{{0.008, 989}, {0.016, 1000}, {math.Inf(+1), 1000}}}
	v, _, _ = fast.quantile(0.99)
	require.Less(t, v, 0.010)
	// In the +Inf bucket: the highest finite bound.
	v, _, _ = histogram{count: 10, buckets: []bucket{{0.5, 5}, {math.Inf(+1), 10}}}.quantile(0.99)
	require.Equal(t, 0.5, v)
}

func TestParseVersion(t *testing.T) {
	for v, want := range map[string][3]int{"3.5.4": {3, 5, 4}, "v3.6.16": {3, 6, 16}, "3.5.0-rc.1": {3, 5, 0}} {
		maj, min, patch, ok := parseVersion(v)
		require.True(t, ok)
		require.Equal(t, want, [3]int{maj, min, patch})
	}
	_, _, _, ok := parseVersion("garbage")
	require.False(t, ok)
}
