package agent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/etcdx"
	"github.com/etcdguard/etcdguard/internal/snapshot"
)

// scrape gathers an agent's /metrics registry, failing on any error the scrape would log.
func scrape(t *testing.T, a *Agent) map[string]*dto.MetricFamily {
	t.Helper()
	a.metrics = newMetrics(a)
	mfs, err := a.metrics.reg.Gather()
	require.NoError(t, err)
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// caCert returns a self-signed CA certificate's PEM block.
func caCert(t *testing.T, cn string, notAfter time.Time) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn}, NotBefore: notAfter.Add(-365 * 24 * time.Hour),
		NotAfter: notAfter, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestCertificateExpiryBundle: a CA bundle in the middle of a rotation holds the old CA and the
// new one under the same name. Both must not make one series twice (the scrape would drop one
// and log an error); the series is the one that expires first, what the alert is about.
func TestCertificateExpiryBundle(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	old, renewed := now.Add(20*24*time.Hour), now.Add(10*365*24*time.Hour)
	bundle := filepath.Join(t.TempDir(), "ca.crt")
	data := append(caCert(t, "etcd-ca", renewed), caCert(t, "etcd-ca", old)...)
	data = append(data, []byte("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")...)
	require.NoError(t, os.WriteFile(bundle, data, 0o600))
	a := &Agent{opts: Options{Now: func() time.Time { return now }},
		settings: Settings{Save: snapshot.SaveOptions{Etcd: etcdx.Config{CACert: bundle}}}}
	mf := scrape(t, a)["etcdguard_certificate_expiry_timestamp_seconds"]
	require.NotNil(t, mf)
	require.Len(t, mf.Metric, 1)
	require.Equal(t, float64(old.Unix()), mf.Metric[0].GetGauge().GetValue())
}

// TestDeltaWriterWithDeltaLogOff: with the delta log off on purpose there is no writer to elect,
// and no etcdguard_delta_writer (a 0 there raised EtcdguardDeltaWriterAbsent for good).
func TestDeltaWriterWithDeltaLogOff(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	a := &Agent{opts: Options{Now: func() time.Time { return now }}}
	mfs := scrape(t, a)
	require.NotContains(t, mfs, "etcdguard_delta_writer")
	require.Contains(t, mfs, "etcdguard_ready")
}
