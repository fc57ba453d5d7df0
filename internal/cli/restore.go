package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/etcdguard/etcdguard/internal/restore"
)

type restoreOptions struct {
	// from is a backup id, "latest", or a plain snapshot file.
	from           string
	dataDir        string
	name           string
	initialCluster string
	token          string
	peerURLs       []string
	bump           uint64
	bumpGiven      bool // --bump-revision was given
	noBump         bool
	quarantine     bool
	skipHashCheck  bool
	// etcdVersion is the etcd version the member will run, when no data dir records it.
	etcdVersion      string
	allowVersionSkew bool
	// toRevision, toTime and noDelta say where the restore goes (restore.Point).
	toRevision int64
	toTime     string
	noDelta    bool
}

func newRestoreCommand(env Env, g *globalOptions) *cobra.Command {
	o := &restoreOptions{}
	cmd := &cobra.Command{
		Use:   "restore ID|latest|FILE --data-dir DIR --name NAME --initial-cluster ... --initial-advertise-peer-urls URL",
		Short: "Restore one member's data dir from a backup, Kubernetes-safe",
		Long: `Restore one etcd member's data dir from a backup (by id, 'latest', or a plain snapshot file).

'latest' is the newest backup whose copy verifies: a copy that fails its checks is skipped with a
message, and the next copy, then the next older backup, is used. The snapshot is checked
completely before anything is written.

Kubernetes-safe by default: every revision is raised (--bump-revision) and the old ones marked
compacted, so that watch caches and informers see revisions only go up and re-list, instead of
silently missing changes. The bump is sized from the revision rate between backups and the
backup's age, with a floor of 1,000,000; it is printed. --no-bump opts out.

A data dir that holds data is refused; --quarantine moves it aside to DIR.quarantine-TIME and
prints where. Nothing is ever deleted. The restored member is built beside the data dir and
moved into place only when complete. Restored data dirs start under etcd 3.5 and 3.6.

Version skew: the backup's etcd version (what the snapshot records) is compared with the one
the member will run (what the data dir being replaced records, else --etcd-version). The same
minor version is fine; one minor up (a 3.5 backup for etcd 3.6) is a warning; a downgrade (a
3.6 backup for etcd 3.5) is refused (exit code 9) unless --allow-version-skew.

Point in time: a backup's delta log (written by 'etcdguard agent') is replayed onto it, each
segment checked, leases restored with what is left of their TTL, and only then are revisions
raised. Without a bound the restore goes to the newest durable point of the log (the complete
part of the open segment on a local target included). --to-revision N restores the cluster as it
was at revision N, --to-time T as it was at moment T (RFC 3339); 'latest' is then the newest
backup at or before that point. --no-delta restores the backup alone. The revision reached is
printed: give it as --to-revision to the other members, so that all hold the same data.

Restore every member of the cluster from the same backup with the same --initial-cluster and
--initial-cluster-token, then start them (see 'etcdguard recover' for the whole cluster).`,
		Example: `  # on each member (stop etcd first), the same backup and token everywhere
  etcdguard restore latest --config /etc/etcdguard.yaml --quarantine \
    --data-dir /var/lib/etcd --name cp1 \
    --initial-cluster cp1=https://10.0.0.1:2380,cp2=https://10.0.0.2:2380,cp3=https://10.0.0.3:2380 \
    --initial-cluster-token etcd-restored-20261124 \
    --initial-advertise-peer-urls https://10.0.0.1:2380

  # the cluster as it was at revision 1234567, or just before a bad deploy at 14:05 UTC
  etcdguard restore latest --to-revision 1234567 --data-dir /var/lib/etcd --name cp1 ...
  etcdguard restore latest --to-time 2026-12-02T14:05:00Z --data-dir /var/lib/etcd --name cp1 ...

  # from a plain snapshot file
  etcdguard restore /var/tmp/etcd.db --data-dir /var/lib/etcd --name cp1 ...`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.resolve(env)
			if err != nil {
				return err
			}
			if o.noBump && cmd.Flags().Changed("bump-revision") {
				return fmt.Errorf("%w: --no-bump and --bump-revision contradict each other", ErrUsage)
			}
			if o.bump > uint64(restore.MaxBumpedRevision) {
				return fmt.Errorf("%w: --bump-revision %d is above %d (2^53), the highest revision etcdguard bumps to (past 2^63-1 revisions would wrap around and go down): give a smaller bump",
					ErrUsage, o.bump, restore.MaxBumpedRevision)
			}
			for _, f := range []struct{ name, v string }{{"--data-dir", o.dataDir}, {"--name", o.name}, {"--initial-cluster", o.initialCluster}} {
				if f.v == "" {
					return fmt.Errorf("%w: give %s", ErrUsage, f.name)
				}
			}
			if len(o.peerURLs) == 0 {
				return fmt.Errorf("%w: give --initial-advertise-peer-urls (this member's peer URL in --initial-cluster)", ErrUsage)
			}
			if o.etcdVersion != "" && !restore.ValidVersion(o.etcdVersion) {
				return fmt.Errorf("%w: --etcd-version %q is not an etcd version (3.5, 3.6.16, ...)", ErrUsage, o.etcdVersion)
			}
			if !strings.Contains(","+o.initialCluster, ","+o.name+"=") {
				return fmt.Errorf("%w: --name %s does not appear in --initial-cluster %s", ErrUsage, o.name, o.initialCluster)
			}
			if _, err := o.point(); err != nil {
				return err
			}
			o.from, o.bumpGiven = args[0], cmd.Flags().Changed("bump-revision")
			return runRestore(commandContext(cmd), env, s, *o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dataDir, "data-dir", "", "the member's data dir to restore into")
	f.StringVar(&o.name, "name", "", "the member's name (etcd --name)")
	f.StringVar(&o.initialCluster, "initial-cluster", "", "every member as NAME=PEER_URL, comma-separated (etcd --initial-cluster)")
	f.StringVar(&o.token, "initial-cluster-token", "", "token of the restored cluster, the same on every member (default: etcdguard-BACKUP, from the backup restored, so members restored from the same backup agree and the old cluster's token is not reused)")
	f.StringSliceVar(&o.peerURLs, "initial-advertise-peer-urls", nil, "this member's peer URLs (etcd --initial-advertise-peer-urls)")
	f.Uint64Var(&o.bump, "bump-revision", 0, "raise revisions by exactly this much, up to revision 2^53 (default: sized automatically)")
	f.BoolVar(&o.noBump, "no-bump", false, "do not raise revisions (not Kubernetes-safe)")
	f.BoolVar(&o.quarantine, "quarantine", false, "move a data dir that holds data aside instead of refusing")
	f.StringVar(&o.etcdVersion, "etcd-version", "", "the etcd version the restored member will run (3.5, 3.6.16, ...), when the data dir being replaced does not record it")
	f.BoolVar(&o.allowVersionSkew, "allow-version-skew", false, "restore even a backup of a newer etcd for an older one (a downgrade), or across more than one minor version")
	f.BoolVar(&o.skipHashCheck, "skip-hash-check", false, "accept a snapshot file without etcd's SHA-256 trailer (a db copied from a data dir)")
	addPointFlags(f, &o.toRevision, &o.toTime, &o.noDelta)
	return cmd
}

// addPointFlags adds the flags that say where a restore goes (restore and recover).
func addPointFlags(f *pflag.FlagSet, toRevision *int64, toTime *string, noDelta *bool) {
	f.Var(revisionFlag{toRevision}, "to-revision", "restore the cluster as it was at this revision: the newest backup at or before it, and its delta log replayed up to it")
	f.StringVar(toTime, "to-time", "", "restore the cluster as it was at this moment (RFC 3339, e.g. 2026-12-02T14:05:00Z): the newest backup at or before it, and its delta log up to it")
	f.BoolVar(noDelta, "no-delta", false, "restore the backup alone, without replaying its delta log")
}

// revisionFlag is --to-revision: a revision, at least 1. Zero is the flag's value when it is not
// given (no bound: the newest durable point), so a 0 given must be refused, not read as that.
type revisionFlag struct{ p *int64 }

func (f revisionFlag) String() string {
	if f.p == nil {
		return "0"
	}
	return strconv.FormatInt(*f.p, 10)
}

func (f revisionFlag) Set(s string) error {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return errors.New("not a revision (a whole number)")
	}
	if n < 1 {
		return errors.New("a revision is at least 1")
	}
	*f.p = n
	return nil
}

