package cli

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/repository"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// runCLI runs etcdguard's command line in this process with a fixed clock.
func runCLI(t *testing.T, now time.Time, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := NewRootCommand(Env{Stdout: &out, Stderr: &errOut, Getenv: func(string) string { return "" }, Now: func() time.Time { return now }})
	root.SetArgs(args)
	err := root.ExecuteContext(t.Context())
	t.Logf("etcdguard %s:\n%s%s", strings.Join(args, " "), out.String(), errOut.String())
	return out.String(), err
}

// pruneConfig writes a config with two local targets, one with a keep: policy (one backup a day
// for three days) holding six days of backups of a day each, and one without.
func pruneConfig(t *testing.T, now time.Time) (cfg, dir string) {
	t.Helper()
	base := t.TempDir()
	dir = filepath.Join(base, "ssd")
	tg := repository.Target{Name: "ssd", URL: "file://" + dir}
	require.NoError(t, tg.Normalize())
	repo, err := repository.Open(t.Context(), tg)
	require.NoError(t, err)
	defer repo.Close()
	for i := range 6 {
		at := now.Add(-time.Duration(6-i) * 24 * time.Hour)
		id := fmt.Sprintf("%s-0000000%d", at.Format("20060102T150405Z"), i)
		m := repository.Manifest{Format: repository.FormatVersion, Kind: repository.KindFull, ID: id, Started: at, Created: at,
			Verification: repository.Verification{At: at, Checks: []string{"etcd-sha256-trailer", "bbolt-check", "status"}},
			DataObject:   repository.DataObject{Data: "snapshots/" + id + "/snapshot.db", Compression: repository.CompressionNone, StoredSize: 2048}}
		_, err := repo.Save(t.Context(), m.Data, bytes.NewReader(make([]byte, 2048)))
		require.NoError(t, err)
		require.NoError(t, repo.SaveManifest(t.Context(), m))
	}
	cfg = filepath.Join(base, "etcdguard.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`targets:
  - name: ssd
    url: file://%s
    keep: {daily: 3}
  - name: usb
    url: file://%s
`, dir, filepath.Join(base, "usb"))), 0o600))
	return cfg, dir
}

func files(t *testing.T, dir string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			fi, _ := d.Info()
			out[p] = fi.ModTime().UnixNano()
		}
		return err
	}))
	return out
}

// TestPruneCommand: `prune --dry-run` prints every backup of every target with its decision and
// the rule behind it (golden file; go test ./internal/cli -run TestPruneCommand -update rewrites
// it) and changes nothing; `prune -o json` then removes what it said, and reports it in the
// monitoring shape; `--target` picks a configured target with its policy.
func TestPruneCommand(t *testing.T) {
	now := time.Date(2026, 12, 2, 5, 0, 0, 0, time.UTC)
	cfg, dir := pruneConfig(t, now)
	before := files(t, dir)

	out, err := runCLI(t, now, "prune", "--dry-run", "--config", cfg)
	require.NoError(t, err)
	require.Equal(t, before, files(t, dir), "a dry run changes nothing")
	got := strings.ReplaceAll(out, filepath.Dir(dir), "$DIR")
	golden := filepath.Join("testdata", "prune-dry-run.golden")
	if *update {
		require.NoError(t, os.MkdirAll("testdata", 0o755))
		require.NoError(t, os.WriteFile(golden, []byte(got), 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err, "run with -update to create it")
	require.Equal(t, string(want), got)

	out, err = runCLI(t, now, "prune", "--config", cfg, "--target", "ssd", "-o", "json")
	require.NoError(t, err)
	var rep struct {
		DryRun  bool `json:"dry_run"`
		Targets []struct {
			Name         string `json:"name"`
			Kept         int    `json:"kept"`
			Removed      int    `json:"removed"`
			BytesRemoved int64  `json:"bytes_removed"`
			Backups      []struct {
				Action string `json:"action"`
			} `json:"backups"`
		} `json:"targets"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &rep))
	require.False(t, rep.DryRun)
	require.Len(t, rep.Targets, 1, "--target ssd: that target only")
	require.Equal(t, 3, rep.Targets[0].Kept)
	require.Equal(t, 3, rep.Targets[0].Removed)
	require.Equal(t, "removed", rep.Targets[0].Backups[5].Action)
	left, _ := filepath.Glob(filepath.Join(dir, "snapshots", "*"))
	require.Len(t, left, 3)
}

// TestPruneCommandErrors: a bad keep: is a config error that names the target (exit code 2).
func TestPruneCommandErrors(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "etcdguard.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("targets:\n  - name: ssd\n    url: file:///backup/etcd\n    keep: {within: 7days}\n"), 0o600))
	_, err := runCLI(t, time.Now(), "prune", "--config", cfg)
	require.ErrorIs(t, err, ErrUsage)
	require.ErrorContains(t, err, `target "ssd": keep: within: "7days" is not a duration`)
}
