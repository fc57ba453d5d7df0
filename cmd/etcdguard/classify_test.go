package main

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/etcdx"
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