func (revisionFlag) Type() string { return "int" }

// parsePoint checks the point flags and returns the point they give.
func parsePoint(toRevision int64, toTime string, noDelta bool) (restore.Point, error) {
	p := restore.Point{Revision: toRevision, NoDelta: noDelta}
	n := 0
	for _, set := range []bool{toRevision != 0, toTime != "", noDelta} {
		if set {
			n++
		}
	}
	if n > 1 {
		return p, fmt.Errorf("%w: give one of --to-revision, --to-time and --no-delta", ErrUsage)
	}
	if toRevision < 0 {
		return p, fmt.Errorf("%w: --to-revision %d: a revision is positive", ErrUsage, toRevision)
	}
	if toTime != "" {
		t, err := time.Parse(time.RFC3339Nano, toTime)
		if err != nil {
			return p, fmt.Errorf("%w: --to-time %q: give a moment in RFC 3339, e.g. 2026-12-02T14:05:00Z", ErrUsage, toTime)
		}
		if t.IsZero() {
			return p, fmt.Errorf("%w: --to-time %q is the zero time, which means no bound: give a moment after the first backup", ErrUsage, toTime)
		}
		p.Time = t
	}
	return p, nil
}

func (o restoreOptions) point() (restore.Point, error) {
	return parsePoint(o.toRevision, o.toTime, o.noDelta)
}

