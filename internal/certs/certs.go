// Package certs lists the certificates of etcd's and Kubernetes' PKI folders with their
// validity, and re-issues etcd's certificates from the CA key, keeping the old files.
package certs

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/etcdguard/etcdguard/internal/atomicfile"
)

// WarnDays is how close to its expiry a certificate gets a warning, as kubeadm warns.
const WarnDays = 30

// ErrCAInvalid is returned (wrapped) when renewal is refused because the CA itself is expired
// or not yet valid: certificates it signed now would not be trusted either.
var ErrCAInvalid = errors.New("the CA certificate is not valid")

// MaxValidityDays is the longest validity Renew issues, in days: ten years, the validity
// kubeadm gives its CAs. A leaf certificate is never meant to outlive that.
const MaxValidityDays = 3650

// ErrBadValidity is returned (wrapped) when the validity asked of Renew is not between one day
// and MaxValidityDays: zero or less would issue certificates already expired.
var ErrBadValidity = errors.New("the validity asked for is out of range")

// ErrBeyondCA is returned (wrapped) when the validity asked of Renew would end after the CA's own
// expiry and clamping was not asked for: the certificates would stop being trusted before the date
// they carry.
var ErrBeyondCA = errors.New("the validity asked for ends after the CA's")

// States of a certificate.
const (
	StateOK          = "ok"
	StateExpiring    = "expiring"
	StateExpired     = "expired"
	StateNotYetValid = "not-yet-valid"
)

