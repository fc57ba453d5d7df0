package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/snapshot"
)

type copyOptions struct {
	to  string
	ids []string
}

func newSnapshotCopyCommand(env Env, g *globalOptions) *cobra.Command {
	o := &copyOptions{}
	cmd := &cobra.Command{
		Use:   "copy --to NAME [ID...]",
		Short: "Copy backups a target lacks into it, such as an offline medium once mounted",
		Long: `Copy every backup (or the ids given) that target NAME lacks from the other targets, checking the
SHA-256 of the stored bytes on the way and the copy once written. The data is copied as stored
(compressed, encrypted): no key is needed. Typical use: a tape or removable disk that was not
mounted during 'snapshot save' is mounted again.`,
		Example: `  mount /dev/st0 /mnt/ltfs && etcdguard snapshot copy --to tape --config /etc/etcdguard.yaml`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.to == "" {
				return fmt.Errorf("%w: give --to NAME (a target in --config or --target)", ErrUsage)
			}
			o.ids = args
			s, err := g.resolve(env)
			if err != nil {
				return err
			}
			return runSnapshotCopy(commandContext(cmd), env, s, *o)
		},
	}
	cmd.Flags().StringVar(&o.to, "to", "", "name of the target to fill in")
	return cmd
}

func runSnapshotCopy(ctx context.Context, env Env, s settings, o copyOptions) error {
	var to *repository.Target
	var others []repository.Target
	for i, t := range s.cfg.Targets {
		if t.Name == o.to {
			to = &s.cfg.Targets[i]
		} else {
			others = append(others, t)
		}
	}
	if to == nil {
		return fmt.Errorf("%w: --to %q: no target has that name (targets: %s)", ErrUsage, o.to, targetNames(s.cfg.Targets))
	}
	rep, err := snapshot.CopyMissing(ctx, s.logger, snapshot.CopyMissingOptions{
		To: *to, Sources: others, IDs: o.ids, Command: "snapshot copy", Now: env.Now,
		Copied: func(r snapshot.CopyResult) {
			if s.output != "table" {
				return
			}
			how := "read back and verified"
			if r.Check == snapshot.CheckServerCRC32C {
				how = "verified by the server's CRC-32C of the whole object (archive storage class: it cannot be read back at once)"
			}
			fmt.Fprintf(env.Stdout, "copied %s to %s from %s (%s), %s\n", r.ID, o.to, r.From, humanBytes(r.Bytes), how)
		},
	})
	if err != nil {
		return err
	}
	if s.output == "json" {
		if err := writeJSON(env.Stdout, map[string]any{"to": o.to, "copies": rep.Results, "copied": rep.Copied, "skipped": rep.Skipped, "failed": len(rep.Failures)}); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(env.Stdout, "%d copied, %d already present or not asked for, %d failed\n", rep.Copied, rep.Skipped, len(rep.Failures))
	}
	return rep.Err(o.to)
}
