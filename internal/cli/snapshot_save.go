package cli

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/etcdguard/etcdguard/internal/redact"
	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/snapshot"
)

type saveOptions struct {
	noDiscover    bool
	targetTimeout time.Duration
}

func newSnapshotSaveCommand(env Env, g *globalOptions) *cobra.Command {
	o := &saveOptions{}
	cmd := &cobra.Command{
		Use:   "save",
		Short: "Take a verified backup and store it in every target",
		Long: `Take a snapshot from the best etcd member and store it in every target.

The member is chosen automatically: reachable, no alarm, the highest applied raft index, and a
follower rather than the leader when they are equal. The snapshot is read once; in the same pass
etcd's SHA-256 trailer is checked, the data is hashed, compressed (zstd) and, with
--age-recipient, encrypted, and written to every target at the same time. Before the backup
counts, the snapshot passes bbolt's consistency check and its revision, key count and hash are
computed; only then is the manifest written. If the member fails mid-stream, the save is retried
once on the next best member.

An offline target (offline=true) that is not mounted is skipped with a warning; fill it in later
with 'etcdguard snapshot copy --to NAME'. If some targets fail and others succeed, the backup
counts and the exit code says partial (3).`,
		Example: `  # kubeadm control-plane node, local disk and S3
  etcdguard snapshot save --endpoints https://10.0.0.1:2379 \
    --cacert /etc/kubernetes/pki/etcd/ca.crt \
    --cert /etc/kubernetes/pki/etcd/healthcheck-client.crt \
    --key /etc/kubernetes/pki/etcd/healthcheck-client.key \
    --target file:///var/backups/etcd \
    --target 's3://etcd-backups/prod?region=eu-west-1&storage-class=DEEP_ARCHIVE'

  # everything from a config file, encrypted
  etcdguard snapshot save --config /etc/etcdguard.yaml --age-recipient age1...`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := g.resolve(env)
			if err != nil {
				return err
			}
			opts, err := s.saveOptions(o.noDiscover, o.targetTimeout)
			if err != nil {
				return err
			}
			opts.Logger, opts.Now = s.logger, env.Now
			var prog *progress
			if env.IsTerminal && s.output == "table" {
				prog = newProgress(env.Stderr, env.Now)
				opts.Progress = prog.update
			}
			res, err := snapshot.Save(commandContext(cmd), opts)
			if prog != nil {
				prog.finish()
			}
			if err != nil && !errors.Is(err, snapshot.ErrPartial) {
				return err
			}
			m := res.Manifest
			if s.output == "json" {
				if jerr := writeJSON(env.Stdout, map[string]any{"manifest": m, "attempts": res.Attempts, "cleaned": res.Cleaned, "elapsed_seconds": res.Elapsed.Seconds()}); jerr != nil {
					return jerr
				}
				return err
			}
			src := m.Source.Endpoint
			if m.Source.Name != "" {
				src = m.Source.Name + " (" + src + ")"
			}
			fmt.Fprintf(env.Stdout, "source: %s: %s\n", src, m.Source.Reason)
			for _, t := range m.Targets {
				line := fmt.Sprintf("  %-8s %-7s %s", t.Name, t.State, redact.URL(t.URL))
				if t.Error != "" {
					line += ": " + t.Error
				}
				fmt.Fprintln(env.Stdout, line)
			}
			fmt.Fprintf(env.Stdout, "backup %s: revision %d, %d keys, %s -> %s stored, verified (%s), %d/%d targets, %s\n",
				m.ID, m.Revision, m.Status.TotalKey, humanBytes(m.RawSize), humanBytes(m.StoredSize),
				strings.Join(m.Verification.Checks, ", "), repository.StoredCount(m.Targets), len(m.Targets), res.Elapsed.Round(time.Millisecond))
			return err
		},
	}
	cmd.Flags().DurationVar(&o.targetTimeout, "target-timeout", snapshot.DefaultTargetIdleTimeout, "a target that accepts no data for this long is dropped as stalled, so that the others finish (exit code 3)")
	cmd.Flags().BoolVar(&o.noDiscover, "no-discover", false, "use only the endpoints given, not every member in the member list")
	return cmd
}

// saveOptions are the options of a verified full snapshot from the settings: what `snapshot
// save` and the agent's scheduled snapshots both run.
func (s settings) saveOptions(noDiscover bool, targetTimeout time.Duration) (snapshot.SaveOptions, error) {
	if err := s.requireTargets(); err != nil {
		return snapshot.SaveOptions{}, err
	}
	codec, err := s.codec()
	if err != nil {
		return snapshot.SaveOptions{}, err
	}
	return snapshot.SaveOptions{
		Etcd: s.etcd, Discover: !noDiscover, Targets: s.cfg.Targets, Codec: codec,
		WorkDir: s.cfg.WorkDir, TargetIdleTimeout: targetTimeout,
	}, nil
}

// codec returns how new backups are encoded.
func (s settings) codec() (repository.Codec, error) {
	c := repository.Codec{Compression: s.cfg.Compression}
	if len(s.cfg.AgeRecipients) > 0 {
		recips, names, err := repository.ParseRecipients(s.cfg.AgeRecipients, s.recipientsFrom)
		if err != nil {
			return c, fmt.Errorf("%w: %w", ErrUsage, err)
		}
		c.Recipients, c.RecipientNames = recips, names
	}
	return c, nil
}
