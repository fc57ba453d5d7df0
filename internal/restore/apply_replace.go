package restore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdguard/etcdguard/internal/cluster"
	"github.com/etcdguard/etcdguard/internal/etcdx"
)

func (r *Recoverer) applyRepair(ctx context.Context, p Plan, selected func(string) bool, st *stepper, rep *Report) error {
	var toStart []cluster.Member
	for _, a := range p.Actions {
		m, _ := p.Cluster.Member(a.Member)
		if a.Do == ActStart && selected(m.Name) {
			toStart = append(toStart, m)
		}
	}
	// Intact members start together: they need each other for quorum.
	if err := r.parallel(toStart, func(m cluster.Member) error {
		return st.do("start", m.Name, func() (string, error) {
			return "", r.controller(m).Start(ctx, cluster.StartEnv{State: "existing", InitialCluster: p.Cluster.InitialCluster(), Token: p.Token})
		})
	}); err != nil {
		return err
	}
	all := true
	for _, m := range p.Cluster.Members {
		all = all && selected(m.Name)
	}
	if all || len(toStart) == 0 {
		if err := st.do("wait for quorum", "", func() (string, error) { return r.waitQuorum(ctx, p.Cluster, 2*time.Minute) }); err != nil {
			return err
		}
	}
	for _, a := range p.Actions {
		m, _ := p.Cluster.Member(a.Member)
		if a.Do != ActReplace || !selected(m.Name) {
			continue
		}
		if err := r.replaceMember(ctx, p, m, st, rep); err != nil {
			return err
		}
	}
	return nil
}

// replaceMember brings back a member whose data is damaged or missing while the others hold
// quorum: its data dir is moved aside, it is removed from the cluster and added back, and it
// starts on an empty data dir, receiving the data from the leader.
func (r *Recoverer) replaceMember(ctx context.Context, p Plan, m cluster.Member, st *stepper, rep *Report) error {
	// A member that serves again was replaced by an earlier, interrupted run of this plan (or
	// repaired by hand): leave it alone.
	if r.Etcd.Linearizable(ctx, m.ClientURL) == nil {
		return st.do("replace", m.Name, func() (string, error) { return "already serving: left alone", nil })
	}
	// Removed and added back by an earlier run of this plan: it has an empty data dir and a new
	// member id, and may be receiving the data from the leader. Doing it again would quarantine
	// what it received and remove it once more: it is only started (again) and waited for.
	if _, done := r.progress(p.ID); done[m.Name]["member remove and add"] {
		return r.startReplaced(ctx, p, m, st, "added back by an earlier run of this plan")
	}
	if err := st.do("stop", m.Name, func() (string, error) { return r.stopAndWait(ctx, m) }); err != nil {
		return err
	}
	if err := st.do("quarantine", m.Name, func() (string, error) {
		empty, err := isEmptyOrAbsent(m.DataDir)
		if err != nil || empty {
			return "data dir empty or absent", err
		}
		moved, err := Quarantine(m.DataDir, r.now())
		if err == nil {
			rep.Quarantined[m.Name] = moved
		}
		return "moved to " + moved, err
	}); err != nil {
		return err
	}
	var healthy []string
	for _, o := range p.Cluster.Members {
		if o.Name != m.Name {
			healthy = append(healthy, o.ClientURL)
		}
	}
	if err := st.do("member remove and add", m.Name, func() (string, error) {
		return r.readdMember(ctx, healthy, m)
	}); err != nil {
		return err
	}
	return r.startReplaced(ctx, p, m, st, "")
}

// startReplaced starts a member that was removed and added back, joining the existing cluster
// on an empty data dir, and waits until it serves.
func (r *Recoverer) startReplaced(ctx context.Context, p Plan, m cluster.Member, st *stepper, note string) error {
	if err := st.do("start", m.Name, func() (string, error) {
		return note, r.controller(m).Start(ctx, cluster.StartEnv{State: "existing", InitialCluster: p.Cluster.InitialCluster(), Token: p.Token})
	}); err != nil {
		return err
	}
	return st.do("wait for member", m.Name, func() (string, error) { return r.waitMember(ctx, m, 2*time.Minute) })
}

func (r *Recoverer) readdMember(ctx context.Context, endpoints []string, m cluster.Member) (string, error) {
	cli, err := r.anyClient(ctx, endpoints)
	if err != nil {
		return "", err
	}
	defer cli.Close()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	list, err := cli.MemberList(cctx)
	if err != nil {
		return "", fmt.Errorf("list members: %w", err)
	}
	for _, mem := range list.Members {
		if !containsString(mem.PeerURLs, m.PeerURL) {
			continue
		}
		if mem.Name == "" {
			return fmt.Sprintf("already added back as %016x (an earlier run)", mem.ID), nil
		}
		if _, err := cli.MemberRemove(cctx, mem.ID); err != nil {
			return "", fmt.Errorf("remove member %s (%016x): %w", m.Name, mem.ID, err)
		}
	}
	// etcd refuses to add a member until the others have been connected for a few seconds
	// (--strict-reconfig-check): a cluster that just got quorum back must settle first.
	var added *clientv3.MemberAddResponse
	for {
		added, err = cli.MemberAdd(cctx, []string{m.PeerURL})
		if err == nil || !errors.Is(err, rpctypes.ErrUnhealthy) && !errors.Is(err, rpctypes.ErrGRPCUnhealthy) {
			break
		}
		select {
		case <-cctx.Done():
			return "", fmt.Errorf("add member %s back: the cluster stayed unhealthy: %w", m.Name, err)
		case <-time.After(time.Second):
		}
	}
	if err != nil {
		return "", fmt.Errorf("add member %s back: %w", m.Name, err)
	}
	return fmt.Sprintf("added back as %016x", added.Member.ID), nil
}

func (r *Recoverer) anyClient(ctx context.Context, endpoints []string) (*clientv3.Client, error) {
	var errs []error
	for _, ep := range endpoints {
		st := r.etcdFor(ep).Status(ctx, false)
		if len(st) == 1 && st[0].Err == "" && st[0].Leader != 0 {
			return r.etcdFor(ep).Client(ctx, ep)
		}
		if len(st) == 1 {
			errs = append(errs, errors.New(st[0].Err))
		}
	}
	return nil, fmt.Errorf("%w: no healthy member among %s: %w", etcdx.ErrUnavailable, strings.Join(endpoints, ", "), errors.Join(errs...))
}
