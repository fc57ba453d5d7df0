package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
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

	"github.com/etcdguard/etcdguard/internal/testcluster"
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

// TestCertsCheck: every certificate with its dates and days left, a warning (exit 10) for one
// that expires within 30 days, and the same in JSON.
func TestCertsCheck(t *testing.T) {
	pki, err := testcluster.NewPKI(filepath.Join(t.TempDir(), "pki"))
	require.NoError(t, err)
	now := time.Now()
	soon, _, err := pki.IssueClient("expires-soon", now.Add(-300*24*time.Hour), now.Add(10*24*time.Hour+time.Hour))
	require.NoError(t, err)
	_, _, err = pki.IssueServer("member", now.Add(-time.Hour), now.Add(365*24*time.Hour))
	require.NoError(t, err)

	r := etcdguard(t, "certs", "check", "--pki-dir", pki.Dir)
	require.Equal(t, 10, r.code, r.stderr)
	header := strings.Fields(strings.SplitN(r.stdout, "\n", 2)[0])
	require.Equal(t, []string{"CERTIFICATE", "SUBJECT", "SANS", "ISSUER", "NOT", "BEFORE", "NOT", "AFTER", "DAYS", "LEFT", "STATE"}, header)
	require.Regexp(t, `expires-soon\.pem\s+CN=expires-soon.*\s10\s+expiring`, r.stdout)
	require.Contains(t, r.stdout, "certs renew")

	r = etcdguard(t, "certs", "check", "--pki-dir", pki.Dir, "-o", "json")
	require.Equal(t, 10, r.code, r.stderr)
	var out struct {
		Certificates []struct {
			Path     string    `json:"path"`
			Subject  string    `json:"subject"`
			SANs     []string  `json:"sans"`
			Issuer   string    `json:"issuer"`
			NotAfter time.Time `json:"not_after"`
			DaysLeft int       `json:"days_left"`
			IsCA     bool      `json:"is_ca"`
			State    string    `json:"state"`
		} `json:"certificates"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out), r.stdout)
	require.Len(t, out.Certificates, 3)
	states := map[string]string{}
	for _, c := range out.Certificates {
		states[filepath.Base(c.Path)] = c.State
		switch filepath.Base(c.Path) {
		case filepath.Base(soon):
			require.Equal(t, 10, c.DaysLeft)
		case "member.pem":
			require.ElementsMatch(t, []string{"localhost", "127.0.0.1"}, c.SANs)
			require.Contains(t, c.Issuer, "etcdguard-test-ca-")
		case "ca.pem":
			require.True(t, c.IsCA)
		}
	}
	require.Equal(t, map[string]string{"ca.pem": "ok", "member.pem": "ok", "expires-soon.pem": "expiring"}, states)
}
