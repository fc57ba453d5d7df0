package restore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/etcdguard/etcdguard/internal/cluster"
	"github.com/etcdguard/etcdguard/internal/datadir"
	"github.com/etcdguard/etcdguard/internal/etcdx"
	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/snapshot"
)

// Assess looks at every member, read-only: whether it answers, and for those that do not, their
// data dir offline. It also finds the newest verified backup of the cluster.
func (r *Recoverer) Assess(ctx context.Context) ([]cluster.Assessment, *BackupInfo, []RevisionPoint, error) {
	if err := r.Cluster.Validate(); err != nil {
		return nil, nil, nil, err
	}
	if err := r.checkLocalPaths(r.Cluster); err != nil {
		return nil, nil, nil, err
	}
	for _, n := range r.Lost {
		if _, ok := r.Cluster.Member(n); !ok {
			return nil, nil, nil, fmt.Errorf("%w: --lost %q: no member has that name (members: %s)", ErrPlanMismatch, n, memberNames(r.Cluster))
		}
	}
	as := make([]cluster.Assessment, len(r.Cluster.Members))
	var wg sync.WaitGroup
	for i, m := range r.Cluster.Members {
		wg.Go(func() { as[i] = r.assessMember(ctx, m) })
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, nil, nil, fmt.Errorf("assess the members: %w", err)
	}
	if err := r.checkMembership(as); err != nil {
		return as, nil, nil, err
	}
	for _, m := range r.Cluster.Members {
		if !r.local(m) {
			continue
		}
		if _, err := os.Stat(filepath.Dir(m.DataDir)); err != nil {
			return as, nil, nil, fmt.Errorf("%w: member %s: the folder of data-dir %s does not exist (%v): check the data-dir in the cluster description", ErrPlanMismatch, m.Name, m.DataDir, err)
		}
	}
	for _, a := range as {
		// Only a database that passed its checks is opened: bbolt can crash on a damaged one.
		if a.Disk != nil && a.Disk.DBOK {
			if err := checkPeerURLs(r.Cluster, a.Name, readMembership(a.Disk.DBPath)); err != nil {
				return as, nil, nil, err
			}
		}
	}
	if len(r.Targets) == 0 {
		return as, nil, nil, nil
	}
	cat, err := snapshot.Load(ctx, r.Targets)
	if cat != nil {
		defer cat.Close()
	}
	if err != nil {
		r.log().Warn("no backup could be read; only the members' own data can be used", "error", err)
		return as, nil, nil, nil
	}
	// Only backups of this cluster count: the cluster id comes from the members that answer
	// or from their WALs. Backups of another cluster (a test cluster sharing a bucket, an old
	// cluster) are candidates only when no backup has this cluster's id, or when the id is not
	// known (nothing answers, no WAL is readable): then the plan names the backup's cluster id,
	// with a warning when the targets hold backups of several clusters.
	clusterID := ""
	for _, a := range as {
		if a.Disk != nil && a.Disk.ClusterID != 0 {
			clusterID = fmt.Sprintf("%016x", a.Disk.ClusterID)
		}
	}
	if clusterID == "" {
		for _, m := range r.Cluster.Members {
			for _, st := range r.etcdFor(m.ClientURL).Status(ctx, false) {
				if st.Err == "" && st.ClusterID != 0 {
					clusterID = fmt.Sprintf("%016x", st.ClusterID)
				}
			}
			if clusterID != "" {
				break
			}
		}
	}
	// A cluster restored earlier has a new id, and its older backups carry the old one: when no
	// backup has this cluster's id, all are considered, and the plan (which the operator
	// confirms) names the backup and its revision.
	q := r.Point.Query()
	q.ClusterID, q.AnyClusterIfNone = clusterID, true
	ch, err := cat.Latest(ctx, q)
	if ch.OtherClusters {
		r.log().Warn("no backup has this cluster's id; considering backups of other cluster ids (a restored cluster gets a new id)", "cluster", clusterID)
	}
	for _, e := range ch.Ignored {
		r.log().Warn("ignoring a backup of another cluster", "id", e.Manifest.ID, "backup_cluster", e.Manifest.ClusterID, "cluster", clusterID)
	}
	if err != nil {
		return as, nil, nil, nil // no backup: only the members' own data can be used
	}
	if pick := FurthestReaching(ctx, ch.Candidates, r.Point); pick.Manifest.ID != "" && pick.Manifest.ID != ch.Entry.Manifest.ID {
		r.log().Info("an older backup's delta log reaches further than the newest backup: restoring from it", "chosen", pick.Manifest.ID, "newest", ch.Entry.Manifest.ID)
		ch.Entry = pick
	}
	if clusterID == "" {
		ids := map[string]bool{}
		for _, e := range ch.Candidates {
			ids[e.Manifest.ClusterID] = true
		}
		if len(ids) > 1 {
			r.log().Warn("this cluster's id is unknown (no member answers, no WAL is readable) and the targets hold backups of several clusters: the newest of any is chosen; check the plan's backup and its cluster id before confirming", "clusters", len(ids), "chosen", ch.Entry.Manifest.ID, "chosen_cluster", ch.Entry.Manifest.ClusterID)
		}
	}
	var history []RevisionPoint
	for _, e := range ch.Candidates {
		history = append(history, RevisionPoint{Revision: e.Manifest.Revision, At: e.Manifest.Started})
	}
	m := ch.Entry.Manifest
	newest := &BackupInfo{ID: m.ID, ClusterID: m.ClusterID, Revision: m.Revision, Created: m.Started, SHA256: m.SHA256, TotalKey: m.Status.TotalKey - m.Status.BumpKeys, Version: backupVersion(m)}
	history = append(history, marksOf(ctx, ch.Entry)...)
	d, err := r.deltaInfo(ctx, ch.Entry)
	if err != nil {
		return as, nil, nil, err
	}
	newest.Delta = d
	return as, newest, history, nil
}

