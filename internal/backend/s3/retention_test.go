package s3_test

import (
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/backend"
	"github.com/etcdguard/etcdguard/internal/backend/s3"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

// TestObjectLock: on a bucket with Object Lock, an object under a governance or compliance
// retention that has not run out, or under a legal hold, is locked; one whose retention has run
// out, one with none and a missing one are not. A bucket without Object Lock says so, and whether
// it is versioned. A removal of a locked object on such a bucket writes a delete marker and the
// locked version stays: why prune asks first.
func TestObjectLock(t *testing.T) {
	m := testenv.StartMinIO(t)
	ctx := t.Context()
	mc := m.Client(t)
	require.NoError(t, mc.MakeBucket(ctx, "locked", minio.MakeBucketOptions{ObjectLocking: true}))
	m.CreateBucket(t, "plain")

	plain := newS3(t, m, s3.Config{Bucket: "plain", Prefix: prefix})
	r, err := plain.Retention(ctx)
	require.NoError(t, err)
	require.Equal(t, backend.Retention{}, r)

	b := newS3(t, m, s3.Config{Bucket: "locked", Prefix: prefix})
	r, err = b.Retention(ctx)
	require.NoError(t, err)
	require.Equal(t, backend.Retention{ObjectLock: true, Versioned: true}, r)

	for _, name := range []string{"none", "governance", "compliance", "just-past", "held"} {
		_, err := b.Save(ctx, name, strings.NewReader(name))
		require.NoError(t, err)
	}
	future := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	for name, mode := range map[string]minio.RetentionMode{"governance": minio.Governance, "compliance": minio.Compliance} {
		require.NoError(t, mc.PutObjectRetention(ctx, "locked", prefix+"/"+name, minio.PutObjectRetentionOptions{Mode: &mode, RetainUntilDate: &future}))
	}
	// A retention that ran out: set for a moment, then waited out (and the clock-skew allowance
	// shown by a retention just past: still taken for locked).
	soon := time.Now().Add(2 * time.Second).UTC()
	gov := minio.Governance
	require.NoError(t, mc.PutObjectRetention(ctx, "locked", prefix+"/just-past", minio.PutObjectRetentionOptions{Mode: &gov, RetainUntilDate: &soon}))
	on := minio.LegalHoldEnabled
	require.NoError(t, mc.PutObjectLegalHold(ctx, "locked", prefix+"/held", minio.PutObjectLegalHoldOptions{Status: &on}))

	for _, tc := range []struct {
		name   string
		locked bool
		until  time.Time
	}{
		{"none", false, time.Time{}},
		{"governance", true, future},
		{"compliance", true, future},
		{"held", true, time.Time{}},
		{"missing", false, time.Time{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			locked, until, err := b.Locked(ctx, tc.name)
			require.NoError(t, err)
			require.Equal(t, tc.locked, locked)
			require.True(t, tc.until.Equal(until), "until %s, want %s", until, tc.until)
		})
	}
	time.Sleep(time.Until(soon) + time.Second)
	locked, _, err := b.Locked(ctx, "just-past")
	require.NoError(t, err)
	require.True(t, locked, "a retention past by less than the clock-skew allowance still counts")

	// What a removal does on a versioned bucket: the locked object is gone from listings (a
	// delete marker) while its version stays.
	require.NoError(t, b.Remove(ctx, "governance"))
	_, err = b.Stat(ctx, "governance")
	require.ErrorIs(t, err, backend.ErrNotExist)
	versions := 0
	for o := range mc.ListObjectsIter(ctx, "locked", minio.ListObjectsOptions{Prefix: prefix + "/governance", WithVersions: true}) {
		require.NoError(t, o.Err)
		if !o.IsDeleteMarker {
			versions++
		}
	}
	require.Equal(t, 1, versions, "the locked version stays behind the delete marker")
}
