package main

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/backend"
	"github.com/etcdguard/etcdguard/internal/etcdx"
	"github.com/etcdguard/etcdguard/internal/prune"
	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/snapshot"
)

// TestClassFor checks the exit-code classes the agent logs for a failed run.
func TestClassFor(t *testing.T) {
	cases := []struct {
		err   error
		code  int
		class string
	}{
		{fmt.Errorf("save: %w", snapshot.ErrPartial), 3, "partial"},
		{fmt.Errorf("%w: every member refused", etcdx.ErrUnavailable), 4, "etcd unavailable"},
		{fmt.Errorf("%w: s3 down", snapshot.ErrNoTarget), 8, "storage"},
		{fmt.Errorf("prune target s3: %w", fmt.Errorf("s3 down: %w", errors.Join(backend.ErrUnavailable, backend.ErrUnreachable))), 8, "storage"},
		{fmt.Errorf("prune target ssd: %w", fmt.Errorf("%w (%w): taken over", prune.ErrLockLost, repository.ErrLocked)), 6, "locked"},
		{errors.Join(fmt.Errorf("prune target ssd: %w", repository.ErrLocked), fmt.Errorf("prune target s3: %w", backend.ErrDenied)), 6, "locked"},
		{errors.New("something else"), 1, "any other failure"},
	}
	for _, tc := range cases {
		t.Run(tc.class, func(t *testing.T) {
			code, class := classFor(tc.err)
			require.Equal(t, tc.code, code)
			require.Equal(t, tc.class, class)
		})
	}
}