// backupVersion is the etcd version a backup's data is of: its storage version (etcd 3.6 and
// later), else the server version it was taken from.
func backupVersion(m repository.Manifest) string {
	switch {
	case m.StorageVersion != "":
		return m.StorageVersion
	case m.Status.Version != "":
		return m.Status.Version
	}
	return m.EtcdVersion
}

func (r *Recoverer) assessMember(ctx context.Context, m cluster.Member) cluster.Assessment {
	a := cluster.Assessment{Name: m.Name}
	// A member that answers but has no leader may be in the middle of an election (its peers
	// just came back, or the leader just died): ask again for a few election rounds.
	var st []etcdx.MemberStatus
	for try := 0; try < 6; try++ {
		st = r.etcdFor(m.ClientURL).Status(ctx, false)
		if len(st) != 1 || st[0].Err != "" || st[0].Leader != 0 {
			break
		}
		select {
		case <-ctx.Done():
			try = 6
		case <-time.After(time.Second):
		}
	}
	if len(st) == 1 && st[0].Err == "" && st[0].Leader != 0 && len(st[0].Alarms) == 0 {
		a.Online, a.MemberID, a.Revision = true, st[0].ID, st[0].Revision
		return a
	}
	if len(st) == 1 {
		a.OnlineErr = st[0].Err
		if a.OnlineErr == "" {
			a.OnlineErr = "answers but has no leader or raised an alarm"
		}
	}
	if containsString(r.Lost, m.Name) {
		a.Disk = cluster.LostDisk()
		return a
	}
	if !r.local(m) {
		a.OnlineErr += fmt.Sprintf("; its data dir is on host %s, not readable from %s", m.Host, r.hostname())
		return a // Disk stays nil: unknown, never taken for lost
	}
	// One reading of the inspection, shared with doctor: a data dir etcd runs on (without quorum)
	// counts as intact.
	rep, err := datadir.Inspect(ctx, m.DataDir)
	if err != nil {
		return a // cut short: Assess returns ctx's error
	}
	a.Disk = cluster.DiskOf(rep)
	if rep.DB.OK {
		if v, found, err := ReadDataDirVersions(ctx, m.DataDir); err == nil && found {
			a.Disk.Version = v.Version()
		}
	}
	return a
}

// checkMembership refuses a cluster description that disagrees with what the data dirs say:
// data dirs of different clusters cannot be recovered as one.
func (r *Recoverer) checkMembership(as []cluster.Assessment) error {
	var clusterID uint64
	var first string
	for _, a := range as {
		if a.Disk == nil || a.Disk.ClusterID == 0 {
			continue
		}
		if clusterID == 0 {
			clusterID, first = a.Disk.ClusterID, a.Name
			continue
		}
		if a.Disk.ClusterID != clusterID {
			return fmt.Errorf("%w: the data dir of member %s belongs to cluster %016x, that of %s to cluster %016x: check the data-dir of each member in the cluster description",
				ErrPlanMismatch, first, clusterID, a.Name, a.Disk.ClusterID)
		}
	}
	return nil
}

// deltaInfo says how far the delta log of backup e takes a restore toward r.Point: the point
// itself for a revision, the newest revision received by then for a moment, the newest durable
// one otherwise. Nil when the backup has no delta log (or NoDelta).
func (r *Recoverer) deltaInfo(ctx context.Context, e snapshot.Entry) (*DeltaInfo, error) {
	cp, notes, err := PlanChain(ctx, e, r.Point)
	for _, n := range notes {
		r.log().Warn(n)
	}
	if err != nil || cp == nil {
		return nil, err
	}
	d := &DeltaInfo{Target: cp.Target, Segments: cp.Segments, Open: cp.Open, Problem: cp.Problem}
	switch {
	case cp.UpTo > 0:
		d.UpTo = cp.UpTo
		// Its time: from the segment holding it, when sealed (the open segment's is not read).
		for _, s := range cp.Chain.Segments {
			if s.First <= cp.UpTo && cp.UpTo <= s.Last {
				d.At = s.LastTime
			}
		}
	case !cp.Until.IsZero():
		d.UpTo, d.At, err = cp.Chain.RevisionAt(ctx, r.Identities, cp.Until)
	default:
		d.UpTo, d.At = cp.Tip.Revision, cp.Tip.At
	}
	if err != nil {
		return nil, fmt.Errorf("read the delta log of backup %s in target %s: %w", e.Manifest.ID, cp.Target, err)
	}
	return d, nil
}
