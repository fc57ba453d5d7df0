package main

import (
	"encoding/json"
	"io"
	"net"
	"net/url"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

// freezingProxy forwards TCP connections to a server, and stops reading from a client connection
// once it has sent more than limit bytes upstream: a server that stops accepting a large upload
// mid-way, as a hung S3 endpoint or a blackholing network does. Small requests (lock files,
// manifests) on other connections still go through.
type freezingProxy struct {
	ln    net.Listener
	limit int64
	mu    sync.Mutex
	conns []net.Conn
	done  chan struct{}
}

func newFreezingProxy(t *testing.T, target string, limit int64) *freezingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &freezingProxy{ln: ln, limit: limit, done: make(chan struct{})}
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", target)
			if err != nil {
				client.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, client, server)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(client, server) }()
			go p.upstream(client, server)
		}
	}()
	t.Cleanup(func() {
		close(p.done)
		ln.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range p.conns {
			c.Close()
		}
	})
	return p
}

func (p *freezingProxy) upstream(client, server net.Conn) {
	buf := make([]byte, 32<<10)
	var sent int64
	for {
		n, err := client.Read(buf)
		if n > 0 {
			if sent+int64(n) > p.limit {
				<-p.done // frozen: nothing more is read from this client
				return
			}
			if _, werr := server.Write(buf[:n]); werr != nil {
				return
			}
			sent += int64(n)
		}
		if err != nil {
			server.Close()
			return
		}
	}
}

// TestSaveStalledTarget: a target that stops accepting data mid-stream is dropped after
// --target-timeout; the other target finishes, the backup counts (exit code 3, partial), and its
// copy verifies.
func TestSaveStalledTarget(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			c := startCluster(t, version)
			loadBulk(t, c, 8)
			m, _ := startS3(t)
			u, err := url.Parse(m.Endpoint)
			require.NoError(t, err)
			proxy := newFreezingProxy(t, u.Host, 1<<20)
			s3URL := "s3://etcd-backups/prod?endpoint=http://" + proxy.ln.Addr().String() + "&region=us-east-1"
			repo := filepath.Join(t.TempDir(), "repo")

			r := etcdguard(t, append([]string{"snapshot", "save", "-o", "json", "--compression", "none", "--target-timeout", "3s",
				"--target", "file://" + repo, "--target", s3URL}, tlsFlags(c)...)...)
			require.Equal(t, 3, r.code, r.stderr)
			var out struct {
				Manifest repository.Manifest `json:"manifest"`
			}
			require.NoError(t, json.Unmarshal([]byte(r.stdout), &out), r.stdout)
			states := map[string]repository.TargetResult{}
			for _, tr := range out.Manifest.Targets {
				states[tr.Name] = tr
			}
			require.Equal(t, repository.StateStored, states["local"].State)
			require.Equal(t, repository.StateFailed, states["s3"].State)
			require.Contains(t, states["s3"].Error, "stopped accepting data for 3s")
			require.Greater(t, out.Manifest.RawSize, int64(8<<20), "the stream was larger than what the stalled target took")

			r = etcdguard(t, "snapshot", "verify", out.Manifest.ID, "--target", "file://"+repo)
			require.Equal(t, 0, r.code, r.stderr)
		})
	}
}
