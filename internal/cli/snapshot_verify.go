package cli

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/spf13/cobra"

	"github.com/etcdguard/etcdguard/internal/backend"
	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/snapshot"
)

type verifyOptions struct {
	all bool
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
			s, err := g.resolve(env)
			if err != nil {
				return err
			}
			if err := s.requireTargets(); err != nil {
				return err
			}
			targets := s.cfg.Targets
			ids, err := loadIdentities(s)
			if err != nil {
				return err
			}
			ctx := commandContext(cmd)
			cat, err := snapshot.Load(ctx, targets)
			if cat != nil {
				defer cat.Close()
			}
			if err != nil {
				return err
			}
			var entries []snapshot.Entry
			if o.all {
				entries = cat.Entries
			} else {
				for _, id := range args {
					e, err := cat.Find(id)
					if err != nil {
						return err
					}
					entries = append(entries, e)
				}
			}
			var reports []snapshot.CopyReport
			var failures []error
			for _, e := range entries {
				for _, c := range e.Copies {
					rep, err := snapshot.Verify(ctx, c, ids, s.cfg.WorkDir)
					reports = append(reports, rep)
					if err != nil {
						failures = append(failures, err)
					}
				}
			}
			if s.output == "json" {
				if err := writeJSON(env.Stdout, map[string]any{"copies": reports, "unreadable_targets": cat.Unreadable}); err != nil {
					return err
				}
			} else {
				t := newTable(env.Stdout, "ID", "TARGET", "RESULT", "STORED", "TOOK", "DETAIL")
				for _, r := range reports {
					res, detail := "ok", strings.Join(r.Checks, ",")
					if !r.OK {
						res, detail = "BAD", r.Error
					}
					t.row(r.ID, r.Target, res, humanBytes(r.Bytes), r.Elapsed.Round(time.Millisecond).String(), detail)
				}
				if err := t.flush(); err != nil {
					return err
				}
				for n, why := range cat.Unreadable {
					fmt.Fprintf(env.Stdout, "target %s not read: %s\n", n, why)
				}
				fmt.Fprintf(env.Stdout, "%d copies checked, %d bad\n", len(reports), len(failures))
			}
			// A target that could not be read was not verified: say so in the exit code, unless
			// it is an offline medium that is simply not mounted.
			var unread []error
			for _, t := range targets {
				if why, ok := cat.Unreadable[t.Name]; ok && !t.Offline {
					unread = append(unread, fmt.Errorf("target %s: %s", t.Name, why))
				}
			}
			if len(failures) == 0 && len(unread) > 0 {
				return fmt.Errorf("%w: copies in %d target(s) could not be read, so were not verified: %w", backend.ErrUnavailable, len(unread), errors.Join(unread...))
			}
			if len(reports) == 0 {
				return fmt.Errorf("%w: no backup to verify", repository.ErrNotFound)
			}
			if len(failures) > 0 {
				return fmt.Errorf("%d of %d copies failed verification: %w", len(failures), len(reports), errors.Join(failures...))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&o.all, "all", false, "verify every backup")
	return cmd
}

func loadIdentities(s settings) ([]age.Identity, error) {
	ids, err := repository.LoadIdentities(s.cfg.AgeIdentities)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	return ids, nil
}
