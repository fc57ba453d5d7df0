package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/etcdguard/etcdguard/internal/snapshot"
)

type getOptions struct {
	output string
	// backup is a backup id or "latest".
	backup string
}

func newSnapshotGetCommand(env Env, g *globalOptions) *cobra.Command {
	o := &getOptions{}
	cmd := &cobra.Command{
		Use:   "get ID|latest --output FILE",
		Short: "Fetch a backup as a plain etcd snapshot file",
		Long: `Fetch the best copy of a backup, check it completely (as 'snapshot verify' does), and write it,
decrypted and decompressed, as a plain etcd snapshot: byte for byte the file 'etcdctl snapshot
save' would have written, which 'etcdutl snapshot restore' accepts. Copies on local disks are
tried first, then S3, then offline media; a bad copy is reported and the next one is tried.
'latest' is the newest backup. An existing FILE is never overwritten.`,
		Example: `  etcdguard snapshot get latest --output /var/tmp/etcd.db --config /etc/etcdguard.yaml
  etcdutl snapshot restore /var/tmp/etcd.db --data-dir /var/lib/etcd-restored ...`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.output == "" {
				return fmt.Errorf("%w: give --output FILE", ErrUsage)
			}
			if _, err := os.Lstat(o.output); err == nil {
				return fmt.Errorf("%w: %s already exists: etcdguard does not overwrite files; choose another --output or move it aside", ErrUsage, o.output)
			}
			o.backup = args[0]
			s, err := g.resolve(env)
			if err != nil {
				return err
			}
			return runSnapshotGet(commandContext(cmd), env, s, *o)
		},
	}
	cmd.Flags().StringVar(&o.output, "output", "", "file to write the plain snapshot to (must not exist)")
	return cmd
}

func runSnapshotGet(ctx context.Context, env Env, s settings, o getOptions) error {
	if err := s.requireTargets(); err != nil {
		return err
	}
	ids, err := loadIdentities(s)
	if err != nil {
		return err
	}
	cat, err := snapshot.Load(ctx, s.cfg.Targets)
	if cat != nil {
		defer cat.Close()
	}
	if err != nil {
		return err
	}
	e, err := findEntry(ctx, cat, o.backup)
	if err != nil {
		return err
	}
	rep, _, err := snapshot.FetchBest(ctx, s.logger, e, ids, o.output)
	if err != nil {
		return err
	}
	abs, _ := filepath.Abs(o.output)
	if s.output == "json" {
		return writeJSON(env.Stdout, map[string]any{"file": abs, "copy": rep, "manifest": e.Manifest})
	}
	m := e.Manifest
	fmt.Fprintf(env.Stdout, "wrote %s from target %s: backup %s, revision %d, %d keys, %s, sha256 %s, verified (%s)\n",
		abs, rep.Target, m.ID, m.Revision, m.Status.TotalKey, humanBytes(m.RawSize), m.SHA256, strings.Join(rep.Checks, ", "))
	return nil
}

// findEntry returns the backup a command line names: an id, or "latest", the newest backup
// whether or not its copies pass (a bad one fails the command rather than silently giving an
// older snapshot).
func findEntry(ctx context.Context, cat *snapshot.Catalog, id string) (snapshot.Entry, error) {
	if id == "latest" {
		ch, err := cat.Latest(ctx, snapshot.Query{})
		return ch.Entry, err
	}
	return cat.Find(id)
}
