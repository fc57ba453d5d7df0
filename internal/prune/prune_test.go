package prune

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/snapshot"
)

// scenario is a local target holding four weeks of real backups of a real cluster, one every
// three days, most with an ended delta chain, under the local disk's policy of the incident
// (within 7d), and the prune's moment.
type scenario struct {
	dir     string
	keep    *repository.Keep
	now     time.Time
	backups []repository.Manifest // oldest first
	reach   map[string]int64      // the revision each backup's chain reaches; absent: no chain
	// kept and removed are what the policy and the rules around it decide, written by hand.
	kept, removed []string
	open          string // the old backup whose chain is open: kept although the policy drops it
	orphan        string // an ended chain folder whose base is gone: swept
	orphanOpen    string // an open chain folder whose base is not there: left
	incomplete    string // a backup folder with data and no manifest: swept
}

// buildScenario makes the scenario in dir: backups 0 to 9 at days 0, 3, ..., 27; the prune runs
// at day 27 12:00, so 7, 8 and 9 are within 7 days. Backup 1 has no chain (taken by hand), 2's
// chain is open (a writer stopped and never came back), 9's is open (the writer's, now); the
// others' are ended with three segments each.
func buildScenario(t *testing.T, dir string) *scenario {
	t.Helper()
	ecfg := startEtcd(t)
	t0 := time.Date(2026, 11, 1, 3, 0, 0, 0, time.UTC)
	s := &scenario{dir: dir, keep: &repository.Keep{Within: "7d"}, now: t0.Add(27*day + 9*time.Hour), reach: map[string]int64{}}
	tg := localTarget(t, dir, s.keep)
	for i := range 10 {
		s.backups = append(s.backups, save(t, ecfg, t0.Add(time.Duration(i)*3*day), tg))
	}
	repo := openRepo(t, tg)
	for i, m := range s.backups {
		switch i {
		case 1:
		case 2:
			s.reach[m.ID] = writeChain(t, repo, m, 2, false)
		case 9:
			s.reach[m.ID] = writeChain(t, repo, m, 1, false)
		default:
			s.reach[m.ID] = writeChain(t, repo, m, 3, true)
		}
	}
	for i, m := range s.backups {
		switch {
		case i == 2:
			s.open = m.ID
			s.kept = append(s.kept, m.ID)
		case i >= 7:
			s.kept = append(s.kept, m.ID)
		default:
			s.removed = append(s.removed, m.ID)
		}
	}
	// What an interrupted prune and an interrupted save leave, and a shipper's chain whose base
	// this target never got.
	gone := s.backups[4]
	gone.ID = "20261110T030000Z-0000dead"
	writeChain(t, repo, gone, 2, true)
	s.orphan = gone.ID
	lone := s.backups[5]
	lone.ID = "20261116T030000Z-0000beef"
	writeChain(t, repo, lone, 1, false)
	s.orphanOpen = lone.ID
	s.incomplete = "20261127T030000Z-00000bad"
	_, err := repo.Save(t.Context(), "snapshots/"+s.incomplete+"/snapshot.db.zst", strings.NewReader("cut off"))
	require.NoError(t, err)
	return s
}

// requireConsistent checks what every reader needs of the target, whatever state a prune left it
// in: every listed backup verifies, and every listed backup's chain loads without a problem and
// reads back its whole range (a shorter one if a prune stopped inside it).
func requireConsistent(t *testing.T, s *scenario, tg repository.Target) []string {
	t.Helper()
	repo := openRepo(t, tg)
	ms, skipped, err := repo.Manifests(t.Context())
	require.NoError(t, err)
	require.Empty(t, skipped)
	var ids []string
	for _, m := range ms {
		ids = append(ids, m.ID)
		if _, ok := s.reach[m.ID]; !ok {
			continue
		}
		c, err := repo.ListChain(t.Context(), m.ID)
		require.NoError(t, err)
		reach := m.Status.Revision + int64(len(c.Segments))*segmentRevisions
		requireChainReads(t, repo, m, reach)
	}
	rep, err := snapshot.VerifyAll(t.Context(), []repository.Target{tg}, snapshot.VerifyOptions{WorkDir: t.TempDir()})
	require.NoError(t, err)
	require.NoError(t, rep.Err())
	require.Len(t, rep.Copies, len(ms))
	return ids
}

// requireDone checks the target holds exactly what the policy keeps, each kept backup's chain
// whole, and nothing at all of the removed ones, of the orphaned chain or of the incomplete
// backup; the open orphan chain stays.
func requireDone(t *testing.T, s *scenario, tg repository.Target) {
	t.Helper()
	ids := requireConsistent(t, s, tg)
	require.Equal(t, s.kept, ids)
	repo := openRepo(t, tg)
	for _, m := range s.backups {
		if slices.Contains(s.kept, m.ID) {
			requireChainReads(t, repo, m, s.reach[m.ID])
		}
	}
	for _, id := range append(slices.Clone(s.removed), s.orphan, s.incomplete) {
		require.NoDirExists(t, filepath.Join(s.dir, "snapshots", id))
		require.NoDirExists(t, filepath.Join(s.dir, "deltas", id))
	}
	require.DirExists(t, filepath.Join(s.dir, "deltas", s.orphanOpen))
	locks, _ := filepath.Glob(filepath.Join(s.dir, "locks", "*"))
	require.Empty(t, locks, "no lock is left")
}

