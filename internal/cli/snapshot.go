package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

func newSnapshotCommand(env Env, g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Take, list, check, fetch and copy etcd backups",
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("%w: unknown command %q for etcdguard snapshot (see etcdguard snapshot --help)", ErrUsage, args[0])
			}
			return cmd.Help()
		},
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
