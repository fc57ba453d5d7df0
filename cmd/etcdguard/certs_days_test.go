package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// writeCAAndLeaf writes, in kubeadm's layout, a CA (ca.crt, ca.key) valid until caNotAfter and a
// server certificate it signed (server.crt, server.key) that expired yesterday.
func writeCAAndLeaf(t *testing.T, dir string, caNotAfter time.Time) {
	t.Helper()
	now := time.Now()
	write := func(name, blockType string, der []byte) {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der}), 0o600))
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "etcd-ca"},
		NotBefore: now.Add(-400 * 24 * time.Hour), NotAfter: caNotAfter,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	write("ca.crt", "CERTIFICATE", caDER)
	kb, err := x509.MarshalECPrivateKey(caKey)
	require.NoError(t, err)
	write("ca.key", "EC PRIVATE KEY", kb)

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "etcd-server"},
		NotBefore: now.Add(-300 * 24 * time.Hour), NotAfter: now.Add(-24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	require.NoError(t, err)
	write("server.crt", "CERTIFICATE", der)
	kb, err = x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	write("server.key", "EC PRIVATE KEY", kb)
}

// TestCertsRenewDays: certs renew never issues a certificate that is expired when written nor
// one that outlives its CA. --days outside 1..3650, or past the CA's expiry, is a usage error
// (exit 2) that names the flag and changes no file; the default of 365 days is cut to the CA's
// expiry with a warning.
func TestCertsRenewDays(t *testing.T) {
	now := time.Now()
	caNotAfter := now.Add(100 * 24 * time.Hour).Truncate(time.Second)
	cases := []struct {
		name     string
		args     []string
		code     int
		stderr   []string
		notAfter time.Time // of the renewed certificate, when code is 0
	}{
		{"zero days", []string{"--days", "0"}, 2, []string{"--days 0", "1 to 3650"}, time.Time{}},
		{"negative days", []string{"--days", "-5"}, 2, []string{"--days -5", "1 to 3650"}, time.Time{}},
		{"more than ten years", []string{"--days", "3651"}, 2, []string{"--days 3651", "1 to 3650"}, time.Time{}},
		{"past the CA's expiry", []string{"--days", "200"}, 2, []string{"--days 200", "expires on " + caNotAfter.UTC().Format("2006-01-02"), "at most 99 days", "renew the CA"}, time.Time{}},
		{"within the CA's validity", []string{"--days", "30"}, 0, nil, now.Add(30 * 24 * time.Hour)},
		{"the default, cut to the CA's expiry", nil, 0, []string{"warning", "expires on " + caNotAfter.UTC().Format("2006-01-02"), "renew the CA"}, caNotAfter},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeCAAndLeaf(t, dir, caNotAfter)
			before := treeHashes(t, dir)
			r := etcdguard(t, append([]string{"certs", "renew", "--pki-dir", dir}, tc.args...)...)
			require.Equal(t, tc.code, r.code, r.stderr)
			for _, s := range tc.stderr {
				require.Contains(t, r.stderr, s)
			}
			if tc.code != 0 {
				require.Equal(t, before, treeHashes(t, dir), "a refused renewal changes no file")
				return
			}
			data, err := os.ReadFile(filepath.Join(dir, "server.crt"))
			require.NoError(t, err)
			block, _ := pem.Decode(data)
			require.NotNil(t, block)
			c, err := x509.ParseCertificate(block.Bytes)
			require.NoError(t, err)
			require.WithinDuration(t, tc.notAfter, c.NotAfter, time.Minute)
			require.True(t, c.NotAfter.After(time.Now()), "the new certificate is valid")
			require.False(t, c.NotAfter.After(caNotAfter), "the new certificate does not outlive its CA")
			if len(tc.stderr) == 0 {
				require.NotContains(t, strings.ToLower(r.stderr), "warning")
			}
		})
	}
}
