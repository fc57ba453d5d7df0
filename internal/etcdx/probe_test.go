package etcdx_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/etcdx"
	"github.com/etcdguard/etcdguard/internal/testcluster"
)

// TestProbeFaults checks that Probe tells each transport failure apart, by its Fault, on real
// TLS servers (the transport etcd's clients dial), and that the fault survives the wrapping
// that callers test with errors.Is.
func TestProbeFaults(t *testing.T) {
	dir := t.TempDir()
	pki, err := testcluster.NewPKI(filepath.Join(dir, "pki"))
	require.NoError(t, err)
	other, err := testcluster.NewPKI(filepath.Join(dir, "other"))
	require.NoError(t, err)
	now := time.Now()
	valid := func(p *testcluster.PKI, name string, server bool) (string, string) {
		issue := p.IssueClient
		if server {
			issue = p.IssueServer
		}
		c, k, err := issue(name, now.Add(-time.Hour), now.Add(24*time.Hour))
		require.NoError(t, err)
		return c, k
	}
	serverCert, serverKey := valid(pki, "server", true)
	clientCert, clientKey := valid(pki, "client", false)
	strangerCert, strangerKey := valid(other, "stranger", false)
	expiredServer, expiredServerKey, err := pki.IssueServer("expired-server", now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	require.NoError(t, err)
	futureServer, futureServerKey, err := pki.IssueServer("future-server", now.Add(24*time.Hour), now.Add(48*time.Hour))
	require.NoError(t, err)
	expiredClient, expiredClientKey, err := pki.IssueClient("expired-client", now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	require.NoError(t, err)
	// A client whose clock is 45 minutes slow (the CA is valid from an hour ago): it takes a
	// certificate that expired half an hour ago for valid, and one valid from in half an hour
	// for not valid yet; the member, with the right time, sees the first one expired.
	slowClock := func() time.Time { return now.Add(-45 * time.Minute) }
	serverOnly, serverOnlyKey, err := pki.IssueWithUsage("server-only", now.Add(-time.Hour), now.Add(24*time.Hour), x509.ExtKeyUsageServerAuth)
	require.NoError(t, err)
	clientOnly, clientOnlyKey, err := pki.IssueWithUsage("client-only", now.Add(-time.Hour), now.Add(24*time.Hour), x509.ExtKeyUsageClientAuth)
	require.NoError(t, err)
	// A plain TCP server that hands each connection to handle.
	tcpServer := func(t *testing.T, handle func(net.Conn)) string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				handle(c)
			}
		}()
		return "https://" + l.Addr().String()
	}
	hung := func(t *testing.T) string {
		return tcpServer(t, func(c net.Conn) { t.Cleanup(func() { c.Close() }) })
	}
	justExpired, justExpiredKey, err := pki.IssueClient("just-expired", now.Add(-3*time.Hour), now.Add(-30*time.Minute))
	require.NoError(t, err)
	soonValid, soonValidKey, err := pki.IssueClient("soon-valid", now.Add(-30*time.Minute), now.Add(24*time.Hour))
	require.NoError(t, err)
	oldServer, oldServerKey, err := pki.IssueServer("old-server", now.Add(-3*time.Hour), now.Add(24*time.Hour))
	require.NoError(t, err)

	caPool := x509.NewCertPool()
	caPEM, err := os.ReadFile(pki.CAFile)
	require.NoError(t, err)
	caPool.AppendCertsFromPEM(caPEM)
	serve := func(t *testing.T, host, cert, key string, requireClient bool) string {
		pair, err := tls.LoadX509KeyPair(cert, key)
		require.NoError(t, err)
		cfg := &tls.Config{Certificates: []tls.Certificate{pair}}
		if requireClient {
			cfg.ClientAuth, cfg.ClientCAs = tls.RequireAndVerifyClientCert, caPool
		}
		l, err := tls.Listen("tcp", host+":0", cfg)
		require.NoError(t, err)
		t.Cleanup(func() { l.Close() })
		go acceptAndHandshake(l)
		return "https://" + l.Addr().String()
	}
	plain := func(t *testing.T) string {
		return tcpServer(t, func(c net.Conn) {
			_, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
			c.Close()
		})
	}
	refused := func(t *testing.T) string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := l.Addr().String()
		l.Close()
		return "https://" + addr
	}
	// A host that is down or filtered: SYNs go unanswered. A listening socket whose accept queue
	// is full (backlog 0, one connection waiting) drops them, as such a host does.
	silent := func(t *testing.T) string {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
		require.NoError(t, err)
		t.Cleanup(func() { syscall.Close(fd) })
		require.NoError(t, syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}))
		require.NoError(t, syscall.Listen(fd, 0))
		sa, err := syscall.Getsockname(fd)
		require.NoError(t, err)
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
		c, err := net.DialTimeout("tcp", addr, time.Second)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return "https://" + addr
	}
	good := etcdx.Config{CACert: pki.CAFile, Cert: clientCert, Key: clientKey}

	cases := []struct {
		name     string
		endpoint func(t *testing.T) string
		cfg      etcdx.Config
		fault    etcdx.Fault
	}{
		{"not a URL", func(*testing.T) string { return "10.0.0.1" }, good, etcdx.FaultBadEndpoint},
		{"connection refused", refused, good, etcdx.FaultRefused},
		// .invalid never resolves (RFC 6761); the resolver fails without asking the network.
		{"host name does not resolve", func(*testing.T) string { return "https://etcd-0.invalid:2379" }, good, etcdx.FaultDNS},
		{"not TLS", plain, good, etcdx.FaultNotTLS},
		{"server signed by another CA", func(t *testing.T) string { return serve(t, "127.0.0.1", serverCert, serverKey, false) },
			etcdx.Config{CACert: other.CAFile, Cert: clientCert, Key: clientKey}, etcdx.FaultUnknownAuthority},
		{"address not in the SANs", func(t *testing.T) string { return serve(t, "127.0.0.2", serverCert, serverKey, false) },
			good, etcdx.FaultSANMismatch},
		{"server certificate expired", func(t *testing.T) string { return serve(t, "127.0.0.1", expiredServer, expiredServerKey, false) },
			good, etcdx.FaultServerCertExpired},
		{"server certificate not yet valid", func(t *testing.T) string { return serve(t, "127.0.0.1", futureServer, futureServerKey, false) },
			good, etcdx.FaultServerCertNotYetValid},
		{"client certificate required", func(t *testing.T) string { return serve(t, "127.0.0.1", serverCert, serverKey, true) },
			etcdx.Config{CACert: pki.CAFile}, etcdx.FaultClientCertRequired},
		{"client certificate from another CA", func(t *testing.T) string { return serve(t, "127.0.0.1", serverCert, serverKey, true) },
			etcdx.Config{CACert: pki.CAFile, Cert: strangerCert, Key: strangerKey}, etcdx.FaultClientCertRejected},
		{"client certificate expired", func(t *testing.T) string { return serve(t, "127.0.0.1", serverCert, serverKey, true) },
			etcdx.Config{CACert: pki.CAFile, Cert: expiredClient, Key: expiredClientKey}, etcdx.FaultClientCertExpired},
		{"client certificate not yet valid by our clock", func(t *testing.T) string { return serve(t, "127.0.0.1", serverCert, serverKey, true) },
			etcdx.Config{CACert: pki.CAFile, Cert: soonValid, Key: soonValidKey, Now: slowClock}, etcdx.FaultClientCertNotYetValid},
		{"client certificate expired by the member's clock", func(t *testing.T) string { return serve(t, "127.0.0.1", oldServer, oldServerKey, true) },
			etcdx.Config{CACert: pki.CAFile, Cert: justExpired, Key: justExpiredKey, Now: slowClock}, etcdx.FaultClientCertExpired},
		{"CA not yet valid by our clock", func(t *testing.T) string { return serve(t, "127.0.0.1", serverCert, serverKey, false) },
			etcdx.Config{CACert: pki.CAFile, Now: func() time.Time { return now.Add(-2 * time.Hour) }}, etcdx.FaultCANotYetValid},
		{"CA expired", func(t *testing.T) string { return serve(t, "127.0.0.1", serverCert, serverKey, false) },
			etcdx.Config{CACert: pki.CAFile, Now: func() time.Time { return now.AddDate(11, 0, 0) }}, etcdx.FaultCAExpired},
		{"no answer to the connection", silent,
			etcdx.Config{CACert: pki.CAFile, DialTimeout: 300 * time.Millisecond}, etcdx.FaultTimeout},
		{"accepts and never answers", hung,
			etcdx.Config{CACert: pki.CAFile, DialTimeout: 300 * time.Millisecond}, etcdx.FaultHung},
		{"server certificate only for clients", func(t *testing.T) string { return serve(t, "127.0.0.1", clientOnly, clientOnlyKey, false) },
			good, etcdx.FaultServerCertUsage},
		{"client certificate only for servers", func(t *testing.T) string { return serve(t, "127.0.0.1", serverCert, serverKey, true) },
			etcdx.Config{CACert: pki.CAFile, Cert: serverOnly, Key: serverOnlyKey}, etcdx.FaultClientCertUsage},
		{"key of another certificate", func(t *testing.T) string { return serve(t, "127.0.0.1", serverCert, serverKey, true) },
			etcdx.Config{CACert: pki.CAFile, Cert: clientCert, Key: serverKey}, etcdx.FaultKeyMismatch},
		{"CA file missing", func(t *testing.T) string { return serve(t, "127.0.0.1", serverCert, serverKey, false) },
			etcdx.Config{CACert: filepath.Join(dir, "missing.pem")}, etcdx.FaultCAFile},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Probe(t.Context(), tc.endpoint(t))
			require.Error(t, err)
			require.Equal(t, tc.fault, etcdx.FaultOf(err), "error: %v", err)
			wrapped := errors.Join(errors.New("doctor"), err)
			require.Equal(t, tc.fault, etcdx.FaultOf(wrapped))
		})
	}

	t.Run("a working endpoint has no fault", func(t *testing.T) {
		require.NoError(t, good.Probe(t.Context(), serve(t, "127.0.0.1", serverCert, serverKey, true)))
	})
	t.Run("local certificate problems still say the endpoint is unavailable", func(t *testing.T) {
		err := etcdx.Config{CACert: filepath.Join(dir, "missing.pem")}.Probe(t.Context(), serve(t, "127.0.0.1", serverCert, serverKey, false))
		require.ErrorIs(t, err, etcdx.ErrUnavailable)
	})
}

// acceptAndHandshake serves TLS handshakes, then holds each connection open a moment so that a
// client's first read sees the server's verdict on its certificate.
func acceptAndHandshake(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			if tc, ok := c.(*tls.Conn); ok && tc.Handshake() == nil {
				_, _ = tc.Read(make([]byte, 1))
			}
		}()
	}
}
