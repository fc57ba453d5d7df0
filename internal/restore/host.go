package restore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/etcdguard/etcdguard/internal/cluster"
)

// ErrOtherHost is returned (wrapped) when part of a recovery belongs to members on other hosts:
// etcdguard never stops, starts, quarantines or restores a member that does not run here. The
// message says what to run on each of those hosts.
var ErrOtherHost = errors.New("members on other hosts must be recovered there")

// hostname is the name members' host fields are compared with.
func (r *Recoverer) hostname() string {
	if r.Hostname != "" {
		return r.Hostname
	}
	h, _ := os.Hostname()
	return h
}

// local reports whether a member runs on this host: its host field is empty (a single-host
// description) or names this host.
func (r *Recoverer) local(m cluster.Member) bool {
	return m.Host == "" || cluster.SameHost(m.Host, r.hostname())
}

// checkLocalPaths refuses a description in which two members of this host share a data dir or a
// static-pod manifest: two restores would then run on one path. Members of other hosts may share
// paths with local ones (kubeadm gives every host the same paths); they are never acted on here.
func (r *Recoverer) checkLocalPaths(c cluster.Cluster) error {
	dirs, manifests := map[string]string{}, map[string]string{}
	for _, m := range c.Members {
		if !r.local(m) {
			continue
		}
		dir := realDataDir(m.DataDir) // two paths, one folder, through a symlink
		if other, ok := dirs[dir]; ok {
			return fmt.Errorf("%w: members %s and %s both have data-dir %s on this host (%s): give each member its own data dir, or the host it runs on", ErrPlanMismatch, other, m.Name, dir, r.hostname())
		}
		for d, other := range dirs {
			if strings.HasPrefix(dir, d+"/") || strings.HasPrefix(d, dir+"/") {
				return fmt.Errorf("%w: the data dirs of members %s (%s) and %s (%s) are one inside the other on this host: moving one aside would move the other", ErrPlanMismatch, other, d, m.Name, dir)
			}
		}
		dirs[dir] = m.Name
		if m.StaticPodManifest != "" {
			if other, ok := manifests[m.StaticPodManifest]; ok {
				return fmt.Errorf("%w: members %s and %s both have static-pod-manifest %s on this host (%s)", ErrPlanMismatch, other, m.Name, m.StaticPodManifest, r.hostname())
			}
			manifests[m.StaticPodManifest] = m.Name
		}
	}
	return nil
}

// checkMovable refuses, before anything is stopped, a plan that would move aside or replace a
// data dir of this host that is a mount point (a disk mounted at the data dir): it can be neither
// renamed nor replaced, and finding that out after the members were stopped would leave the
// cluster down. Members that are only kept or started are not moved, whatever their data dir.
func (r *Recoverer) checkMovable(p Plan, only []string) error {
	for _, a := range p.Actions {
		if a.Do != ActReplace && a.Do != ActRestore {
			continue
		}
		m, ok := p.Cluster.Member(a.Member)
		if !ok || !r.local(m) || (len(only) > 0 && !containsString(only, m.Name)) {
			continue
		}
		if dir := realDataDir(m.DataDir); isMountPoint(dir) {
			return fmt.Errorf("%w: member %s's data dir %s is a mount point, which the %s step cannot move aside or replace; nothing was changed: mount the disk one level up (or use a folder on it, such as %s) and point the member's data-dir and etcd's --data-dir there, then run recover again",
				ErrInput, m.Name, dir, a.Do, filepath.Join(dir, "etcd"))
		}
	}
	return nil
}

// elsewhere returns, by host, the members of a plan that have work to do on other hosts.
func (r *Recoverer) elsewhere(p Plan) map[string][]string {
	out := map[string][]string{}
	for _, a := range p.Actions {
		m, ok := p.Cluster.Member(a.Member)
		if !ok || r.local(m) || a.Do == ActKeep {
			continue
		}
		out[m.Host] = append(out[m.Host], m.Name)
	}
	return out
}

// otherHostsError says what to run on each host whose members this host left alone.
func (r *Recoverer) otherHostsError(p Plan, planFile string) error {
	byHost := r.elsewhere(p)
	hosts := make([]string, 0, len(byHost))
	for h := range byHost {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	if planFile == "" {
		planFile = "PLAN.json (write it with: etcdguard recover plan --out PLAN.json)"
	}
	var parts []string
	for _, h := range hosts {
		var flags []string
		for _, n := range byHost[h] {
			flags = append(flags, "--member "+n)
		}
		parts = append(parts, fmt.Sprintf("on host %s run: etcdguard recover apply --plan %s %s", h, planFile, strings.Join(flags, " ")))
	}
	return fmt.Errorf("%w: this host (%s) did its part and left them alone; copy the plan to each host, then %s (with the same --config, or the same --target, TLS and --age-identity flags, so that it reaches the backups and the members)",
		ErrOtherHost, r.hostname(), strings.Join(parts, "; "))
}

// othersServing reports whether every member of another host that the plan has work for already
// serves linearizable reads: their hosts have applied their part, and the cluster can be verified
// from here.
func (r *Recoverer) othersServing(ctx context.Context, p Plan) bool {
	for _, names := range r.elsewhere(p) {
		for _, n := range names {
			m, _ := p.Cluster.Member(n)
			if r.Etcd.Linearizable(ctx, m.ClientURL) != nil {
				return false
			}
		}
	}
	return true
}
