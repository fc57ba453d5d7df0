package snapshot

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/repository"
)

// TestLatest is the one table of what "latest" means: the newest backup (snapshot get, doctor),
// the newest whose copy verifies (restore), the newest of the cluster with its fallback to other
// ids (recover), and the revision and time bounds (point-in-time restore).
func TestLatest(t *testing.T) {
	t0 := time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC)
	// Oldest first, as Load gives them; b and c started within the same second.
	backup := func(id, cluster string, rev int64, minutes int) Entry {
		return Entry{Manifest: repository.Manifest{ID: id, ClusterID: cluster, Revision: rev, Started: t0.Add(time.Duration(minutes) * time.Minute)}}
	}
	catalog := []Entry{
		backup("a", "c1", 100, 0),
		backup("b", "c1", 200, 10),
		backup("c", "c1", 250, 10),
		backup("d", "c2", 10, 20),
		backup("e", "c2", 300, 30),
	}
	bad := func(ids ...string) func(context.Context, Entry) error {
		return func(_ context.Context, e Entry) error {
			for _, id := range ids {
				if e.Manifest.ID == id {
					return fmt.Errorf("copy of %s is damaged", id)
				}
			}
			return nil
		}
	}
	tests := []struct {
		name     string
		entries  []Entry // default: catalog
		q        Query
		want     string   // id chosen; "" when an error is expected
		cands    []string // candidates, newest first
		ignored  []string
		others   bool
		rejected int
		err      string
		notFound bool
		// interrupt: the context ends while the first candidate is checked.
		interrupt bool
	}{
		{name: "newest manifest", q: Query{}, want: "e", cands: []string{"e", "d", "c", "b", "a"}},
		{name: "same second: the greater id is newer", entries: catalog[:3], q: Query{}, want: "c", cands: []string{"c", "b", "a"}},
		{name: "empty catalog", entries: []Entry{}, q: Query{}, notFound: true, err: `no target holds backup "latest"`},

		{name: "verified: the newest passes", q: Query{Verify: bad()}, want: "e", cands: []string{"e", "d", "c", "b", "a"}},
		{name: "verified: older ones when newer fail", q: Query{Verify: bad("e", "d")}, want: "c", cands: []string{"e", "d", "c", "b", "a"}, rejected: 2},
		{name: "verified: none passes", q: Query{Verify: bad("a", "b", "c", "d", "e")}, cands: []string{"e", "d", "c", "b", "a"}, rejected: 5, err: "no copy of latest passed its checks: copy of e is damaged"},
		{name: "verified: empty catalog", entries: []Entry{}, q: Query{Verify: bad()}, notFound: true, err: `no target holds backup "latest"`},

		{name: "cluster: newest of that cluster", q: Query{ClusterID: "c1", AnyClusterIfNone: true}, want: "c", cands: []string{"c", "b", "a"}, ignored: []string{"e", "d"}},
		{name: "cluster: no backup has the id, all are considered", q: Query{ClusterID: "c9", AnyClusterIfNone: true}, want: "e", cands: []string{"e", "d", "c", "b", "a"}, others: true},
		{name: "cluster: without fallback none fits", q: Query{ClusterID: "c9"}, ignored: []string{"e", "d", "c", "b", "a"}, notFound: true, err: "no backup is latest of cluster c9"},
		{name: "cluster: fallback on an empty catalog", entries: []Entry{}, q: Query{ClusterID: "c1", AnyClusterIfNone: true}, notFound: true},
		{name: "cluster and verified", q: Query{ClusterID: "c1", Verify: bad("c")}, want: "b", cands: []string{"c", "b", "a"}, ignored: []string{"e", "d"}, rejected: 1},

		{name: "revision: at the bound", q: Query{AtOrBeforeRevision: 250}, want: "d", cands: []string{"d", "c", "b", "a"}},
		{name: "revision: below every backup", q: Query{AtOrBeforeRevision: 9}, notFound: true, err: "no backup is latest at or before revision 9"},
		{name: "revision and cluster", q: Query{ClusterID: "c1", AtOrBeforeRevision: 249}, want: "b", cands: []string{"b", "a"}, ignored: []string{"d"}},
		{name: "revision: the cluster's fallback looks within the bound", q: Query{ClusterID: "c2", AnyClusterIfNone: true, AtOrBeforeRevision: 200}, want: "d", cands: []string{"d"}, ignored: []string{"b", "a"}},

		{name: "time: at the bound", q: Query{AtOrBefore: t0.Add(10 * time.Minute)}, want: "c", cands: []string{"c", "b", "a"}},
		{name: "time: between backups", q: Query{AtOrBefore: t0.Add(25 * time.Minute)}, want: "d", cands: []string{"d", "c", "b", "a"}},
		{name: "time: before every backup", q: Query{AtOrBefore: t0.Add(-time.Second)}, notFound: true, err: "no backup is latest at or before 2026-11-24T02:59:59Z"},
		{name: "time, cluster fallback and verified", q: Query{ClusterID: "c2", AnyClusterIfNone: true, AtOrBefore: t0.Add(15 * time.Minute), Verify: bad("c")}, want: "b", cands: []string{"c", "b", "a"}, others: true, rejected: 1},
		{name: "interrupted: no older backup is tried, none is blamed", interrupt: true, err: "context canceled", cands: []string{"e", "d", "c", "b", "a"}},
		{name: "time and revision", q: Query{AtOrBefore: t0.Add(30 * time.Minute), AtOrBeforeRevision: 200}, want: "d", cands: []string{"d", "b", "a"}},
		// A copy kept out by another run's exclusive lock is not a bad copy: restoring an older
		// backup would lose what the newest holds, and trying each older one on the same target
		// would wait out the lock once per backup.
		{name: "locked: no older backup is tried", q: Query{Verify: func(_ context.Context, e Entry) error {
			return fmt.Errorf("copy of %s: take a read lock: %w", e.Manifest.ID, repository.ErrLocked)
		}}, err: "copy of e: take a read lock", cands: []string{"e", "d", "c", "b", "a"}},
	}
	ids := func(es []Entry) []string {
		var out []string
		for _, e := range es {
			out = append(out, e.Manifest.ID)
		}
		return out
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entries := tt.entries
			if entries == nil {
				entries = catalog
			}
			c := &Catalog{Entries: entries}
			ctx, q, tried := t.Context(), tt.q, 0
			if tt.interrupt {
				var cancel context.CancelFunc
				ctx, cancel = context.WithCancel(ctx)
				defer cancel()
				q.Verify = func(ctx context.Context, _ Entry) error {
					tried++
					cancel()
					return ctx.Err()
				}
			}
			ch, err := c.Latest(ctx, q)
			if tt.interrupt {
				require.ErrorIs(t, err, context.Canceled)
				require.Equal(t, 1, tried)
			}
			if tt.want == "" {
				require.Error(t, err)
				require.ErrorContains(t, err, tt.err)
				require.Equal(t, tt.notFound, errors.Is(err, repository.ErrNotFound), err)
			} else {
				require.NoError(t, err)
				require.Equal(t, tt.want, ch.Entry.Manifest.ID)
			}
			require.Equal(t, tt.cands, ids(ch.Candidates), "candidates")
			require.Equal(t, tt.ignored, ids(ch.Ignored), "ignored")
			require.Equal(t, tt.others, ch.OtherClusters, "other clusters")
			require.Len(t, ch.Rejected, tt.rejected)
			if strings.HasPrefix(tt.name, "locked") {
				require.ErrorIs(t, err, repository.ErrLocked)
				require.NotContains(t, err.Error(), "copy of d", "no older backup is tried")
			}
		})
	}
}
