package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/etcdguard/etcdguard/internal/policy"
)

func newPolicyCommand(env Env, g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Check the targets against the backup policy (3-2-1)",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "check",
		Short: "Check the 3-2-1 rule: copies of the newest backup, kinds of media, a recent offline copy",
		Long: `Check the 3-2-1 rule over what the targets hold: the newest backup must be held by at least
'copies' targets (default 3) on at least 'media' kinds of media (default 2: disk, s3, tape, usb,
as each target's media: says), and at least 'offline' offline targets (default 1) must hold a
backup at most 'offline-max-age' old (default 7 days). An offline copy of an older backup counts
as a copy of the newest while it is within that age: tapes are written less often than disks.

An offline target that is not mounted cannot be read: its inventory as read the last time it was
(kept in <state-dir>/inventory/) is used instead, and the report says since when the medium has
not been seen. Set the numbers in the config file's policy: section.

For monitoring: exit code 0 when every rule holds, 11 when one is broken, 10 when one could only
be judged from a recorded inventory, a target could not be read, or an inventory could not be
read or recorded; -o json for the whole report.`,
		Example: `  etcdguard policy check --config /etc/etcdguard.yaml
  etcdguard policy check --config /etc/etcdguard.yaml -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := g.resolve(env)
			if err != nil {
				return err
			}
			return runPolicyCheck(commandContext(cmd), env, s)
		},
	})
	return cmd
}

// policyRules are the config's policy section as the check's rules.
func policyRules(s settings) policy.Rules {
	p := s.cfg.Policy
	return policy.Rules{Copies: p.Copies, Media: p.Media, Offline: p.Offline, OfflineMaxAge: time.Duration(p.OfflineMaxAge)}
}

func runPolicyCheck(ctx context.Context, env Env, s settings) error {
	if err := s.requireTargets(); err != nil {
		return err
	}
	rep, err := policy.Check(ctx, policy.Options{Targets: s.cfg.Targets, Rules: policyRules(s), StateDir: s.cfg.StateDir, Now: env.Now})
	if err != nil {
		return err
	}
	if s.output == "json" {
		if err := writeJSON(env.Stdout, rep); err != nil {
			return err
		}
	} else {
		t := newTable(env.Stdout, "BACKUP", "TAKEN", "COPIES", "MEDIA", "OFFLINE", "3-2-1", "TARGETS")
		for _, b := range rep.Backups {
			meets := "no"
			if b.Meets {
				meets = "yes"
			}
			t.row(b.ID, b.Started.UTC().Format("2006-01-02T15:04Z"), fmt.Sprint(b.Copies), fmt.Sprint(b.Media), fmt.Sprint(b.Offline), meets, strings.Join(b.Targets, ","))
		}
		if err := t.flush(); err != nil {
			return err
		}
		fmt.Fprintln(env.Stdout)
		for _, f := range rep.Findings {
			fmt.Fprintf(env.Stdout, "%-8s %-8s %s\n", strings.ToUpper(f.Severity), f.Rule, f.Message)
			if f.Next != "" {
				fmt.Fprintf(env.Stdout, "         next: %s\n", f.Next)
			}
		}
	}
	switch rep.Worst {
	case policy.Critical:
		return fmt.Errorf("%w (see the findings above)", policy.ErrBroken)
	case policy.Warning:
		return fmt.Errorf("%w (see the findings above)", policy.ErrUnchecked)
	}
	return nil
}
