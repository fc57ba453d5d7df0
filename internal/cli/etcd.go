package cli

import (
	"github.com/spf13/cobra"
	"go.etcd.io/etcd/api/v3/version"
	"go.etcd.io/etcd/server/v3/etcdmain"
)

// newEtcdCommand runs etcd's own server main, embedded in etcdguard, with etcd's flags. The demo
// and the test harness start cluster members with it, so that nothing else needs installing.
func newEtcdCommand() *cobra.Command {
	return &cobra.Command{
		Use:                "etcd [etcd flags]",
		Short:              "Run an etcd server (embedded etcd " + version.Version + ") with etcd's own flags",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(_ *cobra.Command, args []string) error {
			// etcd's main runs the server and exits the process itself (os.Exit on failure, as
			// the etcd binary does): this command is a whole etcd process, nothing follows it.
			etcdmain.Main(append([]string{"etcd"}, args...))
			return nil
		},
	}
}
