package s3

import (
	"context"
	"fmt"
	"strings"

	"github.com/etcdguard/etcdguard/internal/backend"
)

var _ backend.Sweeper = (*S3)(nil)

// SweepPartial aborts the incomplete multipart uploads of objects whose names start with
// prefix: the parts a process killed mid-upload left behind, which the bucket bills but no
// listing shows.
func (s *S3) SweepPartial(ctx context.Context, prefix string) ([]string, error) {
	var removed []string
	// MinIO lists incomplete uploads only for an exact object name or for the whole bucket,
	// so the bucket is listed and filtered here.
	for u := range s.client.ListIncompleteUploads(ctx, s.bucket, "", true) {
		if u.Err != nil {
			return removed, s.mapErr(ctx, fmt.Sprintf("list incomplete uploads under %q in %s", prefix, s.bucketURL()), u.Err)
		}
		if !strings.HasPrefix(u.Key, s.prefix+prefix) {
			continue
		}
		if err := s.client.RemoveIncompleteUpload(ctx, s.bucket, u.Key); err != nil {
			return removed, s.mapErr(ctx, fmt.Sprintf("abort incomplete upload of %s in %s", u.Key, s.bucketURL()), err)
		}
		removed = append(removed, strings.TrimPrefix(u.Key, s.prefix)+" (incomplete upload)")
	}
	return removed, nil
}