// TestPruneLocal: a prune of a local target of real backups with delta chains leaves exactly what
// the policy keeps (and the open chain's base, with that reason), every kept backup verifies and
// its chain reads back whole; the removed backups' folders and chains are gone, and so are an
// ended chain whose base was gone and an incomplete backup. The report counts and explains it.
func TestPruneLocal(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	s := buildScenario(t, dir)
	tg := localTarget(t, dir, s.keep)
	var freed int64
	for _, id := range append(slices.Clone(s.removed), s.orphan) {
		for _, sub := range []string{"snapshots", "deltas"} {
			_ = filepath.Walk(filepath.Join(dir, sub, id), func(_ string, fi os.FileInfo, err error) error {
				if err == nil && !fi.IsDir() {
					freed += fi.Size()
				}
				return nil
			})
		}
	}

	rep, err := Run(t.Context(), Options{Targets: []repository.Target{tg}, Now: func() time.Time { return s.now }})
	require.NoError(t, err)
	requireDone(t, s, tg)

	require.Len(t, rep.Targets, 1)
	tr := rep.Targets[0]
	require.Equal(t, StatePruned, tr.State)
	require.Equal(t, "within 7d", tr.Policy)
	require.Equal(t, len(s.kept), tr.Kept)
	require.Equal(t, len(s.removed), tr.Removed)
	require.Zero(t, tr.LockedSkipped)
	require.Empty(t, tr.Errors)
	require.False(t, tr.DeleteMarkers)
	require.Equal(t, freed, tr.BytesRemoved, "the bytes of every object removed with the backups and the orphaned chain")
	require.Contains(t, tr.Swept, "snapshots/"+s.incomplete+"/snapshot.db.zst")
	require.Contains(t, tr.Swept, "deltas/"+s.orphan+"/")
	require.Len(t, tr.Notes, 1)
	require.Contains(t, tr.Notes[0], "deltas/"+s.orphanOpen+"/ has no base backup and no end record: left")

	require.Len(t, tr.Backups, len(s.backups))
	for i, br := range tr.Backups {
		m := s.backups[len(s.backups)-1-i]
		require.Equal(t, m.ID, br.ID, "newest first")
		switch {
		case br.ID == s.open:
			require.Equal(t, ActionKeep, br.Action)
			require.Equal(t, ChainOpen, br.Chain)
			require.Contains(t, br.Reasons[0], "its delta chain is open")
		case slices.Contains(s.kept, br.ID):
			require.Equal(t, ActionKeep, br.Action)
			require.Contains(t, strings.Join(br.Reasons, "; "), "within 7d")
		default:
			require.Equal(t, ActionRemoved, br.Action, br.ID)
			require.Equal(t, []string{"no rule keeps it"}, br.Reasons)
			require.Positive(t, br.Bytes)
		}
	}
	require.Contains(t, tr.Backups[0].Reasons, "the newest verified backup: always kept")

	// A second prune has nothing left to do.
	rep, err = Run(t.Context(), Options{Targets: []repository.Target{tg}, Now: func() time.Time { return s.now }})
	require.NoError(t, err)
	require.Zero(t, rep.Targets[0].Removed)
	require.Empty(t, rep.Targets[0].Swept)
	requireDone(t, s, tg)
}

// TestPruneDryRun: a dry run changes nothing (not a byte, not a modification time, no lock
// file), and reports what a prune would do and why, with the bytes it would free.
func TestPruneDryRun(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	s := buildScenario(t, dir)
	tg := localTarget(t, dir, s.keep)
	before := tree(t, dir)
	rep, err := Run(t.Context(), Options{Targets: []repository.Target{tg}, DryRun: true, Now: func() time.Time { return s.now }})
	require.NoError(t, err)
	require.Equal(t, before, tree(t, dir))

	tr := rep.Targets[0]
	require.True(t, rep.DryRun)
	require.Equal(t, StateDryRun, tr.State)
	require.Equal(t, len(s.kept), tr.Kept)
	require.Equal(t, len(s.removed), tr.Removed)
	require.Positive(t, tr.BytesRemoved)
	require.Equal(t, []string{"deltas/" + s.orphan + "/"}, tr.Swept, "what would be swept")
	var remove []string
	for _, br := range tr.Backups {
		if br.Action == ActionRemove {
			remove = append(remove, br.ID)
			require.Equal(t, []string{"no rule keeps it"}, br.Reasons)
		}
	}
	slices.Sort(remove)
	require.Equal(t, s.removed, remove)

	// What it said is what a prune then does.
	got, err := Run(t.Context(), Options{Targets: []repository.Target{tg}, Now: func() time.Time { return s.now }})
	require.NoError(t, err)
	require.Equal(t, tr.Removed, got.Targets[0].Removed)
	requireDone(t, s, tg)
}
