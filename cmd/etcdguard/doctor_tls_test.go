package main

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/testcluster"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

// doctorAt runs doctor with an injected clock.
func doctorAt(t *testing.T, now func() time.Time, wantCode int, args ...string) doctorOut {
	t.Helper()
	r := etcdguardAt(t, now, append([]string{"doctor", "-o", "json"}, args...)...)
	require.Equal(t, wantCode, r.code, r.stderr)
	var d doctorOut
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &d))
	return d
}

// reissueServer replaces a member's server certificate with one for other names, signed by the
// cluster's CA (etcd reads its certificate files on every handshake).
func reissueServer(t *testing.T, c *testcluster.Cluster, m *testcluster.Member, dnsNames []string, usages ...x509.ExtKeyUsage) {
	t.Helper()
	pki := filepath.Dir(c.CAFile)
	caPEM, err := os.ReadFile(c.CAFile)
	require.NoError(t, err)
	block, _ := pem.Decode(caPEM)
	ca, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	keyPEM, err := os.ReadFile(filepath.Join(pki, "ca-key.pem"))
	require.NoError(t, err)
	kb, _ := pem.Decode(keyPEM)
	caKeyAny, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		caKeyAny, err = x509.ParseECPrivateKey(kb.Bytes)
	}
	require.NoError(t, err)
	memberKeyPEM, err := os.ReadFile(filepath.Join(pki, m.Name+"-key.pem"))
	require.NoError(t, err)
	mk, _ := pem.Decode(memberKeyPEM)
	memberKey, err := x509.ParsePKCS8PrivateKey(mk.Bytes)
	if err != nil {
		memberKey, err = x509.ParseECPrivateKey(mk.Bytes)
	}
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: m.Name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), DNSNames: dnsNames,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	if len(usages) > 0 {
		tmpl.ExtKeyUsage = usages
	}
	tmpl.DNSNames = nil
	for _, n := range dnsNames {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, memberKey.(*ecdsa.PrivateKey).Public(), caKeyAny)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(pki, m.Name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
}

// TestDoctorTLSAndClocks names each certificate problem separately, and finds clock skew and a
// clock reset through an injected clock (libfaketime does not reach Go programs).
func TestDoctorTLSAndClocks(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			c := startCluster(t, version)
			ep := c.Endpoints()[0]
			now := time.Now()
			other, err := testcluster.NewPKI(filepath.Join(t.TempDir(), "other"))
			require.NoError(t, err)
			future, futureKey, err := c.PKI.IssueClient("future-client", now.Add(48*time.Hour), now.Add(400*24*time.Hour))
			require.NoError(t, err)
			m1 := c.Members()[0]

			cases := []struct {
				name    string
				args    []string
				setup   func(t *testing.T)
				summary string
				next    string
			}{
				{"client certificate not yet valid", []string{"--cacert", c.CAFile, "--cert", future, "--key", futureKey}, nil,
					"is not valid until " + now.Add(48*time.Hour).UTC().Format("2006-01-02"), "fix the clock"},
				{"server certificate signed by another CA", []string{"--cacert", other.CAFile, "--cert", c.ClientCertFile, "--key", c.ClientKeyFile}, nil,
					"does not trust", "--cacert"},
				{"key does not match the certificate", []string{"--cacert", c.CAFile, "--cert", c.ClientCertFile, "--key", filepath.Join(filepath.Dir(c.CAFile), m1.Name+"-key.pem")}, nil,
					"does not belong to the client certificate", "the key issued with the client certificate"},
				{"SAN does not cover the address dialled", []string{"--cacert", c.CAFile, "--cert", c.ClientCertFile, "--key", c.ClientKeyFile},
					func(t *testing.T) { reissueServer(t, c, m1, []string{"etcd.example"}) },
					"does not cover the address dialled (127.0.0.1; it covers etcd.example)", "re-issue"},
				{"certificate not for server authentication", []string{"--cacert", c.CAFile, "--cert", c.ClientCertFile, "--key", c.ClientKeyFile},
					func(t *testing.T) {
						reissueServer(t, c, m1, []string{"localhost", "127.0.0.1"}, x509.ExtKeyUsageClientAuth)
					},
					"is not for server authentication", "serverAuth"},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					if tc.setup != nil {
						tc.setup(t)
					}
					out := doctorAt(t, time.Now, 11, append([]string{"--endpoints", ep}, tc.args...)...)
					sev, summary, next, _ := out.find(t, "endpoint", "")
					require.Equal(t, "critical", sev)
					require.Contains(t, summary, tc.summary)
					require.Contains(t, next, tc.next)
				})
			}
		})
	}
}

// TestDoctorClockSkew: this host's clock 10 minutes ahead of the member's, then reset years back
// (as after a power cut without an RTC battery): both are named, with the dates.
func TestDoctorClockSkew(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			c := startCluster(t, version)
			_, s3URL := startS3(t)
			ahead := func() time.Time { return time.Now().Add(10 * time.Minute) }
			out := doctorAt(t, ahead, 11, append(tlsFlags(c), "--target", s3URL)...)
			var subjects []string
			for _, f := range out.Findings {
				if f.Check != "clock" {
					continue
				}
				subjects = append(subjects, f.Subject)
				require.Equal(t, "critical", f.Severity, f.Subject)
				require.Regexp(t, `^clock (9m59s|10m[0-2]s) behind`, f.Summary, "the Date header has a one-second resolution")
				require.Contains(t, f.Next, "timedatectl")
				require.NotEmpty(t, f.Evidence)
			}
			require.Len(t, subjects, 4, "the three members and the S3 target: %v", subjects)
			require.Contains(t, strings.Join(subjects, " "), "S3 target")

			reset := func() time.Time { return time.Now().AddDate(-3, 0, 0) }
			out = doctorAt(t, reset, 11, tlsFlags(c)...)
			sev, summary, next, _ := out.find(t, "endpoint", "the clock is probably wrong")
			require.Equal(t, "critical", sev)
			require.Regexp(t, `is not valid until \S+, 109[4-7] days from now by the clock`, summary)
			require.Contains(t, next, "fix the clock")
			// Every certificate of the PKI folder, checked against the clock.
			out = doctorAt(t, reset, 11, append(tlsFlags(c), "--pki-dir", filepath.Dir(c.CAFile))...)
			sev, _, next, _ = out.find(t, "certificate", "not valid yet")
			require.Equal(t, "critical", sev)
			require.Contains(t, next, "fix the clock")

			out = doctorAt(t, time.Now, 10, tlsFlags(c)...)
			sev, _, _, _ = out.find(t, "clock", "")
			require.Equal(t, "ok", sev)
			sev, summary, _, _ = out.find(t, "disk", "WAL fsync")
			require.Contains(t, []string{"ok", "warning"}, sev)
			require.Contains(t, summary, "p99")
		})
	}
}

// TestDoctorDNS: an endpoint whose host name does not resolve (.invalid never does) is named as
// a DNS problem, not as a member that is down.
func TestDoctorDNS(t *testing.T) {
	out := doctorAt(t, time.Now, 11, "--endpoints", "https://no-such-host.invalid:2379")
	sev, summary, next, _ := out.find(t, "endpoint", "does not resolve")
	require.Equal(t, "critical", sev)
	require.Contains(t, summary, "no-such-host.invalid")
	require.Contains(t, next, "DNS")
}
