package cli

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/etcdguard/etcdguard/internal/doctor"
	"github.com/etcdguard/etcdguard/internal/repository"
)

type doctorOptions struct {
	dataDirs []string
	pkiDirs  []string
	rpo      time.Duration
	timeout  time.Duration
	offline  bool
}

func newDoctorCommand(env Env, g *globalOptions) *cobra.Command {
	o := &doctorOptions{}
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Say what is wrong with a cluster, with the evidence and the command that fixes it",
		Long: `Run every check that applies, in parallel with bounded timeouts, and report findings worst first:
severity (ok, warning, critical), the check, the evidence, and the next action as a command.

Online checks (unless --offline): each endpoint (DNS, TCP refused or timed out, TLS with the
certificate problem explained), quorum and leader, raft term and index per member, lagging
members, learners, alarms (NOSPACE, CORRUPT), database size against the quota, fragmentation,
HashKV agreement across members, etcd versions with known data-loss bugs. Backups: the age of the
newest verified backup against --rpo, and copies by the 3-2-1 rule.

Offline checks (--data-dir, one per member, for when etcd does not start): strictly read-only.
Layout and permissions, the WAL (a torn tail etcd repairs itself, told apart from corruption in
the middle of the log, with file and offset), the snapshot etcd would load, the database (bbolt
check, the damaged pages named), revision, consistent index and term; a verdict per member and,
across several data dirs, the freshest one, whether an intact quorum exists, and the recover path.`,
		Example: `  etcdguard doctor --config /etc/etcdguard.yaml
  etcdguard doctor --offline --data-dir /var/lib/etcd
  etcdguard doctor --data-dir /mnt/cp1/etcd --data-dir /mnt/cp2/etcd --data-dir /mnt/cp3/etcd -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := g.resolve(env)
			if err != nil {
				return err
			}
			pkiDirs := o.pkiDirs
			if dir := pkiDirFrom(env); len(pkiDirs) == 0 && dir != "" {
				// As certs check: the kubeadm PKI when this host has one.
				pkiDirs = []string{dir}
			}
			opts := doctor.Options{DataDirs: o.dataDirs, PKIDirs: pkiDirs, RPO: o.rpo, Timeout: o.timeout, Now: env.Now}
			endpointsGiven := g.flags.Changed("endpoints") || env.Getenv("ETCDCTL_ENDPOINTS") != "" || (s.cfg.Targets != nil || len(s.cfg.Cluster.Members) > 0)
			online := !o.offline && (len(o.dataDirs) == 0 || endpointsGiven)
			if online {
				opts.Etcd = s.etcd
				opts.Targets = s.cfg.Targets
				if opts.Targets == nil {
					opts.Targets = []repository.Target{}
				}
			}
			findings := doctor.Run(commandContext(cmd), opts)
			if s.output == "json" {
				if err := writeJSON(env.Stdout, map[string]any{"worst": doctor.Worst(findings).String(), "findings": findings}); err != nil {
					return err
				}
			} else {
				printFindings(env.Stdout, findings)
			}
			return doctor.Err(findings)
		},
	}
	cmd.Flags().StringArrayVar(&o.dataDirs, "data-dir", nil, "a member's data dir to check offline, read-only (repeatable)")
	cmd.Flags().StringArrayVar(&o.pkiDirs, "pki-dir", nil, "a PKI folder whose certificates are checked against the clock (repeatable; default $ETCDGUARD_PKI_DIR, else /etc/kubernetes/pki, when present)")
	cmd.Flags().DurationVar(&o.rpo, "rpo", doctor.DefaultRPO, "how old the newest backup may be")
	cmd.Flags().DurationVar(&o.timeout, "timeout", 20*time.Second, "bound on the whole run")
	cmd.Flags().BoolVar(&o.offline, "offline", false, "skip the online checks")
	return cmd
}

func printFindings(w io.Writer, fs []doctor.Finding) {
	t := newTable(w, "SEVERITY", "CHECK", "SUBJECT", "FINDING")
	for _, f := range fs {
		t.row(strings.ToUpper(f.Severity.String()), f.Check, f.Subject, f.Summary)
	}
	_ = t.flush()
	for _, f := range fs {
		if f.Severity == doctor.OK {
			continue
		}
		fmt.Fprintf(w, "\n%s %s %s:\n  %s\n", strings.ToUpper(f.Severity.String()), f.Check, f.Subject, f.Summary)
		for _, e := range f.Evidence {
			fmt.Fprintf(w, "  evidence: %s\n", e)
		}
		if f.Next != "" {
			fmt.Fprintf(w, "  next: %s\n", f.Next)
		}
	}
	worst := doctor.Worst(fs)
	fmt.Fprintf(w, "\n%d findings, worst: %s\n", len(fs), worst)
}
