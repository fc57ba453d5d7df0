package restore

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/deltalog"
	"github.com/etcdguard/etcdguard/internal/etcdx"
	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/snapshot"
	"github.com/etcdguard/etcdguard/internal/testcluster"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

// TestRestoreLatestTakesTheChainThatReachesFurthest: an operator takes a backup by hand
// (`etcdguard snapshot save`, before an upgrade) while the agent streams the delta log of the
// backup before it; the agent does not learn of the new one and its chain goes on. `restore
// latest` (to the newest durable point) then chose the hand-made backup, the newest, which has no
// delta log, and restored its revision: every write after it was lost although the older
// backup's chain holds them all. `--to-revision` past the hand-made backup was refused for the
// same reason ("no target holds a delta log of it").
func TestRestoreLatestTakesTheChainThatReachesFurthest(t *testing.T) {
	ctx := t.Context()
	c, err := testcluster.Start(ctx, testcluster.Options{Size: 1, Command: []string{testenv.Etcd(t, "3.6", "etcd")}, Dir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	cli, err := c.Client(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { cli.Close() })
	puts := func(n int, tag string) int64 {
		var rev int64
		for i := range n {
			resp, err := cli.Put(ctx, fmt.Sprintf("/registry/pods/%s/%d", tag, i), "v")
			require.NoError(t, err)
			rev = resp.Header.Revision
		}
		return rev
	}
	puts(10, "first")
	ecfg := etcdx.Config{Endpoints: c.Endpoints()}
	target := repository.Target{Name: "local", URL: "file://" + filepath.Join(t.TempDir(), "repo")}
	require.NoError(t, target.Normalize())
	b1, err := snapshot.Save(ctx, snapshot.SaveOptions{Etcd: ecfg, Targets: []repository.Target{target}, WorkDir: t.TempDir()})
	require.NoError(t, err)
	repo, err := repository.Open(ctx, target)
	require.NoError(t, err)
	t.Cleanup(func() { repo.Close() })

	var durable atomic.Int64
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := deltalog.Stream(sctx, deltalog.StreamOptions{Client: cli, Local: repo, SealInterval: 300 * time.Millisecond,
			OnDurable: func(p deltalog.Progress) { durable.Store(p.Revision) }}, b1.Manifest, nil)
		done <- err
	}()
	puts(20, "before-the-hand-made-backup")
	time.Sleep(1100 * time.Millisecond) // the hand-made backup is the newest by its start time
	b2, err := snapshot.Save(ctx, snapshot.SaveOptions{Etcd: ecfg, Targets: []repository.Target{target}, WorkDir: t.TempDir()})
	require.NoError(t, err)
	last := puts(20, "after-the-hand-made-backup")
	require.Eventually(t, func() bool { return durable.Load() >= last }, 20*time.Second, 20*time.Millisecond)
	stop()
	require.NoError(t, <-done)

	for _, p := range []Point{{}, {Revision: last}} {
		t.Run(p.String(), func(t *testing.T) {
			o, _ := restoreOpts(t, "", "")
			rep, err := RestoreMember(ctx, MemberOptions{From: "latest", Targets: []repository.Target{target}, Name: o.Name, InitialCluster: o.InitialCluster,
				PeerURLs: o.PeerURLs, DataDir: o.DataDir, Point: p, Now: time.Now()})
			require.NoError(t, err)
			require.Equal(t, last, rep.Reached, "restored from %s (the hand-made backup is %s at revision %d)", rep.Backup, b2.Manifest.ID, b2.Manifest.Revision)
		})
	}
}
