package etcdx

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/testcluster"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

// TestWaits runs the cluster waits against a real three-member cluster: a linearizable read
// through any member while it has quorum; ErrUnavailable, after the limit, once two members are
// killed; quorum again once one of them is back.
func TestWaits(t *testing.T) {
	versions := testenv.EtcdVersions()
	c, err := testcluster.Start(t.Context(), testcluster.Options{
		Size: 3, Command: []string{testenv.Etcd(t, versions[len(versions)-1], "etcd")}, Dir: t.TempDir(),
	})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	ms := c.Members()
	var cfg Config

	for _, m := range ms {
		require.NoError(t, cfg.Linearizable(t.Context(), m.ClientURL), m.Name)
	}
	ep, err := cfg.WaitQuorum(t.Context(), c.Endpoints(), 10*time.Second)
	require.NoError(t, err)
	require.Contains(t, c.Endpoints(), ep)
	require.NoError(t, cfg.WaitServing(t.Context(), ms[2].Name, ms[2].ClientURL, 10*time.Second))

	require.NoError(t, ms[0].Kill())
	require.NoError(t, ms[1].Kill())
	_, err = cfg.WaitQuorum(t.Context(), c.Endpoints(), time.Second)
	require.ErrorIs(t, err, ErrUnavailable)
	require.ErrorContains(t, err, "no quorum after 1s")
	err = cfg.WaitServing(t.Context(), ms[2].Name, ms[2].ClientURL, time.Second)
	require.ErrorIs(t, err, ErrUnavailable)
	require.ErrorContains(t, err, "member "+ms[2].Name+" not serving after 1s")
	err = cfg.WaitServing(t.Context(), ms[0].Name, ms[0].ClientURL, time.Second)
	require.Equal(t, FaultRefused, FaultOf(err), "the killed member's own cause is kept: %v", err)

	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	_, err = cfg.WaitQuorum(canceled, c.Endpoints(), time.Minute)
	require.ErrorIs(t, err, context.Canceled)

	require.NoError(t, ms[0].Restart(t.Context()))
	ep, err = cfg.WaitQuorum(t.Context(), c.Endpoints(), time.Minute)
	require.NoError(t, err)
	require.Contains(t, []string{ms[0].ClientURL, ms[2].ClientURL}, ep)
}
