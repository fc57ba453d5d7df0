package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/testenv"
)

// TestCertsRenew: a cluster whose server certificates expired is diagnosed, its certificates are
// renewed from the CA key with the old files kept, and after a restart doctor finds no problem.
func TestCertsRenew(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			c := startCluster(t, version)
			now := time.Now()
			// etcd reads its certificate files on every handshake: replacing them takes effect at once.
			for _, m := range c.Members() {
				_, _, err := c.PKI.IssueServer(m.Name, now.Add(-400*24*time.Hour), now.Add(-24*time.Hour))
				require.NoError(t, err)
			}
			pki := filepath.Dir(c.CAFile)

			out := doctorJSON(t, 11, append([]string{"--endpoints", strings.Join(c.Endpoints(), ",")}, tlsFlags(c)[2:]...)...)
			sev, summary, next, _ := out.find(t, "endpoint", "server certificate")
			require.Equal(t, "critical", sev)
			require.Contains(t, summary, "expired on "+now.Add(-24*time.Hour).UTC().Format("2006-01-02"))
			require.Contains(t, next, "renew the server certificates")

			r := etcdguard(t, "certs", "check", "--pki-dir", pki)
			require.Equal(t, 11, r.code)
			require.Contains(t, r.stdout, "expired")

			r = etcdguard(t, "certs", "renew", "--pki-dir", pki)
			require.Equal(t, 0, r.code, r.stderr)
			for _, m := range c.Members() {
				require.Contains(t, r.stdout, "renewed "+filepath.Join(pki, m.Name+".pem"))
				old, _ := filepath.Glob(filepath.Join(pki, m.Name+".pem.old-*"))
				require.Len(t, old, 1, "the old certificate of %s is kept", m.Name)
			}
			r = etcdguard(t, "certs", "check", "--pki-dir", pki)
			require.Equal(t, 0, r.code, r.stdout)

			var wg sync.WaitGroup
			errs := make([]error, 3)
			for i, m := range c.Members() {
				wg.Go(func() { errs[i] = m.Restart(context.Background()) })
			}
			wg.Wait()
			require.NoError(t, errors.Join(errs...))
			out = doctorJSON(t, 10, append([]string{"--endpoints", strings.Join(c.Endpoints(), ",")}, tlsFlags(c)[2:]...)...)
			for _, f := range out.Findings {
				require.NotEqual(t, "critical", f.Severity, "%+v", f)
				require.NotEqual(t, "endpoint", f.Check, "%+v", f)
			}
		})
	}
}

// TestCertsRenewRefusesExpiredCA: certificates signed by an expired CA would not be trusted.
func TestCertsRenewRefusesExpiredCA(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "etcd-ca"},
		NotBefore: time.Now().Add(-20 * 24 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "ca.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644))
	kb, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "ca.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600))
	r := etcdguard(t, "certs", "renew", "--pki-dir", dir)
	require.Equal(t, 9, r.code)
	require.Contains(t, r.stderr, "the CA certificate is not valid")
	require.Contains(t, r.stderr, "ca.crt")
}
