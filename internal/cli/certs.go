package cli

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/etcdguard/etcdguard/internal/certs"
	"github.com/etcdguard/etcdguard/internal/doctor"
)

type certsOptions struct {
	pkiDirs []string
	days    int
}

// defaultPKIDir is where kubeadm keeps the cluster's certificates (etcd's in etcd/): the PKI
// folder doctor and certs check read when none is given and ETCDGUARD_PKI_DIR names no other.
const defaultPKIDir = "/etc/kubernetes/pki"

// defaultRenewDays is the validity certs renew gives by default, kubeadm's.
const defaultRenewDays = 365

// pkiDirFrom is the default PKI folder: ETCDGUARD_PKI_DIR, else defaultPKIDir; "" when that
// folder does not exist here.
func pkiDirFrom(env Env) string {
	dir := defaultPKIDir
	if v := env.Getenv("ETCDGUARD_PKI_DIR"); v != "" {
		dir = v
	}
	if st, err := os.Stat(dir); err == nil && st.IsDir() {
		return dir
	}
	return ""
}

func newCertsCommand(env Env, g *globalOptions) *cobra.Command {
	o := &certsOptions{}
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Check and renew the certificates of etcd and Kubernetes",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.PersistentFlags().StringArrayVar(&o.pkiDirs, "pki-dir", nil, "PKI folder (repeatable; default $ETCDGUARD_PKI_DIR, else /etc/kubernetes/pki, when present)")

	check := &cobra.Command{
		Use:   "check",
		Short: "List every certificate with its subject, SANs, issuer, validity and days left",
		Long: `List every certificate in the PKI folders (default /etc/kubernetes/pki, which holds etcd's in etcd/),
like 'kubeadm certs check-expiration': subject, SANs, issuer, not-before, not-after and days left.
A certificate within 30 days of its expiry is a warning; an expired or not yet valid one is
critical (a "not yet valid" certificate after a power cut usually means the clock was reset).`,
		Example: `  etcdguard certs check
  etcdguard certs check --pki-dir /etc/kubernetes/pki/etcd -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := g.resolve(env)
			if err != nil {
				return err
			}
			dirs, err := o.dirs(env)
			if err != nil {
				return err
			}
			list, err := certs.Scan(dirs, env.Now())
			if err != nil {
				return err
			}
			if s.output == "json" {
				if err := writeJSON(env.Stdout, map[string]any{"certificates": list}); err != nil {
					return err
				}
			} else {
				t := newTable(env.Stdout, "CERTIFICATE", "SUBJECT", "SANS", "ISSUER", "NOT BEFORE", "NOT AFTER", "DAYS LEFT", "STATE")
				for _, c := range list {
					t.row(c.Path, c.Subject, strings.Join(c.SANs, ","), c.Issuer, c.NotBefore.UTC().Format("2006-01-02"), c.NotAfter.UTC().Format("2006-01-02"),
						fmt.Sprint(c.DaysLeft), c.State)
				}
				if err := t.flush(); err != nil {
					return err
				}
			}
			var fs []doctor.Finding
			for _, c := range list {
				switch c.State {
				case certs.StateExpired, certs.StateNotYetValid:
					fs = append(fs, doctor.Finding{Severity: doctor.Critical, Check: "certificate", Subject: c.Path})
				case certs.StateExpiring:
					fs = append(fs, doctor.Finding{Severity: doctor.Warning, Check: "certificate", Subject: c.Path})
				}
			}
			if len(fs) > 0 && s.output == "table" {
				fmt.Fprintln(env.Stdout, "renew etcd's certificates with: etcdguard certs renew --pki-dir /etc/kubernetes/pki/etcd (or kubeadm certs renew)")
			}
			return doctor.Err(fs)
		},
	}

	renew := &cobra.Command{
		Use:   "renew --pki-dir DIR",
		Short: "Re-issue etcd's server, peer and client certificates from the CA key, keeping the old files",
		Long: `Re-issue, from the CA in DIR (ca.crt and ca.key, or ca.pem and ca-key.pem), every certificate in
DIR and in its parent folder that this CA signed: on kubeadm, /etc/kubernetes/pki/etcd holds the
etcd server, peer and healthcheck-client certificates and its parent the apiserver-etcd-client
one. Subject, SANs, usages and keys are kept; the new certificates are valid for --days (1 to
3650). A --days that would end after the CA's own expiry is refused; the default (365) is cut to
the CA's expiry, with a warning. Each old certificate is kept beside it as NAME.old-TIME.
Refused if the CA itself is expired or not yet valid. Restart etcd (and kube-apiserver)
afterwards so they present the new certificates.`,
		Example: `  etcdguard certs renew --pki-dir /etc/kubernetes/pki/etcd`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := g.resolve(env)
			if err != nil {
				return err
			}
			if len(o.pkiDirs) != 1 {
				return fmt.Errorf("%w: give one --pki-dir, the folder of etcd's CA (kubeadm: /etc/kubernetes/pki/etcd)", ErrUsage)
			}
			if o.days < 1 || o.days > certs.MaxValidityDays {
				return fmt.Errorf("%w: --days %d: give 1 to %d days (the default is %d): zero or less would issue certificates already expired, and none should outlive a ten-year CA",
					ErrUsage, o.days, certs.MaxValidityDays, defaultRenewDays)
			}
			// An explicit --days past the CA's expiry is refused; the default is cut to it,
			// with a warning, so that renewing under a CA near its end still works.
			renewed, err := certs.Renew(o.pkiDirs[0], env.Now(), certs.RenewOptions{
				Validity:  time.Duration(o.days) * 24 * time.Hour,
				ClampToCA: !cmd.Flags().Changed("days"),
			})
			if errors.Is(err, certs.ErrBadValidity) || errors.Is(err, certs.ErrBeyondCA) {
				return fmt.Errorf("%w: --days %d: %w", ErrUsage, o.days, err)
			}
			for _, r := range renewed {
				if r.ClampedToCA {
					fmt.Fprintf(env.Stderr, "warning: the CA expires on %s, before the %d days of the default validity: the new certificates end then; renew the CA before that date\n",
						r.NotAfter.UTC().Format("2006-01-02"), o.days)
					break
				}
			}
			if s.output == "json" {
				if jerr := writeJSON(env.Stdout, map[string]any{"renewed": renewed}); jerr != nil {
					return jerr
				}
			} else {
				for _, r := range renewed {
					fmt.Fprintf(env.Stdout, "renewed %s (%s) until %s; the old one is kept at %s\n", r.Path, r.Subject, r.NotAfter.UTC().Format("2006-01-02"), r.Old)
				}
				if err == nil {
					fmt.Fprintln(env.Stdout, "next: restart each etcd member, one at a time, then kube-apiserver")
				}
			}
			return err
		},
	}
	renew.Flags().IntVar(&o.days, "days", defaultRenewDays, "validity of the new certificates, in days: 1 to 3650, and not past the CA's expiry (the default is cut to it, with a warning)")
	cmd.AddCommand(check, renew)
	return cmd
}

func (o *certsOptions) dirs(env Env) ([]string, error) {
	if len(o.pkiDirs) > 0 {
		return o.pkiDirs, nil
	}
	if dir := pkiDirFrom(env); dir != "" {
		return []string{dir}, nil
	}
	return nil, fmt.Errorf("%w: no %s here: give --pki-dir (or set ETCDGUARD_PKI_DIR)", ErrUsage, defaultPKIDir)
}
