package cli

import (
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/etcdguard/etcdguard/internal/agent"
	"github.com/etcdguard/etcdguard/internal/config"
	"github.com/etcdguard/etcdguard/internal/drill"
	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/snapshot"
)

type agentOptions struct {
	listenAddress string
	noDiscover    bool
	targetTimeout time.Duration
}

func newAgentCommand(env Env, g *globalOptions) *cobra.Command {
	o := &agentOptions{}
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the continuous-protection daemon: scheduled full snapshots and the delta log between them",
		Long: `Run etcdguard as a long-running daemon that keeps the cluster continuously protected.

It reads the same config file as every other command (endpoints, TLS files, targets, age
recipients); what only the agent uses is in its agent: section, and everything there has a
default, so that file alone runs it:

  agent:
    snapshot-schedule: "*/30 * * * *"   # cron: minute hour day-of-month month day-of-week
    listen-address: 127.0.0.1:9479
    delta-log: true                     # on by default
    delta-target: local                 # the file:// target for the open segment (default: the first)
    delta-sync-interval: 50ms           # how often the open segment is fsynced
    delta-seal-interval: 10s            # how often it is sealed, stored and shipped

Each scheduled snapshot goes through the same verified path as 'etcdguard snapshot save'. Runs
never overlap: a slot that comes while a run is still going is skipped, with a log line. A failed
run is logged with its error and exit-code class, and the next slot tries again; the agent
itself keeps running.

The delta log: a watch of the whole keyspace from the newest full snapshot's own revision, every
revision appended to an open segment on the delta target and fsynced every delta-sync-interval,
sealed every delta-seal-interval and shipped, in order, to every other target (a target that is
down gets them when it answers). A watch that breaks is resumed exactly; a gap (history compacted
past the writer) ends the chain and a full snapshot is taken at once. 'etcdguard restore' and
'recover' replay it (--to-revision, --to-time). Run the agent on every control-plane node: the
agents elect one writer through etcd (a lease of 5 s), which also takes the scheduled snapshots;
the others stand by and one takes over if the writer's node dies.

HTTP endpoints on the listen address:
  /-/healthy  200 while the process runs
  /-/ready    200 while the cluster is protected: the newest verified backup is younger than two
              schedule intervals and the delta chain from it runs (or: standing by for an elected
              writer); 503 otherwise, with the reason in one line
  /-/status   the same as JSON, with the writer and its newest durable revision

Signals: SIGTERM or SIGINT stops the agent (a snapshot in progress is cancelled and what it was
writing is removed; the open delta segment is sealed) and it exits 0. SIGHUP reads the config
file again; a config that does not load is rejected with a logged error and the agent keeps
running on the one it had. A new listen-address or new delta settings take effect at the next
start.

A schedule with a sixth, leading field of seconds ("*/5 * * * * *") is accepted; it is meant for
tests. deploy/systemd/etcdguard-agent.service runs the agent under systemd.`,
		Example: `  # the config file alone: a verified full snapshot every 30 minutes
  etcdguard agent --config /etc/etcdguard/etcdguard.yaml

  # serve /-/healthy and /-/ready on every interface, for a load balancer's probes
  etcdguard agent --config /etc/etcdguard/etcdguard.yaml --listen-address :9479

  # reload the config without stopping the agent
  systemctl reload etcdguard-agent   # or: kill -HUP <pid>
  curl -s http://127.0.0.1:9479/-/ready`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			load := func() (agent.Settings, error) { return o.settings(cmd, env, g) }
			var reload <-chan os.Signal
			if env.Notify != nil {
				ch, stop := env.Notify(syscall.SIGHUP)
				defer stop()
				reload = ch
			}
			// The log level and stream are the first load's; later loads only replace settings.
			s, err := g.resolve(env)
			if err != nil {
				return err
			}
			ctx := commandContext(cmd)
			a, err := agent.New(ctx, agent.Options{Load: load, Reload: reload, Logger: s.logger, Now: env.Now, Classify: env.Classify})
			if err != nil {
				return err
			}
			return a.Run(ctx)
		},
	}
	cmd.Flags().StringVar(&o.listenAddress, "listen-address", "", "host:port of the HTTP endpoints /-/healthy and /-/ready (default agent.listen-address in --config, else "+config.DefaultListenAddress+")")
	cmd.Flags().DurationVar(&o.targetTimeout, "target-timeout", snapshot.DefaultTargetIdleTimeout, "a target that accepts no data for this long is dropped from that run as stalled")
	cmd.Flags().BoolVar(&o.noDiscover, "no-discover", false, "use only the endpoints given, not every member in the member list")
	return cmd
}

