package restore

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/etcdguard/etcdguard/internal/cluster"
	"github.com/etcdguard/etcdguard/internal/failpoint"
)

// Step is one timed step of a recovery, for the report.
type Step struct {
	Name    string        `json:"name"`
	Member  string        `json:"member,omitempty"`
	Elapsed time.Duration `json:"elapsed_ns"`
	Note    string        `json:"note,omitempty"`
}

// Report is what a recovery did.
type Report struct {
	Plan        Plan              `json:"plan"`
	Steps       []Step            `json:"steps"`
	Quarantined map[string]string `json:"quarantined,omitempty"`
	Verified    *Verification     `json:"verified,omitempty"`
	Next        []string          `json:"next"`
	Resumed     bool              `json:"resumed,omitempty"`
}

type stepper struct {
	mu    sync.Mutex
	steps []Step
	lg    *slog.Logger
	// touch records that a step is about to act on a member, before it does; done, that it
	// finished.
	touch func(member string) error
	done  func(member, step string) error
}

func (s *stepper) do(name, member string, fn func() (string, error)) error {
	start := time.Now()
	if s.touch != nil && member != "" {
		if err := s.touch(member); err != nil {
			return fmt.Errorf("%s %s: %w", name, member, err)
		}
	}
	note, err := fn()
	st := Step{Name: name, Member: member, Elapsed: time.Since(start), Note: note}
	s.mu.Lock()
	s.steps = append(s.steps, st)
	s.mu.Unlock()
	if err != nil {
		s.lg.Error("recovery step failed", "step", name, "member", member, "error", err)
		if member != "" {
			name += " " + member
		}
		return fmt.Errorf("%s: %w", name, err)
	}
	if s.done != nil && member != "" {
		if err := s.done(member, name); err != nil {
			return fmt.Errorf("%s %s: %w", name, member, err)
		}
	}
	s.lg.Info("recovery step done", "step", name, "member", member, "seconds", st.Elapsed.Seconds(), "note", note)
	failpoint.Here("recover/after-" + strings.ReplaceAll(name, " ", "-"))
	return nil
}

// Apply carries out a plan for the members named (every member when none is named). Running it
// again after an interruption finishes the job: members already restored for this plan are not
// restored again, and quarantined data dirs are never touched.
func (r *Recoverer) Apply(ctx context.Context, p Plan, only []string) (Report, error) {
	rep := Report{Plan: p, Quarantined: map[string]string{}}
	for _, n := range only {
		m, ok := p.Cluster.Member(n)
		if !ok {
			return rep, fmt.Errorf("%w: member %q is not in the plan (members: %s)", ErrPlanMismatch, n, memberNames(p.Cluster))
		}
		if !r.local(m) {
			return rep, fmt.Errorf("%w: member %s runs on host %s, not on this host (%s): run this command on %s", ErrOtherHost, m.Name, m.Host, r.hostname(), m.Host)
		}
	}
	if err := r.checkLocalPaths(p.Cluster); err != nil {
		return rep, err
	}
	if err := r.checkMovable(p, only); err != nil {
		return rep, err
	}
	// Members of other hosts are never acted on from here, whatever their paths and commands
	// say: on kubeadm every host has the same data dir and stop command, so acting on them here
	// would act on this host's member.
	selected := func(name string) bool {
		m, _ := p.Cluster.Member(name)
		return r.local(m) && (len(only) == 0 || containsString(only, name))
	}
	if err := r.saveState(p); err != nil {
		return rep, err
	}
	failpoint.Here("recover/plan-saved")
	st := &stepper{lg: r.log(),
		touch: func(member string) error { return r.touch(p.ID, member) },
		done:  func(member, step string) error { return r.stepDone(p.ID, member, step) },
	}
	var err error
	switch p.Path {
	case PathNone:
	case PathStart, PathReplace:
		err = r.applyRepair(ctx, p, selected, st, &rep)
	case PathRestore:
		if r.StopControlPlane {
			err = r.controlPlane(ctx, p, st, false)
		}
		if err == nil {
			err = r.applyRestore(ctx, p, selected, st, &rep)
		}
	default:
		err = fmt.Errorf("unknown recovery path %q", p.Path)
	}
	rep.Steps = st.steps
	if err != nil {
		return rep, err
	}
	if len(only) == 0 && len(r.elsewhere(p)) > 0 && !r.othersServing(ctx, p) {
		rep.Next = nextSteps(p)
		planFile := ""
		if r.StateDir != "" {
			planFile = r.statePath(p.ID)
		}
		return rep, r.otherHostsError(p, planFile)
	}
	if len(only) == 0 || len(only) == len(p.Cluster.Members) {
		var v Verification
		verr := st.do("verify", "", func() (string, error) {
			var err error
			v, err = r.Verify(ctx, p)
			return v.Summary(), err
		})
		rep.Steps = st.steps
		rep.Verified = &v
		if verr != nil {
			return rep, verr
		}
		if p.Path == PathRestore && r.StopControlPlane {
			if err := r.controlPlane(ctx, p, st, true); err != nil {
				rep.Steps = st.steps
				return rep, err
			}
			rep.Steps = st.steps
		}
		r.markDone(p)
	}
	rep.Next = nextSteps(p)
	return rep, nil
}

