package scratch

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// PKI is a throw-away certificate authority that issues the certificates of a test cluster and,
// for tests of failure paths, bad ones: expired, not yet valid, or (with a second PKI) signed by a
// CA the cluster does not trust. Its files are PEM, mode 0600, in its folder.
type PKI struct {
	// Dir is the folder holding the CA and every certificate the PKI issued.
	Dir string
	// CAFile is the CA certificate, the file etcd's --trusted-ca-file and clients' CA name.
	CAFile string

	caCert *x509.Certificate
	caKey  *ecdsa.PrivateKey
}

// NewPKI creates a new CA with a unique name in dir (created if missing), valid from an hour
// ago for ten years. Call it again with another folder to get a CA the first one knows nothing of.
func NewPKI(dir string) (*PKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create PKI folder %s: %w", dir, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// A unique name, so that two CAs of one test are told apart by name, not only by key.
		Subject:               pkix.Name{CommonName: "etcdguard-test-ca-" + hex.EncodeToString(serial.Bytes()[:4]), Organization: []string{"etcdguard test"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	p := &PKI{Dir: dir, CAFile: filepath.Join(dir, "ca.pem"), caCert: cert, caKey: key}
	if err := writePEM(p.CAFile, "CERTIFICATE", der); err != nil {
		return nil, err
	}
	if err := writeKey(filepath.Join(dir, "ca-key.pem"), key); err != nil {
		return nil, err
	}
	return p, nil
}

// IssueServer issues a certificate for an etcd member (client-facing or peer) named name, valid
// for IP 127.0.0.1 and DNS localhost, usable for both server and client authentication (etcd
// presents its server certificate as a client too: to its peers and to its own gRPC gateway).
// It returns the certificate and key files, <name>.pem and <name>-key.pem in Dir.
func (p *PKI) IssueServer(name string, notBefore, notAfter time.Time) (certFile, keyFile string, err error) {
	return p.issue(name, notBefore, notAfter, true, x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth)
}

// IssueWithUsage issues a certificate valid for IP 127.0.0.1 and DNS localhost with only the
// extended key usages given, for tests of certificates used for what they are not for.
func (p *PKI) IssueWithUsage(name string, notBefore, notAfter time.Time, usages ...x509.ExtKeyUsage) (certFile, keyFile string, err error) {
	return p.issue(name, notBefore, notAfter, true, usages...)
}

// IssueClient issues a client certificate with common name name (etcd maps it to a user when
// auth is on), valid from notBefore to notAfter: pass a window in the past for an expired
// certificate. It returns the certificate and key files, <name>.pem and <name>-key.pem in Dir.
func (p *PKI) IssueClient(name string, notBefore, notAfter time.Time) (certFile, keyFile string, err error) {
	return p.issue(name, notBefore, notAfter, false, x509.ExtKeyUsageClientAuth)
}

func (p *PKI) issue(name string, notBefore, notAfter time.Time, sans bool, usages ...x509.ExtKeyUsage) (certFile, keyFile string, err error) {
	if name == "" || name == "ca" || strings.ContainsAny(name, `/\`) || strings.HasPrefix(name, ".") {
		return "", "", fmt.Errorf("issue certificate %q: name must be a plain file name other than \"ca\"", name)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", fmt.Errorf("generate key for %s: %w", name, err)
	}
	serial, err := newSerial()
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name, Organization: []string{"etcdguard test"}},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usages,
	}
	if sans {
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		return "", "", fmt.Errorf("create certificate %s: %w", name, err)
	}
	certFile = filepath.Join(p.Dir, name+".pem")
	keyFile = filepath.Join(p.Dir, name+"-key.pem")
	if err := writePEM(certFile, "CERTIFICATE", der); err != nil {
		return "", "", err
	}
	if err := writeKey(keyFile, key); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// ClientTLS returns the TLS configuration of a client that trusts the CA in caFile and presents
// the certificate in certFile and keyFile. It checks nothing about the certificate's validity, and
// presents it even to a server that does not trust its issuer, so that tests can present bad ones.
func ClientTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("read CA file %s: no PEM certificate in it", caFile)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load client certificate %s: %w", certFile, err)
	}
	return &tls.Config{
		RootCAs: pool,
		// Present the certificate whatever CAs the server says it accepts, as etcdctl does
		// (etcd's transport.TLSInfo); with Certificates instead, Go's client would send no
		// certificate at all to a server that does not trust its issuer.
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &cert, nil
		},
		MinVersion: tls.VersionTLS12,
	}, nil
}

func newSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generate certificate serial number: %w", err)
	}
	// Keep the serial positive and at least 4 bytes long (the CA name uses its first 4 bytes).
	return serial.SetBit(serial, 126, 1), nil
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encode key %s: %w", path, err)
	}
	return writePEM(path, "PRIVATE KEY", der)
}

// writePEM writes one PEM block to path with mode 0600, replacing the file atomically. There is
// no fsync: these files are thrown away with the test.
func writePEM(path, blockType string, der []byte) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp.Name())
		}
	}()
	// CreateTemp already makes the file 0600.
	if err := pem.Encode(tmp, &pem.Block{Type: blockType, Bytes: der}); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
