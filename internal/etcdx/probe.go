package etcdx

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"reflect"
	"strings"
	"syscall"
	"time"
)

// Probe dials one endpoint the way the etcd client would (TCP, then TLS when configured) and, when
// that fails, returns an error that says which step failed and why: connection refused (etcd is
// not running there), a timeout (host down or filtered), or a certificate problem explained with
// the certificate's name and dates. A nil error means the transport works; it says nothing about
// etcd's health.
func (c Config) Probe(ctx context.Context, endpoint string) error {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		return withFault(FaultBadEndpoint, fmt.Errorf("endpoint %q is not a URL such as https://10.0.0.1:2379", endpoint))
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "2379")
	}
	ctx, cancel := context.WithTimeout(ctx, c.dialTimeout())
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return explainDial(endpoint, err)
	}
	defer conn.Close()
	if u.Scheme != "https" {
		return nil
	}
	base, err := c.TLS()
	if err != nil {
		return err
	}
	if base == nil {
		base = &tls.Config{}
	}
	var leaf *x509.Certificate
	var verifyErr error
	cfg := base.Clone()
	cfg.InsecureSkipVerify = true // verification is done below, so the error can be explained.
	cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
		certs := make([]*x509.Certificate, 0, len(raw))
		for _, r := range raw {
			cert, err := x509.ParseCertificate(r)
			if err != nil {
				return err
			}
			certs = append(certs, cert)
		}
		if len(certs) == 0 {
			return errors.New("the member sent no certificate")
		}
		leaf = certs[0]
		inter := x509.NewCertPool()
		for _, cert := range certs[1:] {
			inter.AddCert(cert)
		}
		_, verifyErr = leaf.Verify(x509.VerifyOptions{
			Roots:         base.RootCAs,
			Intermediates: inter,
			DNSName:       u.Hostname(),
			CurrentTime:   c.now(),
		})
		return verifyErr
	}
	tconn := tls.Client(conn, cfg)
	_ = conn.SetDeadline(time.Now().Add(c.dialTimeout()))
	err = tconn.HandshakeContext(ctx)
	if err == nil {
		// TLS 1.3 reports a rejected client certificate only on the first read.
		_ = tconn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, err = tconn.Read(make([]byte, 1))
		var ne net.Error
		if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
			return nil
		}
	}
	if verifyErr != nil {
		return c.explainServerCert(endpoint, leaf, verifyErr)
	}
	return c.explainHandshake(endpoint, err)
}

