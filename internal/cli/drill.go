package cli

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/etcdguard/etcdguard/internal/drill"
)

type drillOptions struct {
	backup       string
	stateDir     string
	keep         int
	fetchRate    string
	gomaxprocs   int
	startTimeout time.Duration
	last         bool
}

func newDrillCommand(env Env, g *globalOptions) *cobra.Command {
	o := &drillOptions{}
	cmd := &cobra.Command{
		Use:   "drill [--target NAME] [--backup ID]",
		Short: "Prove a backup: restore it into a scratch etcd member and check what it serves",
		Long: `Run a restore drill: restore a backup as a disaster would need it restored, into a throw-away
etcd member of its own, and check that the member serves what the backup records.

The drill reads one target: --target NAME, or by default the first target that is not a folder
of this host (an S3 bucket: the copy a disaster leaves). It takes the backup 'restore latest'
would take from it (or --backup ID), fetches it under the target's shared lock with every check
of 'snapshot verify', restores it into a scratch data dir under --work-dir and replays its delta
log to the newest durable point, as a point-in-time restore does (no revision bump: the member
is checked at the revision recorded). Then it starts etcdguard's own embedded etcd server on the
result, on loopback ports, with TLS and a cluster token of its own, at nice 19, the idle I/O
class and GOMAXPROCS=1, and checks: the restored database's revision (and, without a delta log,
its key count against the manifest; with one, the events replayed against the segments'
manifests), then the member's revision and the keys it serves at that revision.

A drill never connects to the cluster it protects: it takes no --endpoints. It refuses to start
(exit code 9) when --work-dir has less free space than twice the backup, its delta log and
192 MiB for etcd's WAL. Everything it writes is removed afterwards, also on failure and on
Ctrl-C; what a killed drill left is removed by the next one. The result (backup, target, revision
reached, the reason of a failure, how long fetch, restore and start took: the measured recovery
time) is written to --state-dir/drills as JSON, the newest 50 kept; --last prints the newest.

Failure reasons: budget, fetch, corrupt, restore, start, check, interrupted. A damaged backup or
delta log exits 5; a target that cannot be read 8 (7: no backup); a restore, start or check that
failed 13.`,
		Example: `  # drill the newest backup of the first remote target of the config file
  etcdguard drill --config /etc/etcdguard.yaml

  # a given target and backup, reading at most 50 MiB/s, a JSON report
  etcdguard drill --config /etc/etcdguard.yaml --target s3 --backup 20261124T035532Z-1a2b3c4d --fetch-rate 50MiB -o json

  # the last drill's result and age
  etcdguard drill --last --state-dir /var/lib/etcdguard`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.flags.Changed("endpoints") {
				return fmt.Errorf("%w: drill takes no --endpoints: it never connects to the cluster, only to a scratch member of its own", ErrUsage)
			}
			s, err := g.resolve(env)
			if err != nil {
				return err
			}
			stateDir := firstNonEmpty(o.stateDir, s.cfg.StateDir)
			if o.last {
				return printLastDrill(env, s, stateDir)
			}
			rate, err := parseRate(o.fetchRate)
			if err != nil {
				return fmt.Errorf("%w: --fetch-rate %q: %w", ErrUsage, o.fetchRate, err)
			}
			if err := s.requireTargets(); err != nil {
				return err
			}
			ids, err := loadIdentities(s)
			if err != nil {
				return err
			}
			opts := drill.Options{
				Targets: s.cfg.Targets, Backup: o.backup, Identities: ids, WorkDir: s.cfg.WorkDir, StateDir: stateDir, Keep: o.keep,
				StartTimeout: o.startTimeout, Budget: drill.Budget{GOMAXPROCS: o.gomaxprocs, FetchRate: rate},
				Logger: s.logger, Now: env.Now,
			}
			if g.flags.Changed("target") {
				opts.Target = s.cfg.Targets[0].Name // the target named on the command line
			}
			if env.IsTerminal {
				opts.Progress = func(st drill.Step) { fmt.Fprintf(env.Stderr, "drill: %s...\n", st) }
			}
			return runDrill(commandContext(cmd), env, s, opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.backup, "backup", "", "the id of the backup to drill (default: the one 'restore latest' takes from the target)")
	f.StringVar(&o.stateDir, "state-dir", "", "where the drill history is kept, in drills/ (default state-dir of --config, else /var/lib/etcdguard)")
	f.IntVar(&o.keep, "keep", drill.DefaultKeep, "how many results the drill history keeps")
	f.StringVar(&o.fetchRate, "fetch-rate", "", "read the backup and its delta log at most this fast, in bytes a second (50MiB, 800KiB; default unbounded)")
	f.IntVar(&o.gomaxprocs, "gomaxprocs", 1, "GOMAXPROCS of the scratch etcd member")
	f.DurationVar(&o.startTimeout, "start-timeout", 2*time.Minute, "how long the scratch member may take to serve")
	f.BoolVar(&o.last, "last", false, "print the last drill's result and age instead of running one")
	return cmd
}

func runDrill(ctx context.Context, env Env, s settings, opts drill.Options) error {
	res, err := drill.Run(ctx, opts)
	for _, n := range res.Notes {
		fmt.Fprintln(env.Stderr, n)
	}
	if res.Target == "" { // the drill did not run
		return err
	}
	if s.output == "json" {
		if jerr := writeJSON(env.Stdout, res); jerr != nil {
			return errors.Join(err, jerr)
		}
		return err
	}
	if terr := printDrill(env, res, env.Now()); terr != nil {
		return errors.Join(err, terr)
	}
	return err
}

// printDrill writes a drill's result as a table of fields.
func printDrill(env Env, res drill.Result, now time.Time) error {
	t := newTable(env.Stdout, "FIELD", "VALUE")
	result := "passed"
	if !res.OK {
		result = "FAILED (" + string(res.Reason) + ")"
	}
	t.row("result", result)
	t.row("backup", res.Backup)
	t.row("target", res.Target)
	t.row("backup revision", strconv.FormatInt(res.BackupRevision, 10))
	reached := strconv.FormatInt(res.Revision, 10)
	if !res.RevisionTime.IsZero() {
		reached += " (received " + res.RevisionTime.UTC().Format(time.RFC3339) + ")"
	}
	t.row("revision reached", reached)
	t.row("delta log", fmt.Sprintf("%d segments, %d events replayed", res.Segments, res.Events))
	if res.OK {
		t.row("keys served", strconv.FormatInt(res.Keys, 10))
	}
	d := res.Durations
	r := func(x time.Duration) string { return x.Round(time.Millisecond).String() }
	t.row("fetch / restore / start", r(d.Fetch)+" / "+r(d.Restore)+" / "+r(d.Start))
	t.row("recovery time", r(d.Recovery))
	t.row("checks", strings.Join(res.Checks, ", "))
	t.row("finished", res.Finished.UTC().Format(time.RFC3339)+" ("+humanAge(now, res.Finished)+" ago)")
	if res.Error != "" {
		t.row("error", res.Error)
	}
	return t.flush()
}

// printLastDrill prints the newest drill of the history (drill --last).
func printLastDrill(env Env, s settings, stateDir string) error {
	res, _, err := drill.Last(stateDir, env.Now())
	if err != nil {
		return err
	}
	if s.output == "json" {
		return writeJSON(env.Stdout, res)
	}
	return printDrill(env, res, env.Now())
}

// parseRate reads a rate in bytes a second: a whole number, optionally with KiB, MiB or GiB
// (or K, M, G, the same binary units). Empty is 0, no bound.
func parseRate(v string) (int64, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, nil
	}
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}} {
		if n, ok := strings.CutSuffix(v, u.suffix); ok {
			v, mult = n, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n <= 0 {
		return 0, errors.New("give a positive number of bytes a second, such as 50MiB")
	}
	return n * mult, nil
}
