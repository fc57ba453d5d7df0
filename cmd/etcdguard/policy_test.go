package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

type policyOut struct {
	Worst   string `json:"worst"`
	Targets []struct {
		Name   string    `json:"name"`
		Seen   bool      `json:"seen"`
		SeenAt time.Time `json:"seen_at"`
	} `json:"targets"`
	Backups []struct {
		ID      string   `json:"id"`
		Copies  int      `json:"copies"`
		Media   int      `json:"media"`
		Offline int      `json:"offline"`
		Meets   bool     `json:"meets"`
		Targets []string `json:"targets"`
	} `json:"backups"`
	Findings []struct {
		Rule, Severity, Message, Next string
	} `json:"findings"`
}

// TestPolicyCheckIncidentLayout plays the incident's three-target layout (a local SSD, S3, an
// LTO tape that is offline most of the time) over nine days with a real cluster and MinIO: the
// 3-2-1 check passes with the tape mounted and fresh; the tape is unmounted and backups go on
// to the SSD and S3; after 3 days the check warns (judged from the tape's recorded inventory),
// after 9 it fails (the tape's newest copy is older than its 7-day limit) and says to mount it
// and copy; once that is done it passes again.
// clock is a clock stopped at t.
func clock(t time.Time) func() time.Time { return func() time.Time { return t } }

func TestPolicyCheckIncidentLayout(t *testing.T) {
	c := startCluster(t, "3.6")
	loadData(t, c, 50, 256)
	_, s3URL := startS3(t)
	dir := t.TempDir()
	tape := filepath.Join(dir, "ltfs")
	require.NoError(t, os.Mkdir(tape, 0o700))
	cfg := filepath.Join(dir, "etcdguard.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`endpoints: [%s]
cacert: %s
cert: %s
key: %s
work-dir: %s
state-dir: %s
targets:
  - name: ssd
    url: file://%s
  - name: s3
    url: %q
  - name: tape
    url: file://%s
    offline: true
    media: tape
policy:
  offline-max-age: 168h
`, strings.Join(c.Endpoints(), ", "), c.CAFile, c.ClientCertFile, c.ClientKeyFile, dir, filepath.Join(dir, "state"),
		filepath.Join(dir, "ssd"), s3URL, tape)), 0o600))

	day0 := time.Now().UTC().Truncate(time.Second)
	at := func(days float64) time.Time { return day0.Add(time.Duration(days * float64(24*time.Hour))) }
	check := func(now time.Time, wantCode int) policyOut {
		t.Helper()
		r := etcdguardAt(t, clock(now), "policy", "check", "--config", cfg, "-o", "json")
		require.Equal(t, wantCode, r.code, r.stderr)
		var p policyOut
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &p))
		return p
	}
	finding := func(p policyOut, rule string) (string, string) {
		for _, f := range p.Findings {
			if f.Rule == rule {
				return f.Severity, f.Message + " next: " + f.Next
			}
		}
		t.Fatalf("no %s finding in %+v", rule, p.Findings)
		return "", ""
	}
	save := func(now time.Time) {
		t.Helper()
		r := etcdguardAt(t, clock(now), "snapshot", "save", "--config", cfg)
		require.Contains(t, []int{0, 3}, r.code, r.stderr) // 3: the tape is not mounted
	}

	save(at(0))
	p := check(at(0.1), 0)
	require.Equal(t, "ok", p.Worst)
	require.Len(t, p.Backups, 1)
	require.True(t, p.Backups[0].Meets)
	require.Equal(t, 3, p.Backups[0].Copies)

	// The tape is unmounted (its folder is not there); a backup a day goes on.
	require.NoError(t, os.Rename(tape, tape+".shelf"))
	for d := 1; d <= 9; d++ {
		save(at(float64(d)))
	}
	p = check(at(3.1), 10)
	sev, msg := finding(p, "offline")
	require.Equal(t, "warning", sev, msg)
	require.Contains(t, msg, "tape is not mounted")
	// Its mount point, an empty folder while nothing is mounted, is no reading of the tape.
	require.NoError(t, os.Mkdir(tape, 0o700))
	p = check(at(3.2), 10)
	sev, msg = finding(p, "offline")
	require.Equal(t, "warning", sev, msg)
	require.Contains(t, msg, "tape is not mounted")
	require.NoError(t, os.Remove(tape))

	p = check(at(9.1), 11)
	sev, msg = finding(p, "offline")
	require.Equal(t, "critical", sev, msg)
	require.Contains(t, msg, "the newest offline copy, on tape, is 9.1d old")
	require.Contains(t, msg, "tape has not been mounted since "+at(0.1).Format(time.RFC3339))
	newest := p.Backups[0].ID
	require.Contains(t, msg, "etcdguard snapshot copy --to tape "+newest)
	sev, msg = finding(p, "copies")
	require.Equal(t, "critical", sev, msg)
	require.Contains(t, msg, "has 2 copies")
	r := etcdguardAt(t, clock(at(9.1)), "policy", "check", "--config", cfg)
	require.Equal(t, 11, r.code)
	require.Contains(t, r.stdout, "CRITICAL offline")

	// Mounted again and the newest backup copied: 3-2-1 holds.
	require.NoError(t, os.Rename(tape+".shelf", tape))
	r = etcdguardAt(t, clock(at(9.2)), "snapshot", "copy", "--to", "tape", "--config", cfg, newest)
	require.Equal(t, 0, r.code, r.stderr)
	p = check(at(9.3), 0)
	require.Equal(t, "ok", p.Worst, "%+v", p.Findings)
	require.True(t, p.Backups[0].Meets)
}
