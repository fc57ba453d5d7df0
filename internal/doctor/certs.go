package doctor

import (
	"fmt"
	"time"

	"github.com/etcdguard/etcdguard/internal/certs"
)

// checkCerts checks every certificate of the PKI folders against this host's clock.
func checkCerts(dirs []string, now time.Time) []Finding {
	list, err := certs.Scan(dirs, now)
	if err != nil {
		return []Finding{{Severity: Warning, Check: "certificate", Subject: fmt.Sprint(dirs), Summary: err.Error()}}
	}
	var fs []Finding
	for _, c := range list {
		f := Finding{Check: "certificate", Subject: c.Path,
			Evidence: []string{fmt.Sprintf("subject %s, valid %s to %s, this host's clock %s", c.Subject,
				c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))}}
		switch c.State {
		case certs.StateExpired:
			f.Severity, f.Summary = Critical, fmt.Sprintf("expired %d days ago", -c.DaysLeft)
			f.Next = "etcdguard certs renew --pki-dir DIR (or kubeadm certs renew); if the date is wrong, fix the clock first"
		case certs.StateNotYetValid:
			f.Severity, f.Summary = Critical, "not valid yet: this host's clock is probably wrong (reset by the power cut?)"
			f.Next = "fix the clock: timedatectl; chronyc tracking"
		case certs.StateExpiring:
			f.Severity, f.Summary = Warning, fmt.Sprintf("expires in %d days", c.DaysLeft)
			f.Next = "etcdguard certs renew --pki-dir DIR (or kubeadm certs renew)"
		default:
			f.Summary = fmt.Sprintf("valid, %d days left", c.DaysLeft)
		}
		fs = append(fs, f)
	}
	return fs
}
