package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/repository"
)

func TestBadConfigs(t *testing.T) {
	want := map[string]string{
		"unknown-key.bad.yml":          "field retention not found",
		"bad-scheme.bad.yml":           `unknown scheme "ftp"`,
		"bad-duration.bad.yml":         `"five seconds" is not a duration`,
		"duplicate-target.bad.yml":     `two targets are named "a"`,
		"bad-compression.bad.yml":      `compression "lz4": use zstd or none`,
		"cluster-unknown-key.bad.yml":  "field peer-urls not found",
		"bad-schedule.bad.yml":         `agent: snapshot-schedule "every half hour" is not a cron schedule`,
		"never-fires.bad.yml":          `agent: snapshot-schedule "0 0 31 2 *" never fires`,
		"s3-credentials.bad.yml":       `target "offsite": parse S3 URL s3://REDACTED@s3.example.com/etcd-backups: credentials do not belong in the URL`,
		"bad-listen.bad.yml":           `agent: listen-address "localhost" is not host:port`,
		"agent-unknown-key.bad.yml":    "field snapshot-interval not found",
		"drill-target-unknown.bad.yml": `agent: drill-target "s4" names no target`,
		"policy-negative.bad.yml":      "policy: copies, media, offline and offline-max-age must not be negative",
		"keep-negative.bad.yml":        `target "ssd": keep: daily is -7: give a count of 0 or more`,
		"keep-bad-within.bad.yml":      `target "s3": keep: within: "30days" is not a duration such as 7d, 30d, 36h or 1d12h`,
		"keep-unknown-key.bad.yml":     "field minutely not found",
		"keep-empty.bad.yml":           `target "ssd": keep: names no rule`,
	}
	files, err := filepath.Glob("testdata/*.bad.yml")
	require.NoError(t, err)
	require.Len(t, files, len(want), "every bad config in testdata has an expected error here")
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, err := Load(f)
			require.Error(t, err)
			require.Contains(t, err.Error(), want[filepath.Base(f)])
			require.True(t, strings.HasPrefix(err.Error(), "config file "+f), "the error names the file: %v", err)
			require.NotContains(t, err.Error(), "SECRETLEAKED")
		})
	}
}

func TestFullConfig(t *testing.T) {
	cfg, err := Load("testdata/full.yml")
	require.NoError(t, err)
	require.Equal(t, []string{"https://10.0.0.1:2379", "https://10.0.0.2:2379"}, cfg.Endpoints)
	require.Equal(t, Duration(3*time.Second), cfg.DialTimeout)
	require.Equal(t, Duration(5*time.Second), cfg.CommandTimeout, "unset values keep their defaults")
	require.Len(t, cfg.Targets, 4)
	require.True(t, cfg.Targets[2].Offline)
	require.Equal(t, "tape", cfg.Targets[2].Media)
	// The incident's regime: a week on the local disk, 30 days in S3, one a month for five years on tape.
	require.Equal(t, &repository.Keep{Within: "7d"}, cfg.Targets[0].Keep)
	require.Equal(t, 7*24*time.Hour, cfg.Targets[0].Keep.WithinDuration())
	require.Equal(t, 30*24*time.Hour, cfg.Targets[1].Keep.WithinDuration())
	require.Equal(t, &repository.Keep{Monthly: 60}, cfg.Targets[2].Keep)
	require.Equal(t, &repository.Keep{Last: 3, Within: "1d12h", Hourly: 24, Daily: 7, Weekly: 4, Monthly: 12, Yearly: 2}, cfg.Targets[3].Keep)
	require.Equal(t, 36*time.Hour, cfg.Targets[3].Keep.WithinDuration())
	require.Equal(t, "zstd", cfg.Compression)
	require.Len(t, cfg.Cluster.Members, 2)
	require.Equal(t, "/etc/kubernetes/manifests/etcd.yaml", cfg.Cluster.Members[0].StaticPodManifest)
	require.Equal(t, "etcd.service", cfg.Cluster.Members[1].SystemdUnit)
	require.Equal(t, []string{"/etc/kubernetes/manifests/kube-apiserver.yaml"}, cfg.Cluster.ControlPlaneManifests)
	require.Equal(t, Agent{SnapshotSchedule: "0 * * * *", ListenAddress: "0.0.0.0:9479", DrillSchedule: "0 2 * * *", DrillTarget: "s3", PruneSchedule: "15 * * * *",
		PolicyCheckInterval: Duration(10 * time.Minute)}, cfg.Agent)
	require.Equal(t, Policy{Copies: 3, Media: 2, Offline: 1, OfflineMaxAge: Duration(14 * 24 * time.Hour)}, cfg.Policy)
}

