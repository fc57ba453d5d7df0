package s3

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/etcdguard/etcdguard/internal/backend"
)

// lockClockSkew is how long after its retain-until date an object is still taken for locked. The
// server's clock decides when a retention ends, not this host's; S3 refuses requests signed more
// than 15 minutes away from its own time (Signature Version 4), so a host that can talk to the
// server at all is within 15 minutes of it.
const lockClockSkew = 15 * time.Minute

// Retention reads the bucket's Object Lock and versioning settings.
func (s *S3) Retention(ctx context.Context) (backend.Retention, error) {
	var r backend.Retention
	doing := "read the object lock settings of " + s.bucketURL()
	enabled, _, _, _, err := s.client.GetObjectLockConfig(ctx, s.bucket)
	switch {
	case err == nil:
		r.ObjectLock = enabled == "Enabled"
	case !hasCode(err, "ObjectLockConfigurationNotFoundError"):
		return r, s.mapErr(ctx, doing, err)
	}
	v, err := s.client.GetBucketVersioning(ctx, s.bucket)
	if err != nil {
		return r, s.mapErr(ctx, "read the versioning of "+s.bucketURL(), err)
	}
	r.Versioned = v.Enabled() || v.Suspended()
	return r, nil
}

// Locked reports whether the current version of the object is under a legal hold, or under a
// retention (governance or compliance mode) whose retain-until date has not passed, allowing for
// lockClockSkew. It sends two requests (retention, legal hold); call it only on a bucket whose
// Retention says ObjectLock.
func (s *S3) Locked(ctx context.Context, name string) (bool, time.Time, error) {
	key, err := s.key(name)
	if err != nil {
		return false, time.Time{}, fmt.Errorf("read the object lock of %s in %s: %w", name, s.bucketURL(), err)
	}
	doing := fmt.Sprintf("read the object lock of %s in %s", name, s.bucketURL())
	mode, until, err := s.client.GetObjectRetention(ctx, s.bucket, key, "")
	switch {
	case err == nil && mode != nil && mode.IsValid() && until != nil && time.Now().Before(until.Add(lockClockSkew)):
		return true, until.UTC(), nil
	case err == nil || noLock(err):
	default:
		if err := s.mapErr(ctx, doing, err); !errors.Is(err, backend.ErrNotExist) {
			return false, time.Time{}, err
		}
		return false, time.Time{}, nil
	}
	hold, err := s.client.GetObjectLegalHold(ctx, s.bucket, key, minio.GetObjectLegalHoldOptions{})
	switch {
	case err == nil && hold != nil && *hold == minio.LegalHoldEnabled:
		return true, time.Time{}, nil
	case err == nil || noLock(err):
		return false, time.Time{}, nil
	}
	if err := s.mapErr(ctx, doing, err); !errors.Is(err, backend.ErrNotExist) {
		return false, time.Time{}, err
	}
	return false, time.Time{}, nil
}

// noLock reports the error S3 answers for an object that has no retention, or no legal hold.
func noLock(err error) bool { return hasCode(err, "NoSuchObjectLockConfiguration") }

// hasCode reports whether err is an S3 error response with the code.
func hasCode(err error, code string) bool {
	var resp minio.ErrorResponse
	return errors.As(err, &resp) && resp.Code == code
}
