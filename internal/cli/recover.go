package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/etcdguard/etcdguard/internal/cluster"
	"github.com/etcdguard/etcdguard/internal/restore"
)

// errNotConfirmed is returned when the operator does not confirm a recovery plan.
var errNotConfirmed = errors.New("not confirmed: nothing was changed")

type recoverOptions struct {
	members          []string
	lost             []string
	stopControlPlane bool
	yes              bool
	dryRun           bool
	noBump           bool
	stateDir         string
	fresh            bool
	maxPlanAge       time.Duration
	etcdVersion      string
	allowVersionSkew bool
	toRevision       int64
	toTime           string
	noDelta          bool
}

func newRecoverCommand(env Env, g *globalOptions) *cobra.Command {
	o := &recoverOptions{}
	cmd := &cobra.Command{
		Use:   "recover",
		Short: "Bring a whole cluster back after a power loss, by the safest path",
		Long: `Recover a cluster whose members went down together: assess every member (read-only), decide the
safest path and show it as a plan with the data it would lose, ask for confirmation, carry it out,
verify the result and report.

The paths, safest first:
  start    enough members have intact data for quorum: start them (etcd repairs a torn WAL tail
           itself) and replace the damaged ones; nothing is lost
  replace  a quorum is running: replace the members whose data is damaged or missing (remove,
           add back, start on an empty data dir); nothing is lost
  restore  no quorum can form: restore every member from the freshest intact source, a surviving
           member's database or the newest verified backup, whichever is newer, with a new
           cluster token and a Kubernetes-safe revision bump

Old data dirs are never deleted: they are moved aside and the report says where. The cluster is
described once, in --config (cluster.members) or with --member. Each member says how to stop and
start it: a systemd unit, a kubeadm static-pod manifest, or start and stop commands.

An interrupted recovery is finished by running recover again: the plan is kept in --state-dir
until the recovery is verified. For members on several hosts, make the plan on one host
('recover plan') and apply each member's part where it lives ('recover apply').`,
		Example: `  # see the plan only
  etcdguard recover --config /etc/etcdguard.yaml --dry-run

  # carry it out without asking
  etcdguard recover --config /etc/etcdguard.yaml --yes

  # describe members on the command line
  etcdguard recover --yes --target file:///var/backups/etcd \
    --member name=cp1,peer-url=https://10.0.0.1:2380,client-url=https://10.0.0.1:2379,data-dir=/var/lib/etcd,systemd-unit=etcd.service ...`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, r, err := o.recoverer(env, g, nil)
			if err != nil {
				return err
			}
			ctx := commandContext(cmd)
			if !o.dryRun { // a dry run only reads: it creates no state dir and takes no lock
				unlock, err := r.LockState()
				if err != nil {
					return err
				}
				defer unlock()
			}
			plan, resumed, setAside, err := r.PlanOrResume(ctx, o.fresh)
			for _, f := range setAside {
				fmt.Fprintf(messages(env, s), "unfinished plan set aside, kept as %s\n", f)
			}
			if err != nil {
				return err
			}
			if resumed {
				fmt.Fprintf(messages(env, s), "resuming recovery %s, planned %s and not finished; its members are as it recorded them (use --new-plan to assess again instead)\n", plan.ID, plan.Created.Format(time.RFC3339))
			}
			if s.output == "table" {
				printPlan(env.Stdout, plan)
			}
			if o.dryRun {
				if s.output == "json" {
					return writeJSON(env.Stdout, plan)
				}
				fmt.Fprintln(env.Stdout, "dry run: nothing was changed")
				return nil
			}
			if plan.Path == restore.PathNone {
				if s.output == "json" {
					return writeJSON(env.Stdout, restore.Report{Plan: plan})
				}
				return nil
			}
			if !o.yes {
				if err := confirm(env, plan); err != nil {
					return err
				}
			}
			rep, err := r.Apply(ctx, plan, nil)
			rep.Resumed = resumed
			return writeReport(env, s, rep, err, "etcdguard recover (with the same settings)")
		},
	}
	o.flags(cmd)
	cmd.Flags().BoolVar(&o.yes, "yes", false, "carry out the plan without asking")
	cmd.Flags().BoolVar(&o.dryRun, "dry-run", false, "show the plan and stop")
	cmd.Flags().BoolVar(&o.fresh, "new-plan", false, "assess and plan again even if an earlier recovery was not finished (its plan is kept, renamed .superseded.json)")
	cmd.PersistentFlags().DurationVar(&o.maxPlanAge, "max-plan-age", restore.DefaultMaxPlanAge, "a plan older than this is not carried on (an unfinished recovery, or recover apply's plan file): make a new one")
	cmd.AddCommand(newRecoverPlanCommand(env, g, o), newRecoverApplyCommand(env, g, o))
	return cmd
}

