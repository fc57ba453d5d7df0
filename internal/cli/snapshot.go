package cli

import (
	"github.com/spf13/cobra"
)

func newSnapshotCommand(env Env, g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Take, list, check, fetch and copy etcd backups",
	}
	cmd.AddCommand(
		newSnapshotSaveCommand(env, g),
		newSnapshotListCommand(env, g),
		newSnapshotStatusCommand(env, g),
		newSnapshotVerifyCommand(env, g),
		newSnapshotGetCommand(env, g),
		newSnapshotCopyCommand(env, g),
	)
	return cmd
}
