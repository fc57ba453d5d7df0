// Package etcdx connects to etcd members the way etcdctl does (endpoints, TLS files, timeouts),
// one client per endpoint, and explains connection failures in terms an operator can act on.
package etcdx

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// ErrUnavailable is returned (wrapped) when no etcd member can be used: every endpoint is down,
// refuses the TLS handshake, or the client's own certificate is unusable.
var ErrUnavailable = errors.New("etcd unavailable")

// Config holds the connection settings etcdctl calls --endpoints, --cacert, --cert, --key,
// --dial-timeout and --command-timeout.
type Config struct {
	Endpoints      []string
	CACert         string
	Cert           string
	Key            string
	DialTimeout    time.Duration
	CommandTimeout time.Duration
	// Now returns the current time; tests inject a clock. Nil means time.Now.
	Now func() time.Time
}

// DefaultDialTimeout and DefaultCommandTimeout are etcdctl's defaults.
const (
	DefaultDialTimeout    = 2 * time.Second
	DefaultCommandTimeout = 5 * time.Second
)

func (c Config) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c Config) dialTimeout() time.Duration {
	if c.DialTimeout > 0 {
		return c.DialTimeout
	}
	return DefaultDialTimeout
}

func (c Config) commandTimeout() time.Duration {
	if c.CommandTimeout > 0 {
		return c.CommandTimeout
	}
	return DefaultCommandTimeout
}

// UsesTLS reports whether any TLS setting is given or any endpoint is https.
func (c Config) UsesTLS() bool {
	if c.CACert != "" || c.Cert != "" || c.Key != "" {
		return true
	}
	for _, ep := range c.Endpoints {
		if strings.HasPrefix(ep, "https://") {
			return true
		}
	}
	return false
}

// TLS builds the client TLS configuration from the CA, certificate and key files. It checks what
// can be checked locally before any connection is made, so that the error names the file and the
// problem: a missing or unreadable file, a key that does not match its certificate, a client
// certificate outside its validity period (with the dates).
func (c Config) TLS() (*tls.Config, error) {
	if !c.UsesTLS() {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CACert != "" {
		data, err := os.ReadFile(c.CACert)
		if err != nil {
			return nil, withFault(FaultCAFile, fmt.Errorf("%w: read CA certificate --cacert %s: %w", ErrUnavailable, c.CACert, err))
		}
		cas := parseCertificates(data)
		if len(cas) == 0 {
			return nil, withFault(FaultCAFile, fmt.Errorf("%w: --cacert %s holds no PEM certificate: pass etcd's CA certificate (for kubeadm: /etc/kubernetes/pki/etcd/ca.crt)", ErrUnavailable, c.CACert))
		}
		if err := c.checkCAValidity(cas); err != nil {
			return nil, err
		}
		cfg.RootCAs = x509.NewCertPool()
		for _, ca := range cas {
			cfg.RootCAs.AddCert(ca)
		}
	}
	if (c.Cert == "") != (c.Key == "") {
		return nil, fmt.Errorf("%w: --cert and --key must be given together", ErrUnavailable)
	}
	if c.Cert != "" {
		pair, err := tls.LoadX509KeyPair(c.Cert, c.Key)
		if err != nil && keyMismatch(c.Cert, c.Key) {
			return nil, withFault(FaultKeyMismatch, fmt.Errorf("%w: the key --key %s does not belong to the client certificate --cert %s: give the key file issued with that certificate", ErrUnavailable, c.Key, c.Cert))
		}
		if err != nil {
			return nil, withFault(FaultClientCertFile, fmt.Errorf("%w: load client certificate --cert %s with --key %s: %w", ErrUnavailable, c.Cert, c.Key, err))
		}
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			return nil, withFault(FaultClientCertFile, fmt.Errorf("%w: parse client certificate %s: %w", ErrUnavailable, c.Cert, err))
		}
		if !usableForClientAuth(leaf) {
			return nil, withFault(FaultClientCertUsage, fmt.Errorf("%w: the client certificate --cert %s (subject %q) is not for client authentication "+
				"(its extended key usage lacks clientAuth), so the member rejects it: use a client certificate (kubeadm: /etc/kubernetes/pki/etcd/healthcheck-client.crt)",
				ErrUnavailable, c.Cert, leaf.Subject.CommonName))
		}
		if err := checkValidity("client certificate", c.Cert, leaf, c.now()); err != nil {
			f := FaultClientCertExpired
			if c.now().Before(leaf.NotBefore) {
				f = FaultClientCertNotYetValid
			}
			return nil, withFault(f, fmt.Errorf("%w: %w", ErrUnavailable, err))
		}
		// Always send the certificate, as etcdctl does: with Certificates, Go sends none when the
		// server's accepted CAs do not include its issuer, and the member then reports a missing
		// certificate instead of the real problem.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }
	}
	return cfg, nil
}