func TestAgentDefaults(t *testing.T) {
	cfg, err := Parse([]byte("agent:\n  listen-address: 127.0.0.1:0\n"))
	require.NoError(t, err)
	require.Equal(t, DefaultSnapshotSchedule, cfg.Agent.SnapshotSchedule, "a key left out of agent: keeps its default")
	require.Equal(t, "127.0.0.1:0", cfg.Agent.ListenAddress)
}

func TestParseSchedule(t *testing.T) {
	at := time.Date(2026, 12, 2, 1, 7, 30, 0, time.UTC)
	cases := []struct {
		spec string
		next time.Time
	}{
		{"*/30 * * * *", time.Date(2026, 12, 2, 1, 30, 0, 0, time.UTC)},
		{"0 3 * * *", time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)},
		{"@hourly", time.Date(2026, 12, 2, 2, 0, 0, 0, time.UTC)},
		{"*/2 * * * * *", time.Date(2026, 12, 2, 1, 7, 32, 0, time.UTC)}, // seconds: for tests
		{"0 0 29 2 *", time.Date(2028, 2, 29, 0, 0, 0, 0, time.UTC)},     // once in four years
		{"@every 10m", time.Date(2026, 12, 2, 1, 17, 30, 0, time.UTC)},
		{"CRON_TZ=UTC @every 1h", time.Date(2026, 12, 2, 2, 7, 30, 0, time.UTC)},
		{"0 0 31 2 MON", time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC)}, // February 31 or a Monday of February, as in cron
	}
	for _, tc := range cases {
		t.Run(tc.spec, func(t *testing.T) {
			s, err := ParseSchedule(tc.spec)
			require.NoError(t, err)
			require.Equal(t, tc.next, s.Next(at))
		})
	}
	bad := []struct{ spec, err string }{
		{"61 * * * *", `agent: snapshot-schedule "61 * * * *" is not a cron schedule`},
		{"0 0 31 2 *", `agent: snapshot-schedule "0 0 31 2 *" never fires: no date matches its day of month and month`},
		{"0 0 30 2 *", `agent: snapshot-schedule "0 0 30 2 *" never fires`},
		{"0 0 31 4,6,9,11 *", `agent: snapshot-schedule "0 0 31 4,6,9,11 *" never fires`},
		{"CRON_TZ=Europe/Berlin 0 0 31 2 *", `agent: snapshot-schedule "CRON_TZ=Europe/Berlin 0 0 31 2 *" never fires`},
		// robfig/cron panicked on a time zone with nothing after it.
		{"CRON_TZ=UTC", `agent: snapshot-schedule "CRON_TZ=UTC" has a time zone but no schedule after it`},
		{"TZ=Europe/Berlin\t@hourly", `agent: snapshot-schedule "TZ=Europe/Berlin\t@hourly" has a time zone but no schedule after it`},
		// robfig/cron makes a duration under a second one second.
		{"@every -30m", `agent: snapshot-schedule "@every -30m": @every needs a positive duration such as @every 30m (-30m0s would take a snapshot every second)`},
		{"@every 0s", `agent: snapshot-schedule "@every 0s": @every needs a positive duration`},
		{"@every 0", `agent: snapshot-schedule "@every 0": @every needs a positive duration`},
		{"CRON_TZ=UTC @every -1h", `agent: snapshot-schedule "CRON_TZ=UTC @every -1h": @every needs a positive duration`},
		{"TZ=Europe/Berlin   @every -5m", `agent: snapshot-schedule "TZ=Europe/Berlin   @every -5m": @every needs a positive duration`},
	}
	for _, tc := range bad {
		t.Run(tc.spec, func(t *testing.T) {
			_, err := ParseSchedule(tc.spec)
			require.ErrorContains(t, err, tc.err)
		})
	}
}

