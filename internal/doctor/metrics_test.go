package doctor

import (
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
	require.Equal(t, 0.004, h.quantile(0.99))
	require.Equal(t, 0.001, h.quantile(0.5))
	require.Equal(t, 0.032, h.quantile(0.999))
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