// controlPlane moves the control plane's static-pod manifests out (start false) or back.
func (r *Recoverer) controlPlane(ctx context.Context, p Plan, st *stepper, start bool) error {
	name := "stop control plane"
	if start {
		name = "start control plane"
	}
	return st.do(name, "", func() (string, error) {
		for _, m := range p.Cluster.ControlPlaneManifests {
			c := cluster.StaticPodController(m)
			var err error
			if start {
				err = c.Start(ctx, cluster.StartEnv{})
			} else {
				err = c.Stop(ctx)
			}
			if err != nil {
				return "", err
			}
		}
		return strings.Join(p.Cluster.ControlPlaneManifests, ", "), nil
	})
}

// stopAndWait stops a member and waits until it has let go of its data dir (a kubelet stops a
// static pod some time after its manifest moves) and its client port is closed.
func (r *Recoverer) stopAndWait(ctx context.Context, m cluster.Member) (string, error) {
	if err := r.controller(m).Stop(ctx); err != nil {
		return "", err
	}
	db := filepath.Join(m.DataDir, "member", "snap", "db")
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if !fileLocked(db) && r.etcdFor(m.ClientURL).Probe(ctx, m.ClientURL) != nil {
			return "", nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("member %s still holds %s or answers 2 minutes after being stopped: stop it by hand, then run recover again", m.Name, db)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// waitQuorum waits until a member answers with a leader and a linearizable read succeeds.
func (r *Recoverer) waitQuorum(ctx context.Context, c cluster.Cluster, limit time.Duration) (string, error) {
	urls := make([]string, len(c.Members))
	for i, m := range c.Members {
		urls[i] = m.ClientURL
	}
	ep, err := r.Etcd.WaitQuorum(ctx, urls, limit)
	if err != nil {
		return "", err
	}
	for _, m := range c.Members {
		if m.ClientURL == ep {
			return "quorum through " + m.Name, nil
		}
	}
	return "quorum through " + ep, nil
}

func (r *Recoverer) waitMember(ctx context.Context, m cluster.Member, limit time.Duration) (string, error) {
	if err := r.Etcd.WaitServing(ctx, m.Name, m.ClientURL, limit); err != nil {
		return "", err
	}
	return "serving", nil
}

func nextSteps(p Plan) []string {
	switch p.Path {
	case PathNone:
		return []string{"nothing to do: the cluster is healthy"}
	case PathRestore:
		return []string{
			"restart every kube-apiserver, then kube-controller-manager and kube-scheduler (kubeadm: move their manifests out of /etc/kubernetes/manifests and back, or crictl stop their containers), so that no cache serves data from before the restore",
			"check workloads that changed after the restored revision: they may need to be re-applied",
			"take a new backup now: etcdguard snapshot save",
		}
	}
	return []string{"take a new backup now: etcdguard snapshot save", "check kube-apiserver logs for reconnection to etcd"}
}
