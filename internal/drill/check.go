package drill

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/restore"
	"github.com/etcdguard/etcdguard/internal/scratch"
	"github.com/etcdguard/etcdguard/internal/snapshot"
)

// memberCheckTimeout bounds the checks of the running scratch member.
const memberCheckTimeout = time.Minute

// checkDB checks the restored data dir's database before etcd starts on it, with the computation
// that recorded the backup's status (snapshot.ReadStatus: bbolt's check, revision, live keys):
// its revision is the one the drill reached; without a replay its live keys are the manifest's
// total_key; with one, the events replayed are those the sealed segments' manifests record,
// when the replay read exactly those segments. It returns the keys clients will be served.
func checkDB(ctx context.Context, dataDir string, m repository.Manifest, plan *restore.ChainPlan, replay *restore.ReplayResult, res *Result) (int64, error) {
	st, err := snapshot.ReadStatus(ctx, filepath.Join(dataDir, "member", "snap", "db"))
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, failf(ReasonCheck, "the restored database: %w", err)
	}
	if st.Revision != res.Revision {
		return 0, failf(ReasonCheck, "the restored database is at revision %d; the backup and its delta log reach %d", st.Revision, res.Revision)
	}
	res.Checks = append(res.Checks, "restored db bbolt-check", "restored db revision")
	if replay == nil {
		if st.TotalKey != m.Status.TotalKey {
			return 0, failf(ReasonCheck, "the restored database holds %d keys; backup %s records %d", st.TotalKey, m.ID, m.Status.TotalKey)
		}
		res.Checks = append(res.Checks, "restored db keys = manifest total_key")
	} else if plan != nil && !plan.Open && replay.Skipped == 0 && plan.UpTo == 0 {
		var events int64
		for _, s := range plan.Chain.Segments {
			events += int64(s.Events)
		}
		if replay.Events != events || replay.Revisions != res.Revision-res.BackupRevision {
			return 0, failf(ReasonCheck, "the replay applied %d events in %d revisions; the %d segments' manifests record %d events in revisions %d to %d",
				replay.Events, replay.Revisions, len(plan.Chain.Segments), events, res.BackupRevision+1, res.Revision)
		}
		res.Checks = append(res.Checks, "replayed events = segment manifests' events")
	}
	return int64(st.TotalKey - st.BumpKeys), nil
}

// checkMember checks the running scratch member: it serves (a linearizable, count-only range of
// every key at the revision restored), its revision is the one restored, and it counts the keys
// the restored database holds there. Leases restored with the data expire on the member's
// clock and delete their keys in revisions of their own: a member past the revision restored is
// accepted only when every revision after it is such an expiry.
func checkMember(ctx context.Context, mem *scratch.Member, rev, keys int64, res *Result) error {
	ctx, cancel := context.WithTimeout(ctx, memberCheckTimeout)
	defer cancel()
	cli, err := mem.Client(ctx)
	if err != nil {
		return fail(ReasonCheck, err)
	}
	defer cli.Close()
	resp, err := cli.Get(ctx, "", clientv3.WithPrefix(), clientv3.WithCountOnly(), clientv3.WithRev(rev))
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return failf(ReasonCheck, "the scratch member does not serve revision %d: %w", rev, err)
	}
	head := resp.Header.Revision
	if head < rev {
		return failf(ReasonCheck, "the scratch member is at revision %d, before the %d restored", head, rev)
	}
	if resp.Count != keys {
		return failf(ReasonCheck, "the scratch member serves %d keys at revision %d; the restored database holds %d", resp.Count, rev, keys)
	}
	if head > rev {
		if err := onlyLeaseExpiries(ctx, cli, rev, head); err != nil {
			return err
		}
		res.Notes = append(res.Notes, fmt.Sprintf("note: restored leases expired on the scratch member (revisions %d to %d): their keys were deleted, as the cluster would have", rev+1, head))
	}
	res.Checks = append(res.Checks, "member revision", "member keys = restored db keys")
	return nil
}

// onlyLeaseExpiries checks that every revision of the member after from, up to to, deletes keys
// that were attached to a lease and nothing else: what a lease expiring does.
func onlyLeaseExpiries(ctx context.Context, cli *clientv3.Client, from, to int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for wr := range cli.Watch(wctx, "", clientv3.WithPrefix(), clientv3.WithRev(from+1), clientv3.WithPrevKV()) {
		if err := wr.Err(); err != nil {
			return failf(ReasonCheck, "read the scratch member's revisions after %d: %w", from, err)
		}
		seen := from
		for _, ev := range wr.Events {
			if ev.Kv.ModRevision > to {
				seen = to // a lease that expired since the check began
				break
			}
			if ev.Type != mvccpb.DELETE || ev.PrevKv == nil || ev.PrevKv.Lease == 0 {
				return failf(ReasonCheck, "the scratch member wrote revision %d itself, and not by a lease expiring", ev.Kv.ModRevision)
			}
			seen = ev.Kv.ModRevision
		}
		if seen >= to {
			return nil // a revision's events all come in one response
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return failf(ReasonCheck, "the scratch member's watch ended before revision %d", to)
}
