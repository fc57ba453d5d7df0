package cli

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/etcdguard/etcdguard/internal/snapshot"
)

// listedBackup is one row of `snapshot list -o json`.
type listedBackup struct {
	ID         string   `json:"id"`
	Created    string   `json:"created"`
	AgeSeconds int64    `json:"age_seconds"`
	Revision   int64    `json:"revision"`
	TotalKey   int      `json:"total_key"`
	RawSize    int64    `json:"raw_size"`
	StoredSize int64    `json:"stored_size"`
	Copies     []string `json:"copies"`
	// VerifiedAt is when the snapshot passed its checks, before the backup was written.
	VerifiedAt string   `json:"verified_at"`
	Checks     []string `json:"checks"`
	Encrypted  bool     `json:"encrypted"`
	Source     string   `json:"source"`
}

func newSnapshotListCommand(env Env, g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List every backup across all targets",
		Long: `List every complete backup across all targets, merged by id, oldest first: time, age,
revision, size, which targets hold a copy, and whether it was verified when stored ('snapshot
verify' re-reads copies; its result is not recorded in the list).
Incomplete uploads (no manifest) are never listed. Targets that cannot be read (an unmounted
offline medium, an unreachable S3 endpoint) are reported below the list.`,
		Example: `  etcdguard snapshot list --config /etc/etcdguard.yaml
  etcdguard snapshot list --target file:///var/backups/etcd -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := g.resolve(env)
			if err != nil {
				return err
			}
			return runSnapshotList(commandContext(cmd), env, s)
		},
	}
}

func runSnapshotList(ctx context.Context, env Env, s settings) error {
	if err := s.requireTargets(); err != nil {
		return err
	}
	cat, err := snapshot.Load(ctx, s.cfg.Targets)
	if cat != nil {
		defer cat.Close()
	}
	if err != nil {
		return err
	}
	now := env.Now()
	var rows []listedBackup
	for _, e := range cat.Entries {
		m := e.Manifest
		var copies []string
		for _, c := range e.Copies {
			copies = append(copies, c.Repo.Target.Name)
		}
		rows = append(rows, listedBackup{
			ID: m.ID, Created: m.Created.Format("2006-01-02T15:04:05Z"), AgeSeconds: int64(now.Sub(m.Created).Seconds()),
			Revision: m.Revision, TotalKey: m.Status.TotalKey, RawSize: m.RawSize, StoredSize: m.StoredSize,
			Copies: copies, VerifiedAt: m.Verification.At.Format("2006-01-02T15:04:05Z"), Checks: m.Verification.Checks, Encrypted: m.Encryption != nil,
			Source: firstNonEmpty(m.Source.Name, m.Source.Endpoint),
		})
	}
	if s.output == "json" {
		return writeJSON(env.Stdout, map[string]any{"backups": rows, "unreadable_targets": cat.Unreadable, "skipped_manifests": cat.Skipped})
	}
	t := newTable(env.Stdout, "ID", "CREATED", "AGE", "REVISION", "KEYS", "SIZE", "STORED", "COPIES", "VERIFIED")
	for i, r := range rows {
		verified := "at save"
		if len(r.Checks) == 0 {
			verified = "no"
		}
		t.row(r.ID, r.Created, humanAge(now, cat.Entries[i].Manifest.Created), fmt.Sprint(r.Revision), fmt.Sprint(r.TotalKey),
			humanBytes(r.RawSize), humanBytes(r.StoredSize), fmt.Sprintf("%d (%s)", len(r.Copies), strings.Join(r.Copies, ",")), verified)
	}
	if err := t.flush(); err != nil {
		return err
	}
	names := make([]string, 0, len(cat.Unreadable))
	for n := range cat.Unreadable {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(env.Stdout, "target %s not read: %s\n", n, cat.Unreadable[n])
	}
	for _, sk := range cat.Skipped {
		fmt.Fprintf(env.Stdout, "manifest skipped: %s\n", sk)
	}
	return nil
}