// settings resolves the config file, environment and flags into the agent's settings. It runs
// at start and at every reload, so the file is read again each time.
func (o *agentOptions) settings(cmd *cobra.Command, env Env, g *globalOptions) (agent.Settings, error) {
	s, err := g.resolve(env)
	if err != nil {
		return agent.Settings{}, err
	}
	save, err := s.saveOptions(o.noDiscover, o.targetTimeout)
	if err != nil {
		return agent.Settings{}, err
	}
	ac := s.cfg.Agent
	if cmd.Flags().Changed("listen-address") {
		if err := config.CheckListenAddress(o.listenAddress); err != nil {
			return agent.Settings{}, fmt.Errorf("%w: --listen-address: %w", ErrUsage, err)
		}
		ac.ListenAddress = o.listenAddress
	}
	sched, err := config.ParseSchedule(ac.SnapshotSchedule)
	if err != nil {
		return agent.Settings{}, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	delta, err := deltaSettings(ac, save.Targets)
	if err != nil {
		return agent.Settings{}, err
	}
	drillSched, err := config.ParseSchedule(ac.DrillSchedule)
	if err != nil {
		return agent.Settings{}, fmt.Errorf("%w: agent: drill-schedule: %w", ErrUsage, err)
	}
	pruneSched, err := config.ParseSchedule(ac.PruneSchedule)
	if err != nil {
		return agent.Settings{}, fmt.Errorf("%w: agent: prune-schedule: %w", ErrUsage, err)
	}
	ids, err := loadIdentities(s)
	if err != nil {
		return agent.Settings{}, err
	}
	return agent.Settings{
		Save:  save,
		Prune: agent.PruneSettings{Enabled: ac.PruneOn(), Schedule: pruneSched, ScheduleSpec: ac.PruneSchedule},
		Drill: agent.DrillSettings{Enabled: ac.DrillOn(), Schedule: drillSched, ScheduleSpec: ac.DrillSchedule,
			Options: drill.Options{Targets: save.Targets, Target: ac.DrillTarget, Identities: ids, WorkDir: s.cfg.WorkDir, StateDir: s.cfg.StateDir}},
		Schedule: sched, ScheduleSpec: ac.SnapshotSchedule, ListenAddress: ac.ListenAddress,
		Delta:  delta,
		Policy: agent.PolicySettings{Rules: policyRules(s), StateDir: s.cfg.StateDir, Interval: time.Duration(ac.PolicyCheckInterval)},
	}, nil
}

// deltaSettings chooses the delta log's targets: the one named by agent.delta-target, else the
// first file:// target, keeps the open segment; every other target receives the sealed ones.
func deltaSettings(ac config.Agent, targets []repository.Target) (agent.DeltaSettings, error) {
	d := agent.DeltaSettings{Enabled: ac.DeltaLogOn(), SyncInterval: time.Duration(ac.DeltaSyncInterval), SealInterval: time.Duration(ac.DeltaSealInterval)}
	if !d.Enabled {
		return d, nil
	}
	local := -1
	for i, t := range targets {
		if (ac.DeltaTarget == "" && t.IsLocal() && !t.Offline) || (ac.DeltaTarget != "" && t.Name == ac.DeltaTarget) {
			local = i
			break
		}
	}
	switch {
	case local < 0 && ac.DeltaTarget == "":
		return d, fmt.Errorf("%w: the delta log keeps its open segment on a local disk, and no target is a file:// one that is not offline: add one, or set agent.delta-log: false", ErrUsage)
	case local < 0:
		return d, fmt.Errorf("%w: agent.delta-target %q names no target", ErrUsage, ac.DeltaTarget)
	case !targets[local].IsLocal():
		return d, fmt.Errorf("%w: agent.delta-target %q is not a file:// target: the open segment needs a local disk", ErrUsage, ac.DeltaTarget)
	case targets[local].Offline:
		// The agent cannot run its delta log while the medium is absent, and would stop at
		// start with it; the default choice passes offline targets over for that reason.
		return d, fmt.Errorf("%w: agent.delta-target %q is an offline target (a medium that may be absent): the open segment needs a disk that is always there; name another file:// target, or set agent.delta-log: false", ErrUsage, ac.DeltaTarget)
	}
	d.Local = targets[local]
	for i, t := range targets {
		if i != local {
			d.Remotes = append(d.Remotes, t)
		}
	}
	return d, nil
}
