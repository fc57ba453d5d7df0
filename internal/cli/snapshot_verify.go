package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/spf13/cobra"

	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/snapshot"
)

type verifyOptions struct {
	all bool
	ids []string
}

func newSnapshotVerifyCommand(env Env, g *globalOptions) *cobra.Command {
	o := &verifyOptions{}
	cmd := &cobra.Command{
		Use:   "verify [ID...|--all]",
		Short: "Re-read stored copies and check every one of them",
		Long: `Re-read stored copies of backups and check each completely: the stored bytes' SHA-256, decryption,
decompression, the snapshot's SHA-256 and etcd trailer, bbolt's consistency check, and the
revision, key count and hash recorded in the manifest. Every copy is reported; the exit code is
non-zero if any copy is bad. Encrypted backups need --age-identity.`,
		Example: `  etcdguard snapshot verify --all --config /etc/etcdguard.yaml
  etcdguard snapshot verify 20261124T035532Z-1a2b3c4d --config /etc/etcdguard.yaml --target s3
  etcdguard snapshot verify --all --target file:///var/backups/etcd`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.all == (len(args) > 0) {
				return fmt.Errorf("%w: give backup ids or --all", ErrUsage)
			}
			o.ids = args
			s, err := g.resolve(env)
			if err != nil {
				return err
			}
			return runSnapshotVerify(commandContext(cmd), env, s, *o)
		},
	}
	cmd.Flags().BoolVar(&o.all, "all", false, "verify every backup")
	return cmd
}

func runSnapshotVerify(ctx context.Context, env Env, s settings, o verifyOptions) error {
	if err := s.requireTargets(); err != nil {
		return err
	}
	ids, err := loadIdentities(s)
	if err != nil {
		return err
	}
	rep, err := snapshot.VerifyAll(ctx, s.cfg.Targets, snapshot.VerifyOptions{IDs: o.ids, Identities: ids, WorkDir: s.cfg.WorkDir, Logger: s.logger})
	if err != nil {
		return err
	}
	if s.output == "json" {
		if err := writeJSON(env.Stdout, map[string]any{"copies": rep.Copies, "unreadable_targets": rep.Unreadable}); err != nil {
			return err
		}
	} else {
		t := newTable(env.Stdout, "ID", "TARGET", "RESULT", "STORED", "TOOK", "DETAIL")
		for _, r := range rep.Copies {
			res, detail := "ok", strings.Join(r.Checks, ",")
			if !r.OK {
				res, detail = "BAD", r.Error
			}
			t.row(r.ID, r.Target, res, humanBytes(r.Bytes), r.Elapsed.Round(time.Millisecond).String(), detail)
		}
		if err := t.flush(); err != nil {
			return err
		}
		for n, why := range rep.Unreadable {
			fmt.Fprintf(env.Stdout, "target %s not read: %s\n", n, why)
		}
		fmt.Fprintf(env.Stdout, "%d copies checked, %d bad\n", len(rep.Copies), len(rep.Failures))
	}
	// A target that could not be read was not verified: the error says so, unless it is an
	// offline medium that is simply not mounted.
	return rep.Err()
}

func loadIdentities(s settings) ([]age.Identity, error) {
	ids, err := repository.LoadIdentities(s.cfg.AgeIdentities)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	return ids, nil
}