func absPath(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return a
}

func runRestore(ctx context.Context, env Env, s settings, o restoreOptions) error {
	opts := restore.MemberOptions{
		From: o.from, WorkDir: s.cfg.WorkDir,
		Name: o.name, InitialCluster: o.initialCluster, Token: o.token, PeerURLs: o.peerURLs, DataDir: o.dataDir,
		Bump: o.bump, BumpGiven: o.bumpGiven, NoBump: o.noBump, Quarantine: o.quarantine, SkipHashCheck: o.skipHashCheck,
		EtcdVersion: o.etcdVersion, AllowVersionSkew: o.allowVersionSkew,
		Logger: s.logger, Now: env.Now(),
	}
	opts.Point, _ = o.point()                                 // checked with the flags
	if st, err := os.Stat(o.from); err != nil || st.IsDir() { // a backup, not a snapshot file
		if err := s.requireTargets(); err != nil {
			return err
		}
		ids, err := loadIdentities(s)
		if err != nil {
			return err
		}
		opts.Targets, opts.Identities = s.cfg.Targets, ids
	}
	rep, err := restore.RestoreMember(ctx, opts)
	for _, n := range rep.Notes {
		fmt.Fprintln(env.Stderr, n)
	}
	res := rep.Member
	if err != nil {
		if res.Quarantined != "" {
			fmt.Fprintf(env.Stderr, "the old data dir was moved, untouched, to %s\n", res.Quarantined)
		}
		return err
	}
	if s.output == "json" {
		return writeJSON(env.Stdout, rep)
	}
	from := rep.File
	if rep.Backup != "" {
		from = fmt.Sprintf("backup %s (copy in target %s)", rep.Backup, rep.Target)
	}
	fmt.Fprintf(env.Stdout, "restored member %s into %s from %s: revision %d, %d keys, cluster token %s\n", o.name, res.DataDir, from, rep.Revision, rep.Status.TotalKey, rep.Token)
	if rr := res.Replay; rr != nil {
		at := ""
		if !rep.ReachedTime.IsZero() {
			at = ", received " + rep.ReachedTime.UTC().Format(time.RFC3339Nano)
		}
		fmt.Fprintf(env.Stdout, "delta log replayed from target %s: revisions %d to %d (%d revisions, %d events%s); %d leases restored\n",
			rep.Chain.Target, rr.From+1, rr.To, rr.Revisions, rr.Events, at, rr.LeasesRestored)
		fmt.Fprintf(env.Stdout, "the member holds the cluster as it was at revision %d: restore the other members with --to-revision %d\n", rep.Reached, rep.Reached)
		if len(rr.LeasesNotRestored) > 0 {
			fmt.Fprintf(env.Stderr, "warning: %d keys are attached to %d leases the delta log holds no grant of; etcd cannot expire them\n", rr.LeaseKeys, len(rr.LeasesNotRestored))
		}
	} else if rep.Backup != "" && (o.toRevision != 0 || o.toTime != "") {
		// The point asked for is the backup itself: nothing to replay.
		fmt.Fprintf(env.Stdout, "the member holds the cluster as it was at revision %d, the backup's own: restore the other members with --to-revision %d\n", rep.Reached, rep.Reached)
	} else if rep.Backup != "" && !o.noDelta {
		fmt.Fprintln(env.Stdout, "no delta log of this backup in the targets: the member holds the backup's revision")
	}
	if rep.Bump > 0 {
		fmt.Fprintf(env.Stdout, "revisions raised by %d to %d and marked compacted (%s)\n", rep.Bump, rep.Reached+int64(rep.Bump), strings.Join(rep.BumpReasons, "; "))
	} else {
		fmt.Fprintln(env.Stdout, rep.BumpReasons[0])
	}
	if res.Quarantined != "" {
		fmt.Fprintf(env.Stdout, "the old data dir was moved, untouched, to %s\n", res.Quarantined)
	}
	fmt.Fprintf(env.Stdout, "next: restore the other members the same way (same backup, --initial-cluster and --initial-cluster-token), then start etcd on each with --initial-cluster-token %s\n", rep.Token)
	return nil
}