// keyMismatch reports whether keyFile holds a private key that is not the one of certFile's
// first certificate, both parsed. tls.LoadX509KeyPair says so only in its message, so the
// check is made again here, on the keys themselves.
func keyMismatch(certFile, keyFile string) bool {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return false
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return false
	}
	certs := parseCertificates(certPEM)
	key := parsePrivateKey(keyPEM)
	if len(certs) == 0 || key == nil {
		return false
	}
	pub, ok := certs[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	return ok && !pub.Equal(key.Public())
}

// parsePrivateKey returns the first private key of a PEM file in any of the encodings
// tls.X509KeyPair reads (PKCS #1, PKCS #8, SEC 1), or nil.
func parsePrivateKey(data []byte) crypto.Signer {
	for len(data) > 0 {
		var block *pem.Block
		if block, data = pem.Decode(data); block == nil {
			break
		}
		if block.Type != "PRIVATE KEY" && !strings.HasSuffix(block.Type, " PRIVATE KEY") {
			continue
		}
		if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
			return k
		}
		if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
			if s, ok := k.(crypto.Signer); ok {
				return s
			}
		}
		if k, err := x509.ParseECPrivateKey(block.Bytes); err == nil {
			return k
		}
	}
	return nil
}

// usableForClientAuth reports whether cert may authenticate a client: no extended key usage at
// all, or one that includes clientAuth (or any).
func usableForClientAuth(cert *x509.Certificate) bool {
	if len(cert.ExtKeyUsage) == 0 {
		return true
	}
	for _, u := range cert.ExtKeyUsage {
		if u == x509.ExtKeyUsageClientAuth || u == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}

// parseCertificates returns the certificates of a PEM file, skipping what
// x509.CertPool.AppendCertsFromPEM skips: other blocks, blocks with headers, certificates that
// do not parse.
func parseCertificates(data []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for len(data) > 0 {
		var block *pem.Block
		if block, data = pem.Decode(data); block == nil {
			break
		}
		if block.Type != "CERTIFICATE" || len(block.Headers) != 0 {
			continue
		}
		if cert, err := x509.ParseCertificate(block.Bytes); err == nil {
			out = append(out, cert)
		}
	}
	return out
}

// checkCAValidity fails when no CA certificate of the --cacert file is valid now: every chain
// through them would then fail, and Go's verifier says only that the authority is unknown. A
// clock reset after a power cut makes a CA "not yet valid" as easily as a member's certificate.
func (c Config) checkCAValidity(cas []*x509.Certificate) error {
	now := c.now()
	for _, ca := range cas {
		if !now.Before(ca.NotBefore) && !now.After(ca.NotAfter) {
			return nil
		}
	}
	first := cas[0]
	if now.Before(first.NotBefore) {
		return withFault(FaultCANotYetValid, fmt.Errorf("%w: %w", ErrUnavailable, checkValidity("CA certificate", c.CACert, first, now)))
	}
	return withFault(FaultCAExpired, fmt.Errorf("%w: the CA certificate --cacert %s (subject %q) expired on %s, %d days ago, and every certificate it signed with it: "+
		"if the date is wrong, fix the clock (now %s); if it is right, the cluster needs a new CA and new certificates (kubeadm: kubeadm init phase certs etcd-ca, then kubeadm certs renew for each etcd certificate)",
		ErrUnavailable, c.CACert, first.Subject.CommonName, first.NotAfter.UTC().Format(time.RFC3339), int(now.Sub(first.NotAfter)/(24*time.Hour)), now.UTC().Format(time.RFC3339)))
}

// checkValidity returns an error naming the certificate and its dates when now lies outside its
// validity window. A certificate that is not yet valid most often means the clock was reset, as
// happens after a power cut on hosts without a battery-backed clock.
func checkValidity(what, file string, cert *x509.Certificate, now time.Time) error {
	const day = 24 * time.Hour
	switch {
	case now.After(cert.NotAfter):
		return fmt.Errorf("%s %s (subject %q) expired on %s, %d days ago: renew it (kubeadm: kubeadm certs renew etcd-healthcheck-client / apiserver-etcd-client), or if the date is wrong, fix the clock (now %s)",
			what, file, cert.Subject.CommonName, cert.NotAfter.UTC().Format(time.RFC3339), int(now.Sub(cert.NotAfter)/day), now.UTC().Format(time.RFC3339))
	case now.Before(cert.NotBefore):
		return fmt.Errorf("%s %s (subject %q) is not valid until %s, %s from now by the clock, which says %s: the clock is probably wrong (after a power cut, check timedatectl / chronyc tracking)",
			what, file, cert.Subject.CommonName, cert.NotBefore.UTC().Format(time.RFC3339), howLong(cert.NotBefore.Sub(now)), now.UTC().Format(time.RFC3339))
	}
	return nil
}

// howLong says d in days when it is two days or more, else in hours and minutes.
func howLong(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%d days", int(d/(24*time.Hour)))
	case d < time.Minute:
		return "less than a minute"
	}
	return d.Round(time.Minute).String()
}
