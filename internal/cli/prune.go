package cli

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/etcdguard/etcdguard/internal/prune"
)

type pruneOptions struct {
	dryRun bool
}

func newPruneCommand(env Env, g *globalOptions) *cobra.Command {
	o := &pruneOptions{}
	cmd := &cobra.Command{
		Use:   "prune [--dry-run] [--target NAME]...",
		Short: "Remove the backups that each target's keep: policy does not keep",
		Long: `Remove, in every target that has a keep: policy in the config file (or in the targets named
with --target), the full backups the policy does not keep, each with its delta chain. A target
without keep: is never pruned, and prune says so.

  targets:
    - name: ssd
      url: file:///backup/etcd
      keep: {within: 7d}
    - name: tape
      url: file:///mnt/ltfs/etcd
      offline: true
      keep: {monthly: 60}

Rules (a backup is kept if any keeps it): last N; within a duration (7d, 36h, 1d12h); the newest
backup of each of the last N hourly, daily, weekly, monthly, yearly periods (UTC). Always kept:
the newest verified backup of a target, a backup dated in the future (the clock went back), a
backup whose delta chain is open (the agent may be appending to it), and a backup the storage
locks (S3 Object Lock retention or legal hold: reported as "locked by the storage", not an
error). A backup goes with its whole chain, in an order that leaves a consistent target at every
step: an interrupted prune is finished by the next one.

prune takes each target's exclusive lock (it waits up to a minute for other runs: saves, copies,
verifies, restores); --dry-run takes none, changes nothing, and prints what prune would do and
why. On a versioned S3 bucket (every Object Lock bucket is one) a removal writes a delete marker:
the bytes stay as noncurrent versions until the bucket's lifecycle rule removes them. prune needs
no connection to etcd.`,
		Example: `  etcdguard prune --config /etc/etcdguard.yaml --dry-run
  etcdguard prune --config /etc/etcdguard.yaml
  etcdguard prune --config /etc/etcdguard.yaml --target s3 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := g.resolve(env)
			if err != nil {
				return err
			}
			return runPrune(commandContext(cmd), env, s, *o)
		},
	}
	cmd.Flags().BoolVar(&o.dryRun, "dry-run", false, "decide and report, change nothing (takes no lock)")
	return cmd
}

func runPrune(ctx context.Context, env Env, s settings, o pruneOptions) error {
	if err := s.requireTargets(); err != nil {
		return err
	}
	rep, err := prune.Run(ctx, prune.Options{Targets: s.cfg.Targets, DryRun: o.dryRun, Now: env.Now, Logger: s.logger})
	if s.output == "json" {
		if werr := writeJSON(env.Stdout, rep); werr != nil {
			return werr
		}
		return err
	}
	for i, tr := range rep.Targets {
		if i > 0 {
			fmt.Fprintln(env.Stdout)
		}
		if werr := writePruneTarget(env.Stdout, rep.DryRun, tr); werr != nil {
			return werr
		}
	}
	return err
}

// writePruneTarget renders one target's part of a prune report.
func writePruneTarget(w io.Writer, dryRun bool, tr prune.TargetReport) error {
	head := fmt.Sprintf("target %s (%s)", tr.Name, tr.URL)
	switch tr.State {
	case prune.StateNoPolicy:
		fmt.Fprintf(w, "%s: no keep: policy: never pruned\n", head)
		return nil
	case prune.StateAbsent:
		fmt.Fprintf(w, "%s, keep %s: offline medium absent, not pruned\n", head, tr.Policy)
		return nil
	}
	removed := fmt.Sprintf("removed %d (%s freed)", tr.Removed, humanBytes(tr.BytesRemoved))
	if dryRun {
		removed = fmt.Sprintf("would remove %d (%s)", tr.Removed, humanBytes(tr.BytesRemoved))
	}
	fmt.Fprintf(w, "%s, keep %s: kept %d, %s, skipped-locked %d\n", head, tr.Policy, tr.Kept, removed, tr.LockedSkipped)
	if tr.DeleteMarkers && tr.Removed > 0 {
		fmt.Fprintln(w, "  versioned bucket: delete markers were written; the bytes stay as noncurrent versions until the bucket's lifecycle rule removes them")
	}
	if len(tr.Backups) > 0 {
		t := newTable(w, "  ID", "TAKEN", "ACTION", "CHAIN", "SIZE", "REASON")
		for _, b := range tr.Backups {
			t.row("  "+b.ID, b.Time.UTC().Format("2006-01-02 15:04Z"), b.Action, dash(b.Chain), humanBytes(b.Bytes), strings.Join(b.Reasons, "; "))
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	verb := "swept"
	if dryRun {
		verb = "would sweep"
	}
	for _, s := range tr.Swept {
		fmt.Fprintf(w, "  %s: %s\n", verb, s)
	}
	for _, n := range tr.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
	for _, e := range tr.Errors {
		fmt.Fprintf(w, "  error (%s): %s\n", e.Kind, e.Message)
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
