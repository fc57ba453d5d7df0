package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdguard/etcdguard/internal/deltalog"
	"github.com/etcdguard/etcdguard/internal/etcdx"
	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/testcluster"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

// tcpProxy forwards connections to one address; Cut drops every connection, and while it is
// down it refuses new ones: a lost network path between the writer and a member.
type tcpProxy struct {
	ln     net.Listener
	to     string
	mu     sync.Mutex
	conns  map[net.Conn]bool
	down   bool
	closed bool
}

func startProxy(t *testing.T, to string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &tcpProxy{ln: ln, to: to, conns: map[net.Conn]bool{}}
	go p.serve()
	t.Cleanup(func() {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		ln.Close()
		p.setDown(true)
	})
	return p
}

func (p *tcpProxy) URL() string { return "https://" + p.ln.Addr().String() }

func (p *tcpProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down || p.closed {
			p.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.to)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c], p.conns[up] = true, true
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			_, _ = io.Copy(dst, src)
			dst.Close()
			src.Close()
		}
		go pipe(up, c)
		go pipe(c, up)
	}
}

// setDown cuts every connection (down) and refuses new ones until setDown(false).
func (p *tcpProxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			c.Close()
		}
		p.conns = map[net.Conn]bool{}
	}
}

func hostPort(t *testing.T, u string) string {
	t.Helper()
	pu, err := url.Parse(u)
	require.NoError(t, err)
	return pu.Host
}

// faultRun is a cluster, its base backup in a local target, and a delta writer running on it.
type faultRun struct {
	c       *testcluster.Cluster
	cli     *clientv3.Client
	repo    *repository.Repository
	base    repository.Manifest
	durable atomic.Int64
	stop    context.CancelFunc
	done    chan error
	logs    *testenv.Logs
}

func startFaultRun(t *testing.T, version string, endpoints func(c *testcluster.Cluster) []string) *faultRun {
	t.Helper()
	ctx := t.Context()
	c, err := testcluster.Start(ctx, testcluster.Options{Size: 3, TLS: true, Command: []string{testenv.Etcd(t, version, "etcd")}, Dir: t.TempDir()})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	cli, err := c.Client(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { cli.Close() })
	for i := range 20 {
		_, err := cli.Put(ctx, fmt.Sprintf("/registry/pods/ns/p%02d", i), "before")
		require.NoError(t, err)
	}
	f := &faultRun{c: c, cli: cli, done: make(chan error, 1), logs: &testenv.Logs{}}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("delta writer's log:\n%s", f.logs)
		}
	})
	tls := etcdx.Config{CACert: c.PKI.CAFile, Cert: c.ClientCertFile, Key: c.ClientKeyFile}
	save := tls
	save.Endpoints = c.Endpoints()
	f.repo, f.base = backupTo(t, save)
	wcfg := tls
	wcfg.Endpoints = endpoints(c)
	wcli, err := wcfg.ClusterClient(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { wcli.Close() })
	sctx, stop := context.WithCancel(ctx)
	f.stop = stop
	go func() {
		_, err := deltalog.Stream(sctx, deltalog.StreamOptions{
			Client: wcli, Local: f.repo, SealInterval: 500 * time.Millisecond,
			Logger:    slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
			OnDurable: func(p deltalog.Progress) { f.durable.Store(p.Revision) },
		}, f.base, nil)
		f.done <- err
	}()
	return f
}

// writes puts n keys, one revision each, and returns the last revision.
func (f *faultRun) writes(t *testing.T, n int, tag string) int64 {
	t.Helper()
	var rev int64
	for i := range n {
		// A member going down fails the put in flight on it: try again, as a client does. (A
		// put tried again may be applied twice; each is its own revision, as in a cluster.)
		deadline := time.Now().Add(30 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			resp, err := f.cli.Put(ctx, fmt.Sprintf("/registry/pods/ns/p%02d", i%30), tag)
			cancel()
			if err == nil {
				rev = resp.Header.Revision
				break
			}
			require.True(t, time.Now().Before(deadline), "put: %v", err)
			time.Sleep(100 * time.Millisecond)
		}
	}
	return rev
}

// replayed replays the chain onto its base up to rev and returns the staged keyspace.
func (f *faultRun) replayedEqualsLive(t *testing.T, rev int64) {
	t.Helper()
	chain, err := deltalog.LoadChain(t.Context(), f.repo, f.base)
	require.NoError(t, err)
	require.Empty(t, chain.Problem)
	require.GreaterOrEqual(t, chain.Reach, rev)
	o, _ := restoreOpts(t, fetchBase(t, f.repo, f.base), "faults")
	s, err := RestoreStaging(t.Context(), o)
	require.NoError(t, err)
	rd := chain.NewReader(t.Context(), deltalog.ReadOptions{UpTo: rev})
	defer rd.Close()
	res, err := s.Replay(t.Context(), NewChainSource(rd, time.Time{}), rev)
	require.NoError(t, err)
	require.Equal(t, rev, res.To)
	requireSameKeyspace(t, liveAt(t, f.cli, rev), keyspaceAt(t, filepath.Join(s.Dir, "member", "snap", "db"), rev), "replayed")
}

