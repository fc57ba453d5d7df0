package etcdx

import "errors"

// Fault names what stopped etcdguard from using an endpoint, for callers that act on the cause
// rather than on the words of the message: doctor picks its next step from it.
type Fault string

// The faults Probe and TLS tell apart. An error with none of them is some other failure.
const (
	FaultBadEndpoint           Fault = "bad-endpoint"
	FaultRefused               Fault = "connection-refused"
	FaultTimeout               Fault = "timeout"
	FaultHung                  Fault = "hung"
	FaultDNS                   Fault = "dns"
	FaultCAFile                Fault = "ca-file"
	FaultCAExpired             Fault = "ca-expired"
	FaultCANotYetValid         Fault = "ca-not-yet-valid"
	FaultClientCertFile        Fault = "client-cert-file"
	FaultKeyMismatch           Fault = "key-mismatch"
	FaultClientCertExpired     Fault = "client-cert-expired"
	FaultClientCertNotYetValid Fault = "client-cert-not-yet-valid"
	FaultClientCertUsage       Fault = "client-cert-usage"
	FaultClientCertRequired    Fault = "client-cert-required"
	FaultClientCertRejected    Fault = "client-cert-rejected"
	FaultServerCertExpired     Fault = "server-cert-expired"
	FaultServerCertNotYetValid Fault = "server-cert-not-yet-valid"
	FaultServerCertUsage       Fault = "server-cert-usage"
	FaultUnknownAuthority      Fault = "unknown-authority"
	FaultSANMismatch           Fault = "san-mismatch"
	FaultNotTLS                Fault = "not-tls"
)

// KnownFaults returns every Fault that Probe and TLS can report.
func KnownFaults() []Fault {
	return []Fault{
		FaultBadEndpoint, FaultRefused, FaultTimeout, FaultHung, FaultDNS, FaultCAFile, FaultCAExpired, FaultCANotYetValid,
		FaultClientCertFile, FaultKeyMismatch, FaultClientCertExpired, FaultClientCertNotYetValid, FaultClientCertUsage,
		FaultClientCertRequired, FaultClientCertRejected, FaultServerCertExpired, FaultServerCertNotYetValid,
		FaultServerCertUsage, FaultUnknownAuthority, FaultSANMismatch, FaultNotTLS,
	}
}

// FaultError is an error that says which Fault it is; its message is the wrapped error's.
type FaultError struct {
	Fault Fault
	Err   error
}

func (e *FaultError) Error() string { return e.Err.Error() }
func (e *FaultError) Unwrap() error { return e.Err }

func withFault(f Fault, err error) error { return &FaultError{Fault: f, Err: err} }

// FaultOf returns the Fault that err carries, or "" when it carries none.
func FaultOf(err error) Fault {
	var fe *FaultError
	if errors.As(err, &fe) {
		return fe.Fault
	}
	return ""
}