func TestEmptyFileIsDefaults(t *testing.T) {
	p := filepath.Join(t.TempDir(), "empty.yml")
	require.NoError(t, os.WriteFile(p, nil, 0o600))
	cfg, err := Load(p)
	require.NoError(t, err)
	require.Equal(t, Default(), cfg)
}

// TestKeep: a target's keep: policy, as the config file writes it. Counts must not be negative,
// within is a Go duration or days (7d), positive; a keep: with no rule is refused (it would keep
// the newest backup only); a target without keep: has none (it is never pruned). Each error names
// the target.
func TestKeep(t *testing.T) {
	day := 24 * time.Hour
	cases := []struct {
		keep   string
		want   *repository.Keep
		within time.Duration
		err    string
	}{
		{"", nil, 0, ""},
		{"keep: {within: 7d}", &repository.Keep{Within: "7d"}, 7 * day, ""},
		{"keep: {within: 30d}", &repository.Keep{Within: "30d"}, 30 * day, ""},
		{"keep: {within: 36h}", &repository.Keep{Within: "36h"}, 36 * time.Hour, ""},
		{"keep: {within: 1d12h30m}", &repository.Keep{Within: "1d12h30m"}, day + 12*time.Hour + 30*time.Minute, ""},
		{"keep: {within: 90m, last: 2}", &repository.Keep{Within: "90m", Last: 2}, 90 * time.Minute, ""},
		{"keep: {monthly: 60}", &repository.Keep{Monthly: 60}, 0, ""},
		{"keep: {last: 1, daily: 0}", &repository.Keep{Last: 1}, 0, ""},
		{"keep: {hourly: 24, daily: 7, weekly: 4, yearly: 1}", &repository.Keep{Hourly: 24, Daily: 7, Weekly: 4, Yearly: 1}, 0, ""},

		{"keep: {last: -1}", nil, 0, `target "t": keep: last is -1: give a count of 0 or more`},
		{"keep: {monthly: -60}", nil, 0, `target "t": keep: monthly is -60: give a count of 0 or more`},
		{"keep: {within: -7d}", nil, 0, `target "t": keep: within: "-7d" is negative`},
		{"keep: {within: -36h}", nil, 0, `target "t": keep: within: "-36h" is negative`},
		{"keep: {within: 1d-2h}", nil, 0, `target "t": keep: within: "1d-2h" is not a duration`},
		{"keep: {within: 0d}", nil, 0, `target "t": keep: within: "0d" keeps nothing`},
		{"keep: {within: 0s}", nil, 0, `target "t": keep: within: "0s" keeps nothing`},
		{"keep: {within: 7 days}", nil, 0, `target "t": keep: within: "7 days" is not a duration such as 7d`},
		{"keep: {within: d}", nil, 0, `target "t": keep: within: "d" is not a duration`},
		{"keep: {within: 7w}", nil, 0, `target "t": keep: within: "7w" is not a duration`},
		{"keep: {within: +7d}", nil, 0, `target "t": keep: within: "+7d" is not a duration`},
		{"keep: {within: 99999999999d}", nil, 0, `target "t": keep: within: "99999999999d" is too long`},
		{"keep: {}", nil, 0, `target "t": keep: names no rule`},
		{"keep: {last: 0}", nil, 0, `target "t": keep: names no rule`},
		{"keep: {daily: seven}", nil, 0, "cannot unmarshal"},
		{"keep: {within: 7d, every: 1h}", nil, 0, "field every not found"},
		{"keep: 7d", nil, 0, "cannot unmarshal"},
	}
	for _, tc := range cases {
		t.Run(tc.keep, func(t *testing.T) {
			cfg, err := Parse([]byte("targets:\n  - name: t\n    url: file:///backup/etcd\n    " + tc.keep + "\n"))
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, cfg.Targets[0].Keep)
			if tc.want != nil {
				require.Equal(t, tc.within, tc.want.WithinDuration())
			}
		})
	}
}
