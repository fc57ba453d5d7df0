package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/etcdguard/etcdguard/internal/backend"
	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/snapshot"
)

type copyOptions struct {
	to string
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
			s, err := g.resolve(env)
			if err != nil {
				return err
			}
			var dstT *repository.Target
			for i, t := range s.cfg.Targets {
				if t.Name == o.to {
					dstT = &s.cfg.Targets[i]
				}
			}
			if dstT == nil {
				return fmt.Errorf("%w: --to %q: no target has that name (targets: %s)", ErrUsage, o.to, targetNames(s.cfg.Targets))
			}
			ctx := commandContext(cmd)
			dst, err := repository.Open(ctx, *dstT)
			if err != nil {
				if errors.Is(err, backend.ErrUnavailable) {
					return fmt.Errorf("target %s is not available (is the medium mounted?): %w", o.to, err)
				}
				return err
			}
			defer dst.Close()
			lock, err := dst.Lock(ctx, s.logger, repository.LockShared, "snapshot copy", env.Now())
			if err != nil {
				return err
			}
			defer lock.Unlock(ctx)
			_, odd, err := dst.CleanupIncomplete(ctx)
			if err != nil {
				s.logger.Warn("could not clean up incomplete backups", "target", o.to, "error", err)
			}
			for _, f := range odd {
				s.logger.Warn("odd backup folder left as it is", "target", o.to, "folder", f)
			}
			var others []repository.Target
			for _, t := range s.cfg.Targets {
				if t.Name != o.to {
					others = append(others, t)
				}
			}
			cat, err := snapshot.Load(ctx, others)
			if cat != nil {
				defer cat.Close()
			}
			if err != nil {
				return err
			}
			for _, sk := range cat.Skipped {
				s.logger.Warn("manifest skipped: it is not used", "error", sk)
			}
			have, unreadable, err := dst.Manifests(ctx)
			if err != nil {
				return err
			}
			present := map[string]bool{}
			for _, m := range have {
				present[m.ID] = true
			}
			// A manifest of dst that cannot be read is still there: it is never replaced.
			damaged := map[string]error{}
			for _, u := range unreadable {
				damaged[u.ID] = u
			}
			want := map[string]bool{}
			for _, id := range args {
				if _, err := cat.Find(id); err != nil && !present[id] {
					return err
				}
				want[id] = true
			}
			copied, skipped := 0, 0
			var failures []error
			type copyResult struct {
				ID    string `json:"id"`
				From  string `json:"from,omitempty"`
				Bytes int64  `json:"bytes"`
				Check string `json:"check,omitempty"`
				Error string `json:"error,omitempty"`
			}
			var results []copyResult
			for _, e := range cat.Entries {
				if present[e.Manifest.ID] || (len(want) > 0 && !want[e.Manifest.ID]) {
					skipped++
					continue
				}
				if derr, ok := damaged[e.Manifest.ID]; ok {
					err := fmt.Errorf("copy %s to %s: %w: %s holds a manifest that cannot be used (%w); it is not replaced: check it with 'etcdguard snapshot status %s --target %s' and remove that backup's folder by hand if it is damaged",
						e.Manifest.ID, o.to, backend.ErrExist, repository.ManifestName(e.Manifest.ID), derr, e.Manifest.ID, o.to)
					failures = append(failures, err)
					results = append(results, copyResult{ID: e.Manifest.ID, Error: err.Error()})
					continue
				}
				var err error
				from, check := "", ""
				for _, c := range snapshot.PreferredOrder(e.Copies) {
					from = c.Repo.Target.Name
					if check, err = snapshot.CopyTo(ctx, s.logger, c, dst, env.Now()); err == nil || errors.Is(err, backend.ErrExist) {
						break // done, or something of dst is in the way whatever the source
					}
					s.logger.Warn("copy failed; trying another source", "id", e.Manifest.ID, "from", c.Repo.Target.Name, "error", err)
				}
				if err != nil {
					failures = append(failures, err)
					results = append(results, copyResult{ID: e.Manifest.ID, Error: err.Error()})
					continue
				}
				copied++
				results = append(results, copyResult{ID: e.Manifest.ID, From: from, Bytes: e.Manifest.StoredSize, Check: check})
				if s.output == "table" {
					how := "read back and verified"
					if check == snapshot.CheckServerCRC32C {
						how = "verified by the server's CRC-32C of the whole object (archive storage class: it cannot be read back at once)"
					}
					fmt.Fprintf(env.Stdout, "copied %s to %s from %s (%s), %s\n", e.Manifest.ID, o.to, from, humanBytes(e.Manifest.StoredSize), how)
				}
			}
			if s.output == "json" {
				if err := writeJSON(env.Stdout, map[string]any{"to": o.to, "copies": results, "copied": copied, "skipped": skipped, "failed": len(failures)}); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(env.Stdout, "%d copied, %d already present or not asked for, %d failed\n", copied, skipped, len(failures))
			}
			if len(failures) > 0 {
				return fmt.Errorf("%d backups could not be copied to %s: %w", len(failures), o.to, errors.Join(failures...))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&o.to, "to", "", "name of the target to fill in")
	return cmd
}
