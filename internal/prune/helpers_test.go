package prune

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/delta"
	"github.com/etcdguard/etcdguard/internal/deltalog"
	"github.com/etcdguard/etcdguard/internal/etcdx"
	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/snapshot"
	"github.com/etcdguard/etcdguard/internal/testcluster"
	"github.com/etcdguard/etcdguard/internal/testenv"
	"github.com/etcdguard/etcdguard/internal/testrepo"
)

const day = 24 * time.Hour

// startEtcd starts a one-member etcd 3.6 cluster for the test and returns how to reach it.
func startEtcd(t *testing.T) etcdx.Config {
	t.Helper()
	c, err := testcluster.Start(t.Context(), testcluster.Options{Size: 1, Command: []string{testenv.Etcd(t, "3.6", "etcd")}, Dir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return etcdx.Config{Endpoints: c.Endpoints(), DialTimeout: 2 * time.Second, CommandTimeout: 5 * time.Second}
}

// save takes a real, verified backup of the cluster into the targets, dated at (its id, started
// and created times), after a few writes so that each backup is at its own revision.
func save(t *testing.T, ecfg etcdx.Config, at time.Time, targets ...repository.Target) repository.Manifest {
	t.Helper()
	cli, err := ecfg.ClusterClient(t.Context())
	require.NoError(t, err)
	defer cli.Close()
	for i := range 3 {
		_, err := cli.Put(t.Context(), fmt.Sprintf("/registry/configmaps/default/c%d", i), at.String())
		require.NoError(t, err)
	}
	res, err := snapshot.Save(t.Context(), snapshot.SaveOptions{Etcd: ecfg, Targets: targets, WorkDir: t.TempDir(), Now: func() time.Time { return at }})
	require.NoError(t, err)
	return res.Manifest
}

// segmentRevisions is how many revisions each test segment holds.
const segmentRevisions = testrepo.SegmentRevisions

// writeChain stores a linked chain of n segments after base (testrepo.WriteChain).
func writeChain(t *testing.T, repo *repository.Repository, base repository.Manifest, n int, ended bool) int64 {
	t.Helper()
	return testrepo.WriteChain(t, repo, base, n, ended)
}

// requireChainReads loads the chain of base and reads every revision of it back, checked against
// the segments' manifests: each revision from the base's to reach is there, in order, once.
func requireChainReads(t *testing.T, repo *repository.Repository, base repository.Manifest, reach int64) {
	t.Helper()
	c, err := deltalog.LoadChain(t.Context(), repo, base)
	require.NoError(t, err)
	require.Empty(t, c.Problem, "chain of %s", base.ID)
	require.Equal(t, reach, c.Reach, "chain of %s", base.ID)
	r := c.NewReader(t.Context(), deltalog.ReadOptions{})
	defer r.Close()
	next := base.Status.Revision + 1
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err, "chain of %s", base.ID)
		if rv, ok := rec.(delta.Revision); ok {
			require.Equal(t, next, rv.Revision, "chain of %s", base.ID)
			next++
		}
	}
	require.Equal(t, reach+1, next, "chain of %s read to its end", base.ID)
}

// localTarget is a local target in dir with a keep: policy.
func localTarget(t *testing.T, dir string, keep *repository.Keep) repository.Target {
	t.Helper()
	tg := repository.Target{Name: "ssd", URL: "file://" + dir, Keep: keep}
	require.NoError(t, tg.Normalize())
	return tg
}

func openRepo(t *testing.T, tg repository.Target) *repository.Repository {
	t.Helper()
	r, err := repository.Open(t.Context(), tg)
	require.NoError(t, err)
	t.Cleanup(func() { r.Close() })
	return r
}

// tree returns every file under dir, by slash path, with its size and modification time: what a
// prune that changes nothing must leave exactly as it was.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		out[filepath.ToSlash(rel)] = fmt.Sprintf("%v %d %d", fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		return nil
	}))
	return out
}

// copyTree copies a repository folder (testenv.CopyTree).
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	testenv.CopyTree(t, src, dst)
}
