package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/repository"
)

func TestEvaluate(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	day := 24 * time.Hour
	held := func(ids ...string) []Held {
		var hs []Held
		for _, id := range ids {
			d, _ := time.ParseDuration(id[1:])
			hs = append(hs, Held{ID: id, Started: ago(d)})
		}
		return hs
	}
	// Backup ids here are "b<age>" so the table reads as what each target holds.
	ssd := Target{Name: "ssd", Media: "disk", Seen: true, Backups: held("b1h", "b25h", "b200h")}
	s3 := Target{Name: "s3", Media: "s3", Seen: true, Backups: held("b1h", "b25h", "b200h")}
	tape := func(seen bool, seenAt time.Time, ids ...string) Target {
		return Target{Name: "tape", Media: "tape", Offline: true, Seen: seen, SeenAt: seenAt, Backups: held(ids...)}
	}
	for _, tc := range []struct {
		name    string
		targets []Target
		worst   string
		// wants maps a rule to its severity and words its message or next step must hold.
		wants map[string][]string
	}{
		{"all three, the tape mounted and fresh", []Target{ssd, s3, tape(true, now, "b25h")}, OK,
			map[string][]string{"offline": {OK, "on tape, is 25h0m0s old"}, "copies": {OK, "3 copies"}, "media": {OK, "3 kind"}}},
		{"the tape unmounted, its inventory fresh", []Target{ssd, s3, tape(false, ago(2*day), "b25h")}, Warning,
			map[string][]string{"offline": {Warning, "tape is not mounted"}, "copies": {OK}}},
		{"the tape unmounted longer than its limit", []Target{ssd, s3, tape(false, ago(8*day), "b200h")}, Critical,
			map[string][]string{"offline": {Critical, "8.3d old", "has not been mounted since", "snapshot copy --to tape b1h"}, "copies": {Critical, "2 copies"}, "media": {OK, "2 kind"}}},
		{"the tape never read", []Target{ssd, s3, tape(false, time.Time{})}, Critical,
			map[string][]string{"offline": {Critical, "no offline target holds any backup", "never been read"}}},
		{"two disks and a tape", []Target{ssd, {Name: "ssd2", Media: "disk", Seen: true, Backups: held("b1h")}, tape(true, now, "b1h")}, OK,
			map[string][]string{"media": {OK, "2 kind"}}},
		{"disks only, no offline", []Target{ssd, {Name: "ssd2", Media: "disk", Seen: true, Backups: held("b1h")}}, Critical,
			map[string][]string{"media": {Critical, "1 kind"}, "copies": {Critical, "2 copies"}, "offline": {Critical}}},
		{"the newest not copied to s3 yet", []Target{{Name: "ssd", Media: "disk", Seen: true, Backups: held("b1m", "b1h")}, s3, tape(true, now, "b25h")}, Critical,
			map[string][]string{"copies": {Critical, "2 copies", "not in [s3]"}}},
		{"an online target unreadable", []Target{ssd, {Name: "s3", Media: "s3", Error: "connection refused"}, tape(true, now, "b1h")}, Critical,
			map[string][]string{"readable": {Warning, "s3 could not be read: connection refused"}, "copies": {Critical}}},
		// The host's clock went back a day (an RTC reset after a power cut): the tape's copy
		// looks fresh for as long as the clock is wrong.
		{"a backup dated after now", []Target{{Name: "ssd", Media: "disk", Seen: true, Backups: held("b-30h")},
			{Name: "s3", Media: "s3", Seen: true, Backups: held("b-30h")}, tape(true, now, "b-30h")}, Warning,
			map[string][]string{"clock": {Warning, "b-30h", "went backwards", "etcdguard doctor"}, "offline": {OK}}},
		{"an inventory read after now", []Target{ssd, s3, tape(false, now.Add(48*time.Hour), "b25h")}, Warning,
			map[string][]string{"clock": {Warning, "inventory of tape"}}},
		{"nothing anywhere", []Target{{Name: "ssd", Media: "disk", Seen: true}}, Critical,
			map[string][]string{"copies": {Critical, "no target holds any backup"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep := Evaluate(tc.targets, DefaultRules, now)
			if rep.Worst != tc.worst {
				t.Errorf("worst = %s, want %s; findings %+v", rep.Worst, tc.worst, rep.Findings)
			}
			for rule, want := range tc.wants {
				var f *Finding
				for i := range rep.Findings {
					if rep.Findings[i].Rule == rule {
						f = &rep.Findings[i]
					}
				}
				if f == nil {
					t.Errorf("no finding for rule %s", rule)
					continue
				}
				if f.Severity != want[0] {
					t.Errorf("%s: severity %s, want %s (%s)", rule, f.Severity, want[0], f.Message)
				}
				for _, w := range want[1:] {
					if !strings.Contains(f.Message+" "+f.Next, w) {
						t.Errorf("%s: %q lacks %q", rule, f.Message+" next: "+f.Next, w)
					}
				}
			}
		})
	}
}

func TestEvaluateBackupRows(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	a, b := Held{ID: "a", Started: now.Add(-2 * time.Hour)}, Held{ID: "b", Started: now.Add(-time.Hour)}
	rep := Evaluate([]Target{
		{Name: "ssd", Media: "disk", Seen: true, Backups: []Held{a, b}},
		{Name: "s3", Media: "s3", Seen: true, Backups: []Held{a, b}},
		{Name: "tape", Media: "tape", Offline: true, Seen: true, Backups: []Held{a}},
	}, DefaultRules, now)
	if len(rep.Backups) != 2 || rep.Backups[0].ID != "b" {
		t.Fatalf("rows %+v, want b then a", rep.Backups)
	}
	if r := rep.Backups[0]; r.Copies != 2 || r.Media != 2 || r.Offline != 0 || r.Meets {
		t.Errorf("b: %+v, want 2 copies, 2 media, no offline, not 3-2-1 alone", r)
	}
	if r := rep.Backups[1]; r.Copies != 3 || r.Media != 3 || r.Offline != 1 || !r.Meets {
		t.Errorf("a: %+v, want 3 copies, 3 media, 1 offline, 3-2-1", r)
	}
	if rep.Worst != OK {
		t.Errorf("worst %s: the tape's copy of a counts for the newest (%+v)", rep.Worst, rep.Findings)
	}
}

// TestCheckInventories runs Check over real file:// targets: an offline target whose mount point
// is there but empty (the medium is not mounted), a state dir that cannot be written, a damaged
// inventory, every target unreadable. Each still gives a report, not an error, and never loses
// a recorded inventory.
func TestCheckInventories(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	seenAt := now.Add(-24 * time.Hour)
	recorded := inventory{SeenAt: seenAt, Backups: []Held{{ID: "b1", Started: now.Add(-30 * time.Hour)}}}
	tape := func(t *testing.T, mkdir bool) repository.Target {
		dir := filepath.Join(t.TempDir(), "mnt", "tape")
		if mkdir {
			require.NoError(t, os.MkdirAll(dir, 0o700))
		}
		tg, err := repository.ParseTarget("file://" + dir + "?offline=true&media=tape&name=tape")
		require.NoError(t, err)
		return tg
	}
	check := func(t *testing.T, stateDir string, targets ...repository.Target) Report {
		t.Helper()
		rep, err := Check(t.Context(), Options{Targets: targets, Rules: DefaultRules, StateDir: stateDir, Now: func() time.Time { return now }})
		require.NoError(t, err, "the check gives a report")
		return rep
	}
	finding := func(rep Report, rule string) Finding {
		for _, f := range rep.Findings {
			if f.Rule == rule {
				return f
			}
		}
		return Finding{}
	}

	t.Run("the mount point is empty: the medium is not mounted", func(t *testing.T) {
		state := t.TempDir()
		require.NoError(t, writeInventory(state, "tape", recorded))
		rep := check(t, state, tape(t, true))
		tp := rep.Targets[0]
		require.False(t, tp.Seen, "an empty listing of a medium that held backups is not a reading of it")
		require.Equal(t, recorded.Backups, tp.Backups)
		require.Contains(t, tp.Error, "mounted")
		require.Equal(t, Warning, finding(rep, "offline").Severity, "judged from the inventory: %+v", rep.Findings)
		inv, err := readInventory(state, "tape")
		require.NoError(t, err)
		require.Equal(t, recorded.Backups, inv.Backups, "the inventory is kept")
	})
	t.Run("the state dir cannot be written", func(t *testing.T) {
		state := filepath.Join(t.TempDir(), "state")
		require.NoError(t, os.WriteFile(state, nil, 0o600)) // a file: nothing can be made under it
		rep := check(t, state, tape(t, true))
		require.True(t, rep.Targets[0].Seen)
		f := finding(rep, "inventory")
		require.Equal(t, Warning, f.Severity, "%+v", rep.Findings)
		require.Contains(t, f.Message, "tape")
	})
	t.Run("a damaged inventory", func(t *testing.T) {
		state := t.TempDir()
		require.NoError(t, os.MkdirAll(filepath.Join(state, "inventory"), 0o700))
		require.NoError(t, os.WriteFile(inventoryPath(state, "tape"), []byte("{not json"), 0o600))
		rep := check(t, state, tape(t, false))
		require.Equal(t, Critical, finding(rep, "offline").Severity)
		f := finding(rep, "inventory")
		require.Equal(t, Warning, f.Severity, "%+v", rep.Findings)
		require.Contains(t, f.Message, "does not read")
	})
	t.Run("every target unreadable", func(t *testing.T) {
		state := t.TempDir()
		require.NoError(t, writeInventory(state, "tape", recorded))
		rep := check(t, state, tape(t, false))
		require.Equal(t, recorded.Backups, rep.Targets[0].Backups, "judged from its inventory")
		require.Equal(t, Warning, finding(rep, "offline").Severity, "%+v", rep.Findings)
	})
}

// TestCheckSamePlace: one folder named by three targets (its path, a symlink to it, the path
// with a trailing slash) is one copy on one medium, whatever media the targets claim.
func TestCheckSamePlace(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	dir := filepath.Join(t.TempDir(), "real")
	require.NoError(t, os.MkdirAll(dir, 0o700))
	link := filepath.Join(filepath.Dir(dir), "link")
	require.NoError(t, os.Symlink(dir, link))
	var targets []repository.Target
	for _, spec := range []string{"file://" + dir + "?name=a", "file://" + link + "?name=b&media=usb", "file://" + dir + "/?name=c&media=tape"} {
		tg, err := repository.ParseTarget(spec)
		require.NoError(t, err)
		targets = append(targets, tg)
	}
	repo, err := repository.Open(t.Context(), targets[0])
	require.NoError(t, err)
	defer repo.Close()
	m := repository.Manifest{Format: 1, ID: "20261202T110000Z-0000abcd", Kind: repository.KindFull, ClusterID: "1", Revision: 5,
		Started: now.Add(-time.Hour), Created: now.Add(-time.Hour), Status: repository.SnapshotStatus{Revision: 5}}
	m.Data, m.Compression = "snapshots/"+m.ID+"/snapshot.db", repository.CompressionNone
	require.NoError(t, repo.SaveManifest(t.Context(), m))

	rep, err := Check(t.Context(), Options{Targets: targets, Rules: DefaultRules, Now: func() time.Time { return now }})
	require.NoError(t, err)
	require.Len(t, rep.Backups, 1)
	require.Equal(t, 1, rep.Backups[0].Copies, "%+v", rep.Backups[0])
	require.Equal(t, 1, rep.Backups[0].Media)
	require.Equal(t, []string{"a"}, rep.Backups[0].Targets)
	var same []string
	for _, f := range rep.Findings {
		if f.Rule == "same-place" {
			require.Equal(t, Warning, f.Severity)
			same = append(same, f.Message)
		}
	}
	require.Equal(t, []string{
		"targets a and b are the same place: their backups are one copy, counted once",
		"targets a and c are the same place: their backups are one copy, counted once",
	}, same)
	require.Equal(t, Critical, rep.Worst, "one copy on one disk breaks 3-2-1")
}