// TestChainSurvivesFaults: while a real writer streams a 3-member TLS cluster's delta log (etcd
// 3.5 and 3.6), the leader moves, each member restarts in turn, and the network path to a member
// is cut; the chain stays one continuous chain (no end record, no problem in its names or
// links), and replayed to its last revision it equals the live keyspace key by key.
func TestChainSurvivesFaults(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			var proxy *tcpProxy
			f := startFaultRun(t, version, func(c *testcluster.Cluster) []string {
				ms := c.Members()
				proxy = startProxy(t, hostPort(t, ms[0].ClientURL))
				return []string{proxy.URL(), ms[1].ClientURL, ms[2].ClientURL}
			})
			ctx := t.Context()
			f.writes(t, 50, "start")

			// A leader change.
			st, err := f.cli.Status(ctx, f.c.Members()[0].ClientURL)
			require.NoError(t, err)
			var to uint64
			mresp, err := f.cli.MemberList(ctx)
			require.NoError(t, err)
			for _, m := range mresp.Members {
				if m.ID != st.Leader {
					to = m.ID
				}
			}
			for _, m := range f.c.Members() {
				mc, err := m.Client(ctx)
				require.NoError(t, err)
				_, err = mc.MoveLeader(ctx, to)
				mc.Close()
				if err == nil {
					break
				}
			}
			f.writes(t, 50, "after-leader-change")

			// Each member restarted in turn.
			for _, m := range f.c.Members() {
				require.NoError(t, m.Kill())
				f.writes(t, 20, "one-member-down")
				require.NoError(t, m.Restart(ctx))
				f.writes(t, 20, "member-back")
			}

			// The path to a member cut, twice.
			for range 2 {
				proxy.setDown(true)
				f.writes(t, 30, "path-cut")
				proxy.setDown(false)
				f.writes(t, 30, "path-back")
			}
			last := f.writes(t, 10, "last")
			require.Eventually(t, func() bool { return f.durable.Load() >= last }, 60*time.Second, 20*time.Millisecond, "the writer catches up")
			f.stop()
			require.NoError(t, <-f.done)
			l, err := f.repo.ListChain(ctx, f.base.ID)
			require.NoError(t, err)
			require.False(t, l.Ended, "the chain was never ended")
			// (etcd's client resumes a broken watch stream by itself, from the revision after the
			// last it delivered; the writer's own check that every revision follows the one before
			// is what would catch it skipping one.)
			f.replayedEqualsLive(t, last)
		})
	}
}

// TestChainEndsAtACompactionGap: a writer cut off from the cluster while it writes on and
// compacts past the writer's position cannot continue its chain: it ends it with a gap record at
// the last revision it holds, and returns ErrGap (the agent then takes a full snapshot). What the
// chain holds replays exactly; nothing after it is pretended.
func TestChainEndsAtACompactionGap(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			var proxy *tcpProxy
			f := startFaultRun(t, version, func(c *testcluster.Cluster) []string {
				proxy = startProxy(t, hostPort(t, c.Members()[0].ClientURL))
				return []string{proxy.URL()}
			})
			held := f.writes(t, 40, "held")
			require.Eventually(t, func() bool { return f.durable.Load() >= held }, 30*time.Second, 20*time.Millisecond)
			proxy.setDown(true)
			head := f.writes(t, 40, "while-cut")
			_, err := f.cli.Compact(t.Context(), head)
			require.NoError(t, err)
			proxy.setDown(false)
			select {
			case err := <-f.done:
				require.ErrorIs(t, err, deltalog.ErrGap)
			case <-time.After(60 * time.Second):
				t.Fatal("the writer did not notice the compaction")
			}
			e, err := f.repo.ChainEnd(t.Context(), f.base.ID)
			require.NoError(t, err)
			require.Equal(t, repository.EndGap, e.Reason)
			require.Equal(t, held, e.Last, "the chain ends at the last revision it holds")
			chain, err := deltalog.LoadChain(t.Context(), f.repo, f.base)
			require.NoError(t, err)
			require.Equal(t, held, chain.Reach)
			require.False(t, errors.Is(err, deltalog.ErrGap))
			// What it holds replays: compare with the keyspace at held, read from the restore
			// itself since the live history below head is compacted.
			o, _ := restoreOpts(t, fetchBase(t, f.repo, f.base), "gap")
			s, err := RestoreStaging(t.Context(), o)
			require.NoError(t, err)
			rd := chain.NewReader(t.Context(), deltalog.ReadOptions{})
			defer rd.Close()
			res, err := s.Replay(t.Context(), NewChainSource(rd, time.Time{}), 0)
			require.NoError(t, err)
			require.Equal(t, held, res.To)
			got := keyspaceAt(t, filepath.Join(s.Dir, "member", "snap", "db"), held)
			for k, kv := range got {
				if k >= "/registry/pods/ns/p" && k < "/registry/pods/ns/q" && kv.ModRevision > f.base.Status.Revision {
					require.Equal(t, "held", string(kv.Value), k)
				}
			}
		})
	}
}