func explainDial(endpoint string, err error) error {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return withFault(FaultRefused, fmt.Errorf("%s: connection refused: etcd is not running there or listens on another port; check the member (systemctl status etcd, crictl ps -a | grep etcd) and its logs", endpoint))
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return withFault(FaultTimeout, fmt.Errorf("%s: no answer within the dial timeout: the host is down, unreachable or filtered; check it and the network (or raise --dial-timeout)", endpoint))
	case errors.As(err, new(*net.DNSError)):
		return withFault(FaultDNS, fmt.Errorf("%s: the host name does not resolve: fix --endpoints or DNS", endpoint))
	}
	return fmt.Errorf("%s: connect: %w", endpoint, err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (c Config) explainServerCert(endpoint string, leaf *x509.Certificate, err error) error {
	var invalid x509.CertificateInvalidError
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	const day = 24 * time.Hour
	now := c.now()
	switch {
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired && leaf != nil && now.After(leaf.NotAfter):
		return withFault(FaultServerCertExpired, fmt.Errorf("%s: the member's server certificate (subject %q) expired on %s, %d days ago: renew the etcd server certificates (kubeadm certs renew etcd-server etcd-peer) and restart etcd, or fix the clock if the date is wrong (now %s)",
			endpoint, leaf.Subject.CommonName, leaf.NotAfter.UTC().Format(time.RFC3339), int(now.Sub(leaf.NotAfter)/day), now.UTC().Format(time.RFC3339)))
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired && leaf != nil:
		return withFault(FaultServerCertNotYetValid, fmt.Errorf("%s: the member's server certificate (subject %q) is not valid until %s, %s from now by the clock, which says %s: the clock is probably wrong (after a power cut, check timedatectl / chronyc tracking)",
			endpoint, leaf.Subject.CommonName, leaf.NotBefore.UTC().Format(time.RFC3339), howLong(leaf.NotBefore.Sub(now)), now.UTC().Format(time.RFC3339)))
	case errors.As(err, &invalid) && invalid.Reason == x509.IncompatibleUsage && leaf != nil:
		return withFault(FaultServerCertUsage, fmt.Errorf("%s: the member's certificate (subject %q) is not for server authentication (its extended key usage lacks serverAuth): re-issue it with serverAuth (kubeadm: kubeadm certs renew etcd-server)", endpoint, leaf.Subject.CommonName))
	case errors.As(err, &unknown):
		issuer := ""
		if leaf != nil {
			issuer = leaf.Issuer.CommonName
		}
		ca := c.CACert
		if ca == "" {
			ca = "the system trust store (no --cacert given)"
		}
		return withFault(FaultUnknownAuthority, fmt.Errorf("%s: the member's certificate is signed by %q, which %s does not trust: pass etcd's CA with --cacert (kubeadm: /etc/kubernetes/pki/etcd/ca.crt)", endpoint, issuer, ca))
	case errors.As(err, &host):
		return withFault(FaultSANMismatch, fmt.Errorf("%s: the member's certificate does not cover the address dialled (%s; it covers %s): use an endpoint address listed in the certificate or re-issue it with that SAN",
			endpoint, host.Host, strings.Join(certNames(host.Certificate), ", ")))
	}
	return fmt.Errorf("%s: verify the member's certificate: %w", endpoint, err)
}

func certNames(cert *x509.Certificate) []string {
	if cert == nil {
		return nil
	}
	names := append([]string(nil), cert.DNSNames...)
	for _, ip := range cert.IPAddresses {
		names = append(names, ip.String())
	}
	return names
}

func (c Config) explainHandshake(endpoint string, err error) error {
	alert, _ := remoteAlert(err)
	switch {
	case isTimeout(err), errors.Is(err, context.DeadlineExceeded):
		return withFault(FaultHung, fmt.Errorf("%s: accepted the connection but did not answer the TLS handshake within the dial timeout (%s): "+
			"the member is hung or overloaded (a stalled disk after a power event?), or another program holds the port; check the process and its logs there (or raise --dial-timeout)",
			endpoint, c.dialTimeout()))
	case alert == alertCertificateRequired, c.Cert == "" && alert == alertBadCertificate:
		return withFault(FaultClientCertRequired, fmt.Errorf("%s: the member requires a client certificate: pass --cert and --key (kubeadm: /etc/kubernetes/pki/etcd/healthcheck-client.crt and .key)", endpoint))
	case alert == alertCertificateExpired:
		return withFault(FaultClientCertExpired, fmt.Errorf("%s: the member rejected the client certificate %s as expired (or not yet valid by its clock): renew it, or check the member's clock", endpoint, c.Cert))
	case alert == alertUnknownCA, alert == alertBadCertificate:
		return withFault(FaultClientCertRejected, fmt.Errorf("%s: the member rejected the client certificate %s: it is not signed by the CA the member trusts (--trusted-ca-file); use a client certificate issued by etcd's CA", endpoint, c.Cert))
	case errors.As(err, new(tls.RecordHeaderError)):
		return withFault(FaultNotTLS, fmt.Errorf("%s: the member does not speak TLS on this port: use an http:// endpoint", endpoint))
	}
	return fmt.Errorf("%s: TLS handshake: %w", endpoint, err)
}

// TLS alerts a member sends about the client's certificate (RFC 8446, section 6).
const (
	alertBadCertificate      = 42
	alertCertificateExpired  = 45
	alertUnknownCA           = 48
	alertCertificateRequired = 116
)

// remoteAlert returns the code of the TLS alert the peer sent, if err is one. crypto/tls
// reports a received alert as a *net.OpError with Op "remote error" whose Err is of the
// unexported type tls.alert, a uint8; the code is read from that value (by its kind, as the
// type cannot be named), never from the message. tls.AlertError, which crypto/tls uses for
// QUIC, is taken too.
func remoteAlert(err error) (uint8, bool) {
	var ae tls.AlertError
	if errors.As(err, &ae) {
		return uint8(ae), true
	}
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "remote error" || op.Err == nil {
		return 0, false
	}
	if v := reflect.ValueOf(op.Err); v.Kind() == reflect.Uint8 {
		return uint8(v.Uint()), true
	}
	return 0, false
}