func (o *recoverOptions) flags(cmd *cobra.Command) {
	cmd.PersistentFlags().StringArrayVar(&o.members, "member", nil, "a member: name=,peer-url=,client-url=,data-dir= and one of systemd-unit=, static-pod-manifest=, or start-command= and stop-command= (repeatable; replaces cluster.members of --config); for 'recover apply', a member name")
	cmd.PersistentFlags().StringArrayVar(&o.lost, "lost", nil, "declare a member's data lost (checked with doctor on its host): it is not read, and a restore may replace it (repeatable)")
	cmd.PersistentFlags().BoolVar(&o.noBump, "no-bump", false, "restore without raising revisions (not Kubernetes-safe)")
	addPointFlags(cmd.PersistentFlags(), &o.toRevision, &o.toTime, &o.noDelta)
	cmd.PersistentFlags().StringVar(&o.stateDir, "state-dir", "", "where recovery plans are kept until finished (default /var/lib/etcdguard)")
	cmd.PersistentFlags().StringVar(&o.etcdVersion, "etcd-version", "", "the etcd version the members will run (3.5, 3.6.16, ...), when no readable member database records it; a restore from a backup of another version is checked against it")
	cmd.PersistentFlags().BoolVar(&o.allowVersionSkew, "allow-version-skew", false, "restore even a backup of a newer etcd than the members run (a downgrade), or across more than one minor version")
	cmd.PersistentFlags().BoolVar(&o.stopControlPlane, "stop-control-plane", false, "on a restore, move cluster.control-plane-manifests (kube-apiserver, controller-manager, scheduler static pods) out of the kubelet's folder first and back once etcd is verified")
}

