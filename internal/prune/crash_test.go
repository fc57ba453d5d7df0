package prune

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/failpoint"
	"github.com/etcdguard/etcdguard/internal/repository"
)

// crash is what the armed failpoint panics with: the prune stops there, as if the process had
// been killed (what is stored is what a kill leaves; the lock, which a panic's deferred Unlock
// releases and a kill does not, is the lock protocol's business, and the second run of
// cmd/etcdguard's TestPruneCrash takes a killed run's over).
type crash struct{ at string }

// runCrashingAt runs a prune that stops at the n-th failpoint it crosses (counting from 1), and
// returns the failpoint's name; "" when the prune crossed fewer.
func runCrashingAt(t *testing.T, o Options, n int) (at string) {
	t.Helper()
	seen := 0
	failpoint.Arm(func(name string) {
		if seen++; seen == n {
			panic(crash{name})
		}
	})
	defer failpoint.Arm(func(string) {})
	defer func() {
		if r := recover(); r != nil {
			c, ok := r.(crash)
			if !ok {
				panic(r)
			}
			at = c.at
		}
	}()
	_, err := Run(t.Context(), o)
	require.NoError(t, err)
	return ""
}

// TestPruneCrashAtEveryStep stops a prune at every step boundary it crosses, one after the other
// (after each segment's manifest, each segment's data, a base's manifest, its data, a chain's end
// record; in the removal of backups and in the sweep of a chain whose base is gone): after each
// stop, every backup still listed verifies and its chain loads and reads back without a problem;
// none of the backups the policy keeps is touched; and a second prune finishes the job, leaving
// exactly what an uninterrupted prune leaves.
func TestPruneCrashAtEveryStep(t *testing.T) {
	template := filepath.Join(t.TempDir(), "template")
	s := buildScenario(t, template)

	// Count the step boundaries of an uninterrupted prune, on a copy.
	count := filepath.Join(t.TempDir(), "count")
	copyTree(t, template, count)
	steps := map[string]int{}
	failpoint.Arm(func(name string) { steps[name]++ })
	_, err := Run(t.Context(), Options{Targets: []repository.Target{localTarget(t, count, s.keep)}, Now: func() time.Time { return s.now }})
	failpoint.Arm(func(string) {})
	require.NoError(t, err)
	total := 0
	for _, step := range []string{stepSegmentManifest, stepSegmentData, stepBaseManifest, stepBaseData, stepChainEnd} {
		require.Positive(t, steps[step], "step %s is crossed", step)
		total += steps[step]
	}
	require.Len(t, steps, 5, "no other failpoint: %v", steps)
	t.Logf("an uninterrupted prune crosses %d step boundaries: %v", total, steps)

	for n := 1; n <= total; n++ {
		t.Run(fmt.Sprintf("%02d", n), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "repo")
			copyTree(t, template, dir)
			c := *s
			c.dir = dir
			tg := localTarget(t, dir, s.keep)
			o := Options{Targets: []repository.Target{tg}, Now: func() time.Time { return s.now }}
			at := runCrashingAt(t, o, n)
			require.NotEmpty(t, at, "the prune stopped at step %d", n)
			t.Logf("stopped at %s", at)

			ids := requireConsistent(t, &c, tg)
			for _, id := range s.kept {
				require.Contains(t, ids, id, "a kept backup is never touched")
			}
			repo := openRepo(t, tg)
			for _, m := range s.backups {
				if slices.Contains(s.kept, m.ID) {
					requireChainReads(t, repo, m, s.reach[m.ID])
				}
			}
			// Whatever the stop left (data without a manifest, a shorter chain, a chain folder
			// without its base), readers took it in their stride above; a second prune finishes.
			_, err := Run(t.Context(), o)
			require.NoError(t, err)
			requireDone(t, &c, tg)
			entries, err := os.ReadDir(filepath.Join(dir, "deltas"))
			require.NoError(t, err)
			require.Len(t, entries, len(s.kept)+1, "the kept chains and the open orphan's folder, nothing else")
		})
	}
}
