package certs

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
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// kubeadmPKI lays out certificates as kubeadm does: the Kubernetes CA and the API server's
// certificate in pki/, etcd's CA and its server, peer and healthcheck-client certificates in
// pki/etcd/, and apiserver-etcd-client (signed by etcd's CA) in pki/.
type kubeadmPKI struct {
	root, etcd string
	// leaves signed by etcd's CA, by file name relative to root
	etcdLeaves []string
}

type issuer struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func writeCert(t *testing.T, path string, der []byte, key *ecdsa.PrivateKey) {
	t.Helper()
	require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o700))
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644))
	kb, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	keyPath := path[:len(path)-len(".crt")] + ".key"
	require.NoError(t, os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600))
}

func newCA(t *testing.T, path, name string, notBefore, notAfter time.Time) issuer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: notBefore, NotAfter: notAfter, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	writeCert(t, path, der, key)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return issuer{cert, key}
}

func newLeaf(t *testing.T, ca issuer, path string, tmpl *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	require.NoError(t, err)
	writeCert(t, path, der, key)
}

// newKubeadmPKI makes the PKI; etcd's leaf certificates are valid from notBefore to notAfter.
func newKubeadmPKI(t *testing.T, notBefore, notAfter time.Time) kubeadmPKI {
	t.Helper()
	root := filepath.Join(t.TempDir(), "pki")
	p := kubeadmPKI{root: root, etcd: filepath.Join(root, "etcd")}
	now := time.Now()
	k8s := newCA(t, filepath.Join(root, "ca.crt"), "kubernetes", now.Add(-time.Hour), now.AddDate(10, 0, 0))
	etcd := newCA(t, filepath.Join(p.etcd, "ca.crt"), "etcd-ca", now.Add(-time.Hour), now.AddDate(10, 0, 0))
	newLeaf(t, k8s, filepath.Join(root, "apiserver.crt"), &x509.Certificate{Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, DNSNames: []string{"kubernetes"}})
	sans := func(tmpl *x509.Certificate) *x509.Certificate {
		tmpl.DNSNames = []string{"cp1", "localhost"}
		tmpl.IPAddresses = []net.IP{net.ParseIP("172.21.8.101"), net.ParseIP("127.0.0.1")}
		return tmpl
	}
	leaves := map[string]*x509.Certificate{
		"etcd/server.crt": sans(&x509.Certificate{Subject: pkix.Name{CommonName: "cp1"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}),
		"etcd/peer.crt": sans(&x509.Certificate{Subject: pkix.Name{CommonName: "cp1"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}),
		"etcd/healthcheck-client.crt": {Subject: pkix.Name{CommonName: "kube-etcd-healthcheck-client"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
		"apiserver-etcd-client.crt": {Subject: pkix.Name{CommonName: "kube-apiserver-etcd-client", Organization: []string{"system:masters"}},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
	}
	for name, tmpl := range leaves {
		tmpl.NotBefore, tmpl.NotAfter = notBefore, notAfter
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
		newLeaf(t, etcd, filepath.Join(root, name), tmpl)
		p.etcdLeaves = append(p.etcdLeaves, name)
	}
	return p
}

func parseCertFile(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	block, _ := pem.Decode(data)
	require.NotNil(t, block, path)
	cert, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	return cert
}

func TestScanStates(t *testing.T) {
	now := time.Now()
	cases := []struct {
		name                string
		notBefore, notAfter time.Time
		state               string
		days                int
	}{
		{"valid", now.Add(-time.Hour), now.Add(200*24*time.Hour + time.Hour), StateOK, 200},
		{"expiring within 30 days", now.Add(-time.Hour), now.Add(10*24*time.Hour + time.Hour), StateExpiring, 10},
		{"expired", now.Add(-48 * time.Hour), now.Add(-24*time.Hour - time.Hour), StateExpired, -1},
		{"not yet valid", now.Add(24 * time.Hour), now.Add(48*time.Hour + time.Hour), StateNotYetValid, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newKubeadmPKI(t, tc.notBefore, tc.notAfter)
			list, err := Scan([]string{p.root}, now)
			require.NoError(t, err)
			byPath := map[string]Cert{}
			for _, c := range list {
				byPath[c.Path] = c
			}
			require.Len(t, list, 7, "two CAs, the API server's and etcd's four")
			for _, name := range p.etcdLeaves {
				c, ok := byPath[filepath.Join(p.root, name)]
				require.True(t, ok, name)
				require.Equal(t, tc.state, c.State, name)
				require.Equal(t, tc.days, c.DaysLeft, name)
				require.Equal(t, "CN=etcd-ca", c.Issuer)
				require.Equal(t, filepath.Join(p.root, name[:len(name)-len(".crt")]+".key"), c.KeyPath)
			}
			server := byPath[filepath.Join(p.etcd, "server.crt")]
			require.ElementsMatch(t, []string{"cp1", "localhost", "172.21.8.101", "127.0.0.1"}, server.SANs)
			require.True(t, byPath[filepath.Join(p.etcd, "ca.crt")].IsCA)
			require.Equal(t, StateOK, byPath[filepath.Join(p.root, "apiserver.crt")].State)
		})
	}
}

// TestRenewKubeadmLayout: the four certificates etcd's CA signed are re-issued with the same
// subject, SANs, usages and key; the old files are kept byte for byte; the Kubernetes CA's
// certificates are left alone.
func TestRenewKubeadmLayout(t *testing.T) {
	now := time.Now()
	p := newKubeadmPKI(t, now.Add(-400*24*time.Hour), now.Add(-24*time.Hour))
	before := map[string][]byte{}
	old := map[string]*x509.Certificate{}
	for _, name := range append([]string{"apiserver.crt", "ca.crt", "etcd/ca.crt"}, p.etcdLeaves...) {
		path := filepath.Join(p.root, name)
		data, err := os.ReadFile(path)
		require.NoError(t, err)
		before[name] = data
		old[name] = parseCertFile(t, path)
	}

	renewed, err := Renew(p.etcd, now, RenewOptions{Validity: 365 * 24 * time.Hour})
	require.NoError(t, err)
	require.Len(t, renewed, 4)
	for _, r := range renewed {
		rel, err := filepath.Rel(p.root, r.Path)
		require.NoError(t, err)
		require.Contains(t, p.etcdLeaves, rel)
		kept, err := os.ReadFile(r.Old)
		require.NoError(t, err)
		require.Equal(t, before[rel], kept, "the old %s is kept as it was", rel)
	}
	for _, name := range p.etcdLeaves {
		was, is := old[name], parseCertFile(t, filepath.Join(p.root, name))
		require.Equal(t, was.Subject.String(), is.Subject.String(), name)
		require.Equal(t, was.DNSNames, is.DNSNames, name)
		require.Equal(t, len(was.IPAddresses), len(is.IPAddresses), name)
		for i := range was.IPAddresses {
			require.True(t, was.IPAddresses[i].Equal(is.IPAddresses[i]), name)
		}
		require.Equal(t, was.ExtKeyUsage, is.ExtKeyUsage, name)
		require.Equal(t, was.KeyUsage, is.KeyUsage, name)
		require.True(t, was.PublicKey.(*ecdsa.PublicKey).Equal(is.PublicKey), "%s keeps its key", name)
		require.NoError(t, is.CheckSignatureFrom(old["etcd/ca.crt"]), name)
		require.True(t, is.NotAfter.After(now.Add(364*24*time.Hour)), name)
		require.False(t, is.NotBefore.After(now), name)
	}
	for _, name := range []string{"apiserver.crt", "ca.crt", "etcd/ca.crt"} {
		data, err := os.ReadFile(filepath.Join(p.root, name))
		require.NoError(t, err)
		require.Equal(t, before[name], data, "%s is not etcd's to renew", name)
	}
	list, err := Scan([]string{p.root}, now)
	require.NoError(t, err)
	for _, c := range list {
		if filepath.Ext(c.Path) == ".crt" {
			require.Equal(t, StateOK, c.State, c.Path)
		}
	}
}
