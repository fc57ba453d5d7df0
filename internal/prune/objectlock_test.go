package prune

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/snapshot"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

// TestPruneObjectLock: on a real MinIO bucket with Object Lock, a prune whose policy would remove
// every backup but the newest keeps the ones the storage locks (a governance retention on one's
// data object, a legal hold on another's manifest, a governance retention on a segment of a third
// one's chain), reports them as kept, "locked by the storage", and not as an error; they are still
// listed, verify, and their chains read back whole. The unlocked ones are removed: gone from every
// listing. The bucket is versioned, as every Object Lock bucket is: prune writes delete markers and
// never removes versions, so their bytes stay as noncurrent versions (the report says so) until
// the bucket's lifecycle rule removes them; nor does it bypass the governance mode.
func TestPruneObjectLock(t *testing.T) {
	m := testenv.StartMinIO(t)
	m.SetAWSEnv(t)
	ctx := t.Context()
	mc := m.Client(t)
	require.NoError(t, mc.MakeBucket(ctx, "etcd-backups", minio.MakeBucketOptions{ObjectLocking: true}))
	keep := &repository.Keep{Last: 1}
	tg := repository.Target{Name: "s3", URL: "s3://etcd-backups/prod?endpoint=" + m.Endpoint, Keep: keep}
	require.NoError(t, tg.Normalize())

	ecfg := startEtcd(t)
	t0 := time.Date(2026, 11, 1, 3, 0, 0, 0, time.UTC)
	repo := openRepo(t, tg)
	var backups []repository.Manifest
	reach := map[string]int64{}
	for i := range 6 {
		b := save(t, ecfg, t0.Add(time.Duration(i)*day), tg)
		backups = append(backups, b)
		reach[b.ID] = writeChain(t, repo, b, 2, i < 5)
	}
	key := func(name string) string { return "prod/" + name }
	until := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	gov := minio.Governance
	on := minio.LegalHoldEnabled
	byData := backups[0]
	require.NoError(t, mc.PutObjectRetention(ctx, "etcd-backups", key(byData.Data), minio.PutObjectRetentionOptions{Mode: &gov, RetainUntilDate: &until}))
	byHold := backups[1]
	require.NoError(t, mc.PutObjectLegalHold(ctx, "etcd-backups", key(repository.ManifestName(byHold.ID)), minio.PutObjectLegalHoldOptions{Status: &on}))
	bySegment := backups[2]
	l, err := repo.ListChain(ctx, bySegment.ID)
	require.NoError(t, err)
	require.Len(t, l.Segments, 2)
	segData := l.DataOf(l.Segments[0])
	require.Len(t, segData, 1)
	require.NoError(t, mc.PutObjectRetention(ctx, "etcd-backups", key(segData[0]), minio.PutObjectRetentionOptions{Mode: &gov, RetainUntilDate: &until}))
	locked := []string{byData.ID, byHold.ID, bySegment.ID}
	removed := []string{backups[3].ID, backups[4].ID}
	now := t0.Add(6 * day)

	// The dry run says the same, and changes nothing.
	rep, err := Run(ctx, Options{Targets: []repository.Target{tg}, DryRun: true, Now: func() time.Time { return now }})
	require.NoError(t, err)
	require.Equal(t, 3, rep.Targets[0].LockedSkipped)
	require.Equal(t, 2, rep.Targets[0].Removed)

	rep, err = Run(ctx, Options{Targets: []repository.Target{tg}, Now: func() time.Time { return now }})
	require.NoError(t, err, "locked backups are kept, not an error")
	tr := rep.Targets[0]
	require.Equal(t, StatePruned, tr.State)
	require.Empty(t, tr.Errors)
	require.Equal(t, 3, tr.LockedSkipped)
	require.Equal(t, 4, tr.Kept)
	require.Equal(t, 2, tr.Removed)
	require.True(t, tr.DeleteMarkers)
	for _, br := range tr.Backups {
		switch {
		case slices.Contains(locked, br.ID):
			require.Equal(t, ActionKeep, br.Action)
			require.Contains(t, strings.Join(br.Reasons, "; "), "locked by the storage")
			require.NotNil(t, br.LockedUntil)
			if br.ID == byHold.ID {
				require.True(t, br.LockedUntil.IsZero(), "a legal hold has no end")
			} else {
				require.True(t, until.Equal(*br.LockedUntil), "%s", br.LockedUntil)
			}
		case slices.Contains(removed, br.ID):
			require.Equal(t, ActionRemoved, br.Action)
			require.Nil(t, br.LockedUntil)
		default:
			require.Equal(t, backups[5].ID, br.ID)
			require.Equal(t, ActionKeep, br.Action)
		}
	}

	ms, _, err := repo.Manifests(ctx)
	require.NoError(t, err)
	var ids []string
	for _, m := range ms {
		ids = append(ids, m.ID)
		requireChainReads(t, repo, m, reach[m.ID])
	}
	require.Equal(t, append(slices.Clone(locked), backups[5].ID), ids)
	vr, err := snapshot.VerifyAll(ctx, []repository.Target{tg}, snapshot.VerifyOptions{WorkDir: t.TempDir()})
	require.NoError(t, err)
	require.NoError(t, vr.Err())
	require.Len(t, vr.Copies, 4)

	for _, id := range removed {
		for _, prefix := range []string{repository.BackupPrefix(id), repository.ChainPrefix(id)} {
			current, versions, markers := 0, 0, 0
			for o := range mc.ListObjectsIter(ctx, "etcd-backups", minio.ListObjectsOptions{Prefix: key(prefix), Recursive: true}) {
				require.NoError(t, o.Err)
				current++
			}
			for o := range mc.ListObjectsIter(ctx, "etcd-backups", minio.ListObjectsOptions{Prefix: key(prefix), Recursive: true, WithVersions: true}) {
				require.NoError(t, o.Err)
				if o.IsDeleteMarker {
					markers++
				} else {
					versions++
				}
			}
			require.Zero(t, current, "nothing of %s is listed", prefix)
			require.Positive(t, markers, "%s: delete markers", prefix)
			require.Equal(t, markers, versions, "%s: every object's bytes stay as a noncurrent version behind its marker", prefix)
		}
	}
}