// Cert is one certificate found in a PKI folder.
type Cert struct {
	Path      string    `json:"path"`
	KeyPath   string    `json:"key_path,omitempty"`
	Subject   string    `json:"subject"`
	SANs      []string  `json:"sans,omitempty"`
	Issuer    string    `json:"issuer"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	DaysLeft  int       `json:"days_left"`
	IsCA      bool      `json:"is_ca"`
	State     string    `json:"state"`

	cert *x509.Certificate
}

// Scan lists every certificate under the folders (recursively), with its state at now.
func Scan(dirs []string, now time.Time) ([]Cert, error) {
	var out []Cert
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() || !isCertName(d.Name()) {
				return nil
			}
			c, err := load(p, now)
			if err != nil {
				return nil // not a certificate (a key, a CSR): not ours to judge
			}
			out = append(out, c)
			return nil
		})
		if err != nil {
			return out, fmt.Errorf("scan %s: %w", dir, err)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

func isCertName(n string) bool {
	if strings.Contains(n, ".old-") || strings.Contains(n, "key") {
		return false
	}
	return strings.HasSuffix(n, ".crt") || strings.HasSuffix(n, ".pem") || strings.HasSuffix(n, ".cert")
}

func load(path string, now time.Time) (Cert, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Cert{}, err
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return Cert{}, errors.New("no certificate")
	}
	x, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return Cert{}, err
	}
	c := Cert{Path: path, Subject: x.Subject.String(), Issuer: x.Issuer.String(), NotBefore: x.NotBefore, NotAfter: x.NotAfter,
		IsCA: x.IsCA, cert: x, DaysLeft: int(x.NotAfter.Sub(now).Hours() / 24)}
	c.SANs = append(c.SANs, x.DNSNames...)
	for _, ip := range x.IPAddresses {
		c.SANs = append(c.SANs, ip.String())
	}
	if k := keyFor(path); k != "" {
		c.KeyPath = k
	}
	switch {
	case now.Before(x.NotBefore):
		c.State = StateNotYetValid
	case now.After(x.NotAfter):
		c.State = StateExpired
	case x.NotAfter.Sub(now) < WarnDays*24*time.Hour:
		c.State = StateExpiring
	default:
		c.State = StateOK
	}
	return c, nil
}

// keyFor finds the key file of a certificate: name.key beside name.crt (kubeadm), or
// name-key.pem beside name.pem (cfssl); "" if there is none.
func keyFor(cert string) string {
	var candidates []string
	switch {
	case strings.HasSuffix(cert, ".crt"):
		candidates = append(candidates, strings.TrimSuffix(cert, ".crt")+".key")
	case strings.HasSuffix(cert, ".pem"):
		candidates = append(candidates, strings.TrimSuffix(cert, ".pem")+"-key.pem", strings.TrimSuffix(cert, ".pem")+".key")
	}
	for _, k := range candidates {
		if _, err := os.Stat(k); err == nil {
			return k
		}
	}
	return ""
}

// Renewed is one re-issued certificate.
type Renewed struct {
	Path     string    `json:"path"`
	Old      string    `json:"old"`
	NotAfter time.Time `json:"not_after"`
	Subject  string    `json:"subject"`
	// ClampedToCA is set when the validity asked for was cut to the CA's expiry (NotAfter).
	ClampedToCA bool `json:"clamped_to_ca,omitempty"`
}

// RenewOptions is how long renewed certificates are valid.
type RenewOptions struct {
	// Validity is how long each new certificate is valid from now: one day to MaxValidityDays.
	Validity time.Duration
	// ClampToCA cuts a validity that would end after the CA's expiry to that expiry (each
	// Renewed says so); without it, such a renewal is refused with ErrBeyondCA.
	ClampToCA bool
}

// check refuses a validity out of range, or past the CA's expiry unless clamping is asked for.
// It returns the NotAfter of the new certificates and whether it was clamped.
func (o RenewOptions) check(now time.Time, caPath string, ca *x509.Certificate) (time.Time, bool, error) {
	if o.Validity < 24*time.Hour || o.Validity > MaxValidityDays*24*time.Hour {
		return time.Time{}, false, fmt.Errorf("%w: a validity of %d days would issue certificates expired when written or valid for longer than a CA; give 1 to %d days",
			ErrBadValidity, int64(o.Validity/(24*time.Hour)), MaxValidityDays)
	}
	notAfter := now.Add(o.Validity)
	if !notAfter.After(ca.NotAfter) {
		return notAfter, false, nil
	}
	if o.ClampToCA {
		return ca.NotAfter, true, nil
	}
	left := int64(ca.NotAfter.Sub(now) / (24 * time.Hour))
	next := fmt.Sprintf("give a validity of at most %d days", left)
	if left < 1 {
		next = "less than a day is left"
	}
	return time.Time{}, false, fmt.Errorf("%w: the CA %s expires on %s, before %d days from now: %s, and renew the CA (a new one: kubeadm init phase certs etcd-ca) before then",
		ErrBeyondCA, caPath, ca.NotAfter.UTC().Format("2006-01-02"), int64(o.Validity/(24*time.Hour)), next)
}

// Renew re-issues, from the CA of dir (ca.crt and ca.key, or ca.pem and ca-key.pem), every
// certificate in dir, and in its parent folder (where kubeadm keeps apiserver-etcd-client), that
// this CA signed: same subject, SANs and usages, same key, valid from now for opts.Validity.
// Each old certificate is kept beside it as NAME.old-TIME. It refuses, before writing anything,
// if the CA is expired or not yet valid (ErrCAInvalid), if the validity is out of range
// (ErrBadValidity), or if it would end after the CA's expiry and opts.ClampToCA is not set
// (ErrBeyondCA).
func Renew(dir string, now time.Time, opts RenewOptions) ([]Renewed, error) {
	ca, caPath, caKey, err := loadCA(dir, now)
	if err != nil {
		return nil, err
	}
	notAfter, clamped, err := opts.check(now, caPath, ca)
	if err != nil {
		return nil, err
	}
	var candidates []string
	for _, d := range []string{dir, filepath.Dir(dir)} {
		entries, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if !e.IsDir() && isCertName(e.Name()) {
				candidates = append(candidates, filepath.Join(d, e.Name()))
			}
		}
	}
	var out []Renewed
	for _, p := range candidates {
		c, err := load(p, now)
		if err != nil || c.IsCA || c.cert.CheckSignatureFrom(ca) != nil {
			continue
		}
		if c.KeyPath == "" {
			return out, fmt.Errorf("renew %s: its key file (.key or -key.pem beside it) is missing", p)
		}
		key, err := loadKey(c.KeyPath)
		if err != nil {
			return out, fmt.Errorf("renew %s: %w", p, err)
		}
		serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
		if err != nil {
			return out, err
		}
		old := c.cert
		tmpl := &x509.Certificate{
			SerialNumber: serial, Subject: old.Subject, NotBefore: now.Add(-5 * time.Minute), NotAfter: notAfter,
			KeyUsage: old.KeyUsage, ExtKeyUsage: old.ExtKeyUsage, DNSNames: old.DNSNames, IPAddresses: old.IPAddresses,
			URIs: old.URIs, EmailAddresses: old.EmailAddresses,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, publicKey(key), caKey)
		if err != nil {
			return out, fmt.Errorf("renew %s: %w", p, err)
		}
		oldPath := p + ".old-" + now.UTC().Format("20060102T150405Z")
		if err := copyFile(p, oldPath); err != nil {
			return out, fmt.Errorf("keep %s: %w", p, err)
		}
		if err := writeAtomic(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})); err != nil {
			return out, err
		}
		out = append(out, Renewed{Path: p, Old: oldPath, NotAfter: notAfter, Subject: old.Subject.String(), ClampedToCA: clamped})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no certificate signed by the CA of %s was found to renew", dir)
	}
	return out, nil
}

func loadCA(dir string, now time.Time) (*x509.Certificate, string, crypto.Signer, error) {
	for _, pair := range [][2]string{{"ca.crt", "ca.key"}, {"ca.pem", "ca-key.pem"}} {
		cp, kp := filepath.Join(dir, pair[0]), filepath.Join(dir, pair[1])
		if _, err := os.Stat(cp); err != nil {
			continue
		}
		c, err := load(cp, now)
		if err != nil {
			return nil, "", nil, fmt.Errorf("read CA %s: %w", cp, err)
		}
		if c.State == StateExpired || c.State == StateNotYetValid {
			return nil, "", nil, fmt.Errorf("%w: %s is valid from %s to %s, and the clock says %s: a new CA is needed (kubeadm init phase certs etcd-ca), or fix the clock",
				ErrCAInvalid, cp, c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		}
		key, err := loadKey(kp)
		if err != nil {
			return nil, "", nil, fmt.Errorf("read CA key %s: %w", kp, err)
		}
		return c.cert, cp, key, nil
	}
	return nil, "", nil, fmt.Errorf("no CA in %s (ca.crt and ca.key, or ca.pem and ca-key.pem)", dir)
}

func loadKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%s holds no PEM key", path)
	}
	for _, parse := range []func([]byte) (any, error){
		x509.ParsePKCS8PrivateKey,
		func(b []byte) (any, error) { return x509.ParseECPrivateKey(b) },
		func(b []byte) (any, error) { return x509.ParsePKCS1PrivateKey(b) },
	} {
		if k, err := parse(block.Bytes); err == nil {
			if s, ok := k.(crypto.Signer); ok {
				return s, nil
			}
		}
	}
	return nil, fmt.Errorf("%s: unsupported key", path)
}

func publicKey(k crypto.Signer) crypto.PublicKey { return k.Public() }

func copyFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	return writeFileMode(dst, data, st.Mode().Perm())
}

func writeAtomic(path string, data []byte) error {
	mode := os.FileMode(0o600)
	if st, err := os.Stat(path); err == nil {
		mode = st.Mode().Perm()
	}
	return atomicfile.Write(path, data, mode)
}

func writeFileMode(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