// recoverer builds the Recoverer from the settings; a non-nil cluster (from a plan file) replaces
// the described one.
func (o *recoverOptions) recoverer(env Env, g *globalOptions, fromPlan *cluster.Cluster) (settings, *restore.Recoverer, error) {
	s, err := g.resolve(env)
	if err != nil {
		return s, nil, err
	}
	desc := s.cfg.Cluster
	if fromPlan != nil {
		desc = *fromPlan
	} else if len(o.members) > 0 {
		desc.Members = nil
		for _, v := range o.members {
			if !strings.Contains(v, "=") {
				return s, nil, fmt.Errorf("%w: --member %q: describe the member as name=...,peer-url=...,client-url=...,data-dir=... (a bare name is for 'recover apply')", ErrUsage, v)
			}
			m, err := cluster.ParseMemberFlag(v)
			if err != nil {
				return s, nil, fmt.Errorf("%w: %w", ErrUsage, err)
			}
			desc.Members = append(desc.Members, m)
		}
	}
	if o.etcdVersion != "" && !restore.ValidVersion(o.etcdVersion) {
		return s, nil, fmt.Errorf("%w: --etcd-version %q is not an etcd version (3.5, 3.6.16, ...)", ErrUsage, o.etcdVersion)
	}
	desc = desc.Clean()
	if err := desc.Validate(); err != nil {
		return s, nil, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	ids, err := loadIdentities(s)
	if err != nil {
		return s, nil, err
	}
	r := &restore.Recoverer{
		Etcd: s.etcd, Cluster: desc, Targets: s.cfg.Targets, Identities: ids,
		StateDir: firstNonEmpty(o.stateDir, s.cfg.StateDir), WorkDir: s.cfg.WorkDir, NoBump: o.noBump, StopControlPlane: o.stopControlPlane, Lost: o.lost,
		Logger: s.logger, Now: env.Now, MaxPlanAge: o.maxPlanAge,
		EtcdVersion: o.etcdVersion, AllowVersionSkew: o.allowVersionSkew,
	}
	if r.Point, err = parsePoint(o.toRevision, o.toTime, o.noDelta); err != nil {
		return s, nil, err
	}
	return s, r, nil
}

func confirm(env Env, p restore.Plan) error {
	fmt.Fprintf(env.Stdout, "carry out this plan (%s)? type yes: ", p.Path)
	line, err := bufio.NewReader(orEmpty(env.Stdin)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if strings.TrimSpace(line) != "yes" {
		fmt.Fprintln(env.Stdout)
		return fmt.Errorf("%w (give --yes to skip the question)", errNotConfirmed)
	}
	return nil
}

func orEmpty(r io.Reader) io.Reader {
	if r == nil {
		return strings.NewReader("")
	}
	return r
}

func printPlan(w io.Writer, p restore.Plan) {
	fmt.Fprintf(w, "recovery plan %s: path %s\n", p.ID, strings.ToUpper(p.Path))
	for _, why := range p.Why {
		fmt.Fprintf(w, "  because %s\n", why)
	}
	t := newTable(w, "  MEMBER", "ONLINE", "DATA DIR", "REVISION", "ACTION", "WHY")
	for i, a := range p.Assessments {
		online, data, rev := "no", "-", "-"
		if a.Online {
			online, rev = "yes", fmt.Sprint(a.Revision)
		}
		if a.Disk != nil {
			data = a.Disk.Verdict
			if a.Disk.DBRevision > 0 {
				rev = fmt.Sprint(a.Disk.DBRevision)
			}
		}
		act := p.Actions[i]
		t.row("  "+a.Name, online, data, rev, act.Do, act.Why)
	}
	_ = t.flush()
	for _, a := range p.Assessments {
		if a.Disk != nil {
			for _, pr := range a.Disk.Problems {
				fmt.Fprintf(w, "  %s: %s\n", a.Name, pr)
			}
		}
	}
	if p.Source != nil {
		src := "backup " + p.Source.BackupID
		if p.Source.ClusterID != "" {
			src += " of cluster " + p.Source.ClusterID
		}
		if p.Source.Kind == restore.SourceMember {
			src = "member " + p.Source.Member + "'s database " + p.Source.DBPath
		}
		fmt.Fprintf(w, "  source: %s, revision %d, sha256 %s\n", src, p.Source.Revision, p.Source.SHA256)
		fmt.Fprintf(w, "  new cluster token: %s\n", p.Token)
		if p.Bump > 0 {
			fmt.Fprintf(w, "  revision bump: %d (%s)\n", p.Bump, strings.Join(p.BumpWhy, "; "))
		} else {
			fmt.Fprintf(w, "  revision bump: none (%s)\n", strings.Join(p.BumpWhy, "; "))
		}
	}
	fmt.Fprintf(w, "  data lost: %d revisions, %.0f seconds (%s)\n", p.Loss.Revisions, p.Loss.Seconds, p.Loss.Note)
}

func printReport(w io.Writer, rep restore.Report) {
	fmt.Fprintln(w, "timeline:")
	var total time.Duration
	for _, st := range rep.Steps {
		total += st.Elapsed
		who := st.Member
		if who == "" {
			who = "cluster"
		}
		line := fmt.Sprintf("  %-22s %-8s %8s", st.Name, who, st.Elapsed.Round(time.Millisecond))
		if st.Note != "" {
			line += "  " + st.Note
		}
		fmt.Fprintln(w, line)
	}
	for name, path := range rep.Quarantined {
		fmt.Fprintf(w, "old data dir of %s kept, untouched, at %s\n", name, path)
	}
	if rep.Verified != nil {
		fmt.Fprintf(w, "verified: %s\n", rep.Verified.Summary())
	}
	p := rep.Plan
	fmt.Fprintf(w, "data lost: %d revisions, %.0f seconds\n", p.Loss.Revisions, p.Loss.Seconds)
	for _, n := range rep.Next {
		fmt.Fprintf(w, "next: %s\n", n)
	}
}

// writeReport prints a recovery's report and, when it stopped half-way, how to carry on with
// the command again; it returns the recovery's error.
func writeReport(env Env, s settings, rep restore.Report, err error, again string) error {
	if s.output == "json" {
		if jerr := writeJSON(env.Stdout, rep); jerr != nil {
			return jerr
		}
		return err
	}
	printReport(env.Stdout, rep)
	if err != nil {
		printUnfinished(env.Stdout, rep.Plan, rep, err, again)
	}
	return err
}

// printUnfinished tells the operator, after a failed step, where things stand and how to go on.
func printUnfinished(w io.Writer, p restore.Plan, rep restore.Report, err error, again string) {
	if errors.Is(err, restore.ErrOtherHost) {
		fmt.Fprintf(w, "\nrecovery %s: this host's part is done; members on other hosts are left to them (see the error for the command to run on each), then run here again to verify: %s\n", p.ID, again)
		return
	}
	fmt.Fprintf(w, "\nrecovery %s did not finish. Fix the cause above, then run: %s\n", p.ID, again)
	fmt.Fprintln(w, "it carries on with the same plan; members already restored are not restored again")
	for name, path := range rep.Quarantined {
		fmt.Fprintf(w, "old data dir of %s kept at %s\n", name, path)
	}
	if len(p.Cluster.ControlPlaneManifests) > 0 {
		fmt.Fprintln(w, "control-plane manifests moved out (if --stop-control-plane) are held beside the kubelet's folder as etcdguard-held-NAME")
	}
}

type planOptions struct {
	out string
}

func newRecoverPlanCommand(env Env, g *globalOptions, ro *recoverOptions) *cobra.Command {
	o := &planOptions{}
	cmd := &cobra.Command{
		Use:   "plan --out plan.json",
		Short: "Assess the cluster and write the recovery plan, changing nothing",
		Long: `Assess every member and write the recovery plan to a file, for 'recover apply' to carry out
member by member, on each member's host. The plan carries the path, the new cluster token, the
source (backup id or member database) and its SHA-256, the revision bump and the member list.`,
		Example: `  etcdguard recover plan --config /etc/etcdguard.yaml --out /root/plan.json`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, r, err := ro.recoverer(env, g, nil)
			if err != nil {
				return err
			}
			p, err := r.Plan(commandContext(cmd))
			if err != nil {
				return err
			}
			if o.out != "" {
				if err := restore.WritePlan(o.out, p); err != nil {
					return err
				}
			}
			if s.output == "json" {
				return writeJSON(env.Stdout, p)
			}
			printPlan(env.Stdout, p)
			if o.out != "" {
				fmt.Fprintf(env.Stdout, "plan written to %s; on each member's host run: etcdguard recover apply --plan %s --member NAME\n", o.out, o.out)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&o.out, "out", "", "write the plan to this file (for recover apply)")
	return cmd
}

type applyOptions struct {
	plan string
}

func newRecoverApplyCommand(env Env, g *globalOptions, ro *recoverOptions) *cobra.Command {
	o := &applyOptions{}
	cmd := &cobra.Command{
		Use:   "apply --plan plan.json [--member NAME]...",
		Short: "Carry out a recovery plan for some or all members",
		Long: `Carry out a plan written by 'recover plan' for the members named with --member (all when none
is named); the plan carries the cluster description. A snapshot whose SHA-256 differs from the
plan's is refused. Running apply again after an interruption finishes the job: a member already
restored for this plan is not restored again, and quarantined data dirs are never touched. When
apply runs for every member, it also verifies the cluster.`,
		Example: `  etcdguard recover apply --plan /root/plan.json --member cp1 --config /etc/etcdguard.yaml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.plan == "" {
				return fmt.Errorf("%w: give --plan FILE", ErrUsage)
			}
			p, err := restore.ReadPlan(o.plan)
			if err != nil {
				return fmt.Errorf("%w: %w", ErrUsage, err)
			}
			for _, n := range ro.members {
				if strings.Contains(n, "=") {
					return fmt.Errorf("%w: recover apply takes member names (--member cp1); the plan describes them", ErrUsage)
				}
			}
			s, r, err := ro.recoverer(env, g, &p.Cluster)
			if err != nil {
				return err
			}
			ctx := commandContext(cmd)
			unlock, err := r.LockState()
			if err != nil {
				return err
			}
			defer unlock()
			// A plan file may be old, or made before somebody else recovered the cluster: the
			// members this host is to act on must still be as the plan recorded them.
			if err := r.CheckResume(ctx, p, ro.members); err != nil {
				return err
			}
			rep, err := r.Apply(ctx, p, ro.members)
			return writeReport(env, s, rep, err, "etcdguard recover apply --plan "+o.plan+" (with the same --member flags)")
		},
	}
	cmd.Flags().StringVar(&o.plan, "plan", "", "the plan file written by 'recover plan'")
	return cmd
}

// messages is where a command's remarks go: stdout for the table format, stderr when stdout
// carries JSON.
func messages(env Env, s settings) io.Writer {
	if s.output == "json" {
		return env.Stderr
	}
	return env.Stdout
}
