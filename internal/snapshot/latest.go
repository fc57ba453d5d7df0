package snapshot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/etcdguard/etcdguard/internal/repository"
)

// Query says which backups "latest" may name. Its zero value names the newest backup of any
// cluster, unchecked: what `snapshot get latest` and `doctor` use.
type Query struct {
	// ClusterID keeps only backups of that etcd cluster (hex, as in manifests); empty keeps all.
	ClusterID string
	// AnyClusterIfNone considers backups of every cluster id when none within the bounds has
	// ClusterID: a cluster restored earlier has a new id, and its older backups carry the old
	// one. `recover` uses it, and its plan names the backup chosen for the operator to confirm.
	AnyClusterIfNone bool
	// AtOrBeforeRevision keeps only backups whose revision is at most this; 0 means no bound.
	AtOrBeforeRevision int64
	// AtOrBefore keeps only backups whose snapshot was started at or before this time (the
	// time a snapshot stands for); the zero time means no bound.
	AtOrBefore time.Time
	// Verify, when set, is asked about each candidate, newest first: the first it accepts is
	// chosen, and one it rejects is passed over for the next older one (`restore latest`:
	// the newest backup whose copy verifies). Without it the newest candidate is chosen as it
	// is; its manifest was written only after its snapshot was verified.
	Verify func(ctx context.Context, e Entry) error
}

// Choice is the answer to a Query.
type Choice struct {
	// Entry is the backup chosen.
	Entry Entry
	// Candidates are every backup that fits the query, newest first, the chosen one included.
	Candidates []Entry
	// OtherClusters is set when no backup had the query's cluster id and backups of other ids
	// were considered (Query.AnyClusterIfNone).
	OtherClusters bool
	// Ignored are the backups, newest first, left out because of their cluster id.
	Ignored []Entry
	// Rejected holds Verify's reason for each newer candidate passed over, newest first.
	Rejected []error
}

// Latest chooses the backup a query names (see Query), looking at backups newest first by the
// time their snapshot was taken. A query no backup fits fails with repository.ErrNotFound; one
// whose every candidate Verify rejects fails with all the reasons. When the context ends during
// Verify, or Verify was kept out by a lock (repository.ErrLocked), no older backup is tried and
// none is blamed: the error is Verify's.
func (c *Catalog) Latest(ctx context.Context, q Query) (Choice, error) {
	newest := slices.Clone(c.Entries)
	slices.SortStableFunc(newest, func(a, b Entry) int {
		if d := b.Manifest.Started.Compare(a.Manifest.Started); d != 0 {
			return d
		}
		return strings.Compare(b.Manifest.ID, a.Manifest.ID)
	})
	var inBounds []Entry
	for _, e := range newest {
		m := e.Manifest
		if q.AtOrBeforeRevision > 0 && m.Revision > q.AtOrBeforeRevision {
			continue
		}
		if !q.AtOrBefore.IsZero() && m.Started.After(q.AtOrBefore) {
			continue
		}
		inBounds = append(inBounds, e)
	}
	var ch Choice
	clusterID := q.ClusterID
	if clusterID != "" && q.AnyClusterIfNone && len(inBounds) > 0 &&
		!slices.ContainsFunc(inBounds, func(e Entry) bool { return e.Manifest.ClusterID == clusterID }) {
		ch.OtherClusters, clusterID = true, ""
	}
	for _, e := range inBounds {
		if clusterID != "" && e.Manifest.ClusterID != clusterID {
			ch.Ignored = append(ch.Ignored, e)
			continue
		}
		ch.Candidates = append(ch.Candidates, e)
	}
	if len(ch.Candidates) == 0 {
		if q.describe() == "latest" {
			return ch, c.NotFoundError("latest")
		}
		return ch, fmt.Errorf("%w: no backup is %s (list them with: etcdguard snapshot list)", repository.ErrNotFound, q.describe())
	}
	if q.Verify == nil {
		ch.Entry = ch.Candidates[0]
		return ch, nil
	}
	for _, e := range ch.Candidates {
		err := q.Verify(ctx, e)
		if err == nil {
			ch.Entry = e
			return ch, nil
		}
		if ctx.Err() != nil || errors.Is(err, repository.ErrLocked) {
			// Kept out by another run's lock is no verdict on the copy: an older backup would
			// lose what this one holds, and would wait out the same lock again.
			return ch, err
		}
		ch.Rejected = append(ch.Rejected, err)
	}
	return ch, fmt.Errorf("no copy of %s passed its checks: %w", q.describe(), errors.Join(ch.Rejected...))
}

// describe names what a query asks for, in words: "latest", or "latest of cluster X, at or
// before revision N".
func (q Query) describe() string {
	var bounds []string
	if q.ClusterID != "" {
		bounds = append(bounds, "of cluster "+q.ClusterID)
	}
	if q.AtOrBeforeRevision > 0 {
		bounds = append(bounds, fmt.Sprintf("at or before revision %d", q.AtOrBeforeRevision))
	}
	if !q.AtOrBefore.IsZero() {
		bounds = append(bounds, "at or before "+q.AtOrBefore.UTC().Format(time.RFC3339))
	}
	if len(bounds) == 0 {
		return "latest"
	}
	return "latest " + strings.Join(bounds, ", ")
}

// Fetched is a backup chosen by FetchLatest and written to a file.
type Fetched struct {
	Choice
	// Copy is the re-read of the copy that was written.
	Copy CopyReport
	// Skipped lists every copy, of every backup tried, that failed its checks.
	Skipped []error
}

// FetchLatest writes to dst the newest backup that fits q and has a copy that passes every
// check (see FetchBest), trying older backups when none of a backup's copies passes. q.Verify
// is replaced by that fetch.
func FetchLatest(ctx context.Context, lg *slog.Logger, c *Catalog, q Query, identities []age.Identity, dst string) (Fetched, error) {
	var f Fetched
	q.Verify = func(ctx context.Context, e Entry) error {
		rep, skipped, err := FetchBest(ctx, lg, e, identities, dst)
		f.Skipped = append(f.Skipped, skipped...)
		f.Copy = rep
		return err
	}
	ch, err := c.Latest(ctx, q)
	f.Choice = ch
	return f, err
}
