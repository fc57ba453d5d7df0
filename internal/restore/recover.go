package restore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"filippo.io/age"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdguard/etcdguard/internal/atomicfile"
	"github.com/etcdguard/etcdguard/internal/cluster"
	"github.com/etcdguard/etcdguard/internal/datadir"
	"github.com/etcdguard/etcdguard/internal/etcdx"
	"github.com/etcdguard/etcdguard/internal/failpoint"
	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/snapshot"
)

// ErrPlanMismatch is returned (wrapped) when what apply finds differs from what the plan was
// made on: a snapshot whose SHA-256 is not the plan's, a member the plan does not know.
var ErrPlanMismatch = errors.New("does not match the plan")

// Recoverer assesses, plans and carries out the recovery of one cluster.
type Recoverer struct {
	// Etcd holds the TLS settings and timeouts used to talk to the members; its endpoints are
	// replaced by the members' client URLs.
	Etcd    etcdx.Config
	Cluster cluster.Cluster
	// Targets hold the backups; Identities open encrypted ones.
	Targets    []repository.Target
	Identities []age.Identity
	// StateDir keeps plan files and progress, so that an interrupted recovery can be finished.
	StateDir string
	// WorkDir holds the scratch copy of the source snapshot; empty means beside the data dirs.
	WorkDir string
	// NoBump restores without raising revisions.
	NoBump bool
	// Lost names members whose data the operator declares lost (checked with doctor on their
	// own hosts): they are neither read nor waited for, and a restore may replace them.
	Lost []string
	// StopControlPlane moves the Cluster's ControlPlaneManifests out of the kubelet's folder
	// before a restore and back after it is verified, so that no kube-apiserver serves or caches
	// data while etcd is replaced under it.
	StopControlPlane bool
	Logger           *slog.Logger
	Now              func() time.Time
	// Controllers overrides how members are stopped and started, by member name (the demo runs
	// its members itself); members not in it use cluster.NewController.
	Controllers map[string]cluster.Controller
	// MaxPlanAge is how old an unfinished plan may be and still be resumed (zero:
	// DefaultMaxPlanAge).
	MaxPlanAge time.Duration
	// EtcdVersion is the etcd version the members will run, when no readable database records
	// it; AllowVersionSkew restores a backup of another etcd version anyway.
	EtcdVersion      string
	AllowVersionSkew bool
	// Hostname is this host's name, compared with members' host fields; empty means the
	// operating system's.
	Hostname string
}

func (r *Recoverer) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Recoverer) log() *slog.Logger {
	if r.Logger != nil {
		return r.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func (r *Recoverer) controller(m cluster.Member) cluster.Controller {
	if c, ok := r.Controllers[m.Name]; ok {
		return c
	}
	return cluster.NewController(m)
}

func (r *Recoverer) etcdFor(urls ...string) etcdx.Config {
	c := r.Etcd
	c.Endpoints = urls
	return c
}

// Assess looks at every member, read-only: whether it answers, and for those that do not, their
// data dir offline. It also finds the newest verified backup of the cluster.
func (r *Recoverer) Assess(ctx context.Context) ([]cluster.Assessment, *BackupInfo, []RevisionPoint, error) {
	if err := r.Cluster.Validate(); err != nil {
		return nil, nil, nil, err
	}
	if err := r.checkLocalPaths(r.Cluster); err != nil {
		return nil, nil, nil, err
	}
	for _, n := range r.Lost {
		if _, ok := r.Cluster.Member(n); !ok {
			return nil, nil, nil, fmt.Errorf("%w: --lost %q: no member has that name (members: %s)", ErrPlanMismatch, n, memberNames(r.Cluster))
		}
	}
	as := make([]cluster.Assessment, len(r.Cluster.Members))
	var wg sync.WaitGroup
	for i, m := range r.Cluster.Members {
		wg.Go(func() { as[i] = r.assessMember(ctx, m) })
	}
	wg.Wait()
	if err := r.checkMembership(as); err != nil {
		return as, nil, nil, err
	}
	for _, m := range r.Cluster.Members {
		if !r.local(m) {
			continue
		}
		if _, err := os.Stat(filepath.Dir(m.DataDir)); err != nil {
			return as, nil, nil, fmt.Errorf("%w: member %s: the folder of data-dir %s does not exist (%v): check the data-dir in the cluster description", ErrPlanMismatch, m.Name, m.DataDir, err)
		}
	}
	for _, a := range as {
		// Only a database that passed its checks is opened: bbolt can crash on a damaged one.
		if a.Disk != nil && a.Disk.DBOK {
			if err := checkPeerURLs(r.Cluster, a.Name, readMembership(a.Disk.DBPath)); err != nil {
				return as, nil, nil, err
			}
		}
	}
	if len(r.Targets) == 0 {
		return as, nil, nil, nil
	}
	cat, err := snapshot.Load(ctx, r.Targets)
	if cat != nil {
		defer cat.Close()
	}
	if err != nil {
		r.log().Warn("no backup could be read; only the members' own data can be used", "error", err)
		return as, nil, nil, nil
	}
	// Only backups of this cluster count: the cluster id comes from the members that answer
	// or from their WALs. Backups of another cluster (a test cluster sharing a bucket, an old
	// cluster) are never candidates.
	clusterID := ""
	for _, a := range as {
		if a.Disk != nil && a.Disk.ClusterID != 0 {
			clusterID = fmt.Sprintf("%016x", a.Disk.ClusterID)
		}
	}
	if clusterID == "" {
		for _, m := range r.Cluster.Members {
			for _, st := range r.etcdFor(m.ClientURL).Status(ctx, false) {
				if st.Err == "" && st.ClusterID != 0 {
					clusterID = fmt.Sprintf("%016x", st.ClusterID)
				}
			}
			if clusterID != "" {
				break
			}
		}
	}
	// A cluster restored earlier has a new id, and its older backups carry the old one: when no
	// backup has this cluster's id, all are considered, and the plan (which the operator
	// confirms) names the backup and its revision.
	ch, err := cat.Latest(ctx, snapshot.Query{ClusterID: clusterID, AnyClusterIfNone: true})
	if ch.OtherClusters {
		r.log().Warn("no backup has this cluster's id; considering backups of other cluster ids (a restored cluster gets a new id)", "cluster", clusterID)
	}
	for _, e := range ch.Ignored {
		r.log().Warn("ignoring a backup of another cluster", "id", e.Manifest.ID, "backup_cluster", e.Manifest.ClusterID, "cluster", clusterID)
	}
	if err != nil {
		return as, nil, nil, nil // no backup: only the members' own data can be used
	}
	var history []RevisionPoint
	for _, e := range ch.Candidates {
		history = append(history, RevisionPoint{Revision: e.Manifest.Revision, At: e.Manifest.Started})
	}
	m := ch.Entry.Manifest
	newest := &BackupInfo{ID: m.ID, Revision: m.Revision, Created: m.Started, SHA256: m.SHA256, TotalKey: m.Status.TotalKey - m.Status.BumpKeys, Version: backupVersion(m)}
	return as, newest, history, nil
}

// backupVersion is the etcd version a backup's data is of: its storage version (etcd 3.6 and
// later), else the server version it was taken from.
func backupVersion(m repository.Manifest) string {
	switch {
	case m.StorageVersion != "":
		return m.StorageVersion
	case m.Status.Version != "":
		return m.Status.Version
	}
	return m.EtcdVersion
}

func (r *Recoverer) assessMember(ctx context.Context, m cluster.Member) cluster.Assessment {
	a := cluster.Assessment{Name: m.Name}
	// A member that answers but has no leader may be in the middle of an election (its peers
	// just came back, or the leader just died): ask again for a few election rounds.
	var st []etcdx.MemberStatus
	for try := 0; try < 6; try++ {
		st = r.etcdFor(m.ClientURL).Status(ctx, false)
		if len(st) != 1 || st[0].Err != "" || st[0].Leader != 0 {
			break
		}
		select {
		case <-ctx.Done():
			try = 6
		case <-time.After(time.Second):
		}
	}
	if len(st) == 1 && st[0].Err == "" && st[0].Leader != 0 && len(st[0].Alarms) == 0 {
		a.Online, a.MemberID, a.Revision = true, st[0].ID, st[0].Revision
		return a
	}
	if len(st) == 1 {
		a.OnlineErr = st[0].Err
		if a.OnlineErr == "" {
			a.OnlineErr = "answers but has no leader or raised an alarm"
		}
	}
	if containsString(r.Lost, m.Name) {
		a.Disk = cluster.LostDisk()
		return a
	}
	if !r.local(m) {
		a.OnlineErr += fmt.Sprintf("; its data dir is on host %s, not readable from %s", m.Host, r.hostname())
		return a // Disk stays nil: unknown, never taken for lost
	}
	// One reading of the inspection, shared with doctor: a data dir etcd runs on (without quorum)
	// counts as intact.
	rep := datadir.Inspect(m.DataDir)
	a.Disk = cluster.DiskOf(rep)
	if rep.DB.OK {
		if v, found, err := ReadDataDirVersions(ctx, m.DataDir); err == nil && found {
			a.Disk.Version = v.Version()
		}
	}
	return a
}

// checkMembership refuses a cluster description that disagrees with what the data dirs say:
// data dirs of different clusters cannot be recovered as one.
func (r *Recoverer) checkMembership(as []cluster.Assessment) error {
	var clusterID uint64
	var first string
	for _, a := range as {
		if a.Disk == nil || a.Disk.ClusterID == 0 {
			continue
		}
		if clusterID == 0 {
			clusterID, first = a.Disk.ClusterID, a.Name
			continue
		}
		if a.Disk.ClusterID != clusterID {
			return fmt.Errorf("%w: the data dir of member %s belongs to cluster %016x, that of %s to cluster %016x: check the data-dir of each member in the cluster description",
				ErrPlanMismatch, first, clusterID, a.Name, a.Disk.ClusterID)
		}
	}
	return nil
}

// Plan assesses the cluster and decides what to do.
func (r *Recoverer) Plan(ctx context.Context) (Plan, error) {
	as, backup, history, err := r.Assess(ctx)
	if err != nil {
		return Plan{}, err
	}
	p, err := Decide(DecideInputs{Cluster: r.Cluster, Assessments: as, Backup: backup, History: history, NoBump: r.NoBump,
		EtcdVersion: r.EtcdVersion, AllowVersionSkew: r.AllowVersionSkew, Now: r.now()})
	if err != nil {
		return p, err
	}
	if p.Source != nil && p.Source.Kind == SourceMember {
		sum, err := fileSHA256(ctx, p.Source.DBPath)
		if err != nil {
			return p, fmt.Errorf("hash the source database %s: %w", p.Source.DBPath, err)
		}
		p.Source.SHA256 = sum
	}
	return p, nil
}

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

func (r *Recoverer) applyRestore(ctx context.Context, p Plan, selected func(string) bool, st *stepper, rep *Report) error {
	if p.Source == nil {
		return errors.New("a restore plan without a source")
	}
	// The checked source is kept (in the state dir) until the recovery is verified, so that a
	// resumed run does not need the source again: a member source's data dir is quarantined by
	// then.
	src, cleanup, err := r.sourcePath(p)
	if err != nil {
		return err
	}
	defer cleanup()
	const skipHash = true // the source is checked completely once, when fetched
	if err := st.do("fetch source", "", func() (string, error) {
		if note, ok, err := r.keptSource(ctx, p, src); ok || err != nil {
			return note, err
		}
		var note string
		var err error
		if p.Source.Kind == SourceMember {
			note, err = r.copyMemberDB(ctx, p, src)
		} else {
			note, err = r.fetchBackup(ctx, p, src)
		}
		if err == nil {
			failpoint.Here("recover/source-copied")
			err = atomicfile.Write(src+".verified", []byte(p.ID+"\n"), 0o600)
		}
		return note, err
	}); err != nil {
		return err
	}

	var members []cluster.Member
	for _, m := range p.Cluster.Members {
		if selected(m.Name) {
			members = append(members, m)
		}
	}
	// Members already restored for this plan (an earlier, interrupted run) are not stopped.
	if err := r.parallel(members, func(m cluster.Member) error {
		if done, _ := readMarker(m.DataDir); done == p.ID {
			return nil
		}
		return st.do("stop", m.Name, func() (string, error) { return r.stopAndWait(ctx, m) })
	}); err != nil {
		return err
	}
	var mu sync.Mutex
	if err := r.parallel(members, func(m cluster.Member) error {
		return st.do("restore", m.Name, func() (string, error) {
			if done, _ := readMarker(m.DataDir); done == p.ID {
				return "already restored for this plan", nil
			}
			cleanStaging(m.DataDir)
			res, err := RestoreDataDir(DataDirOptions{
				Snapshot: src, Name: m.Name, InitialCluster: p.Cluster.InitialCluster(), InitialClusterToken: p.Token,
				PeerURLs: []string{m.PeerURL}, DataDir: m.DataDir, Bump: p.Bump, Quarantine: true, SkipHashCheck: skipHash, Now: r.now(),
				Marker: func(staging string) error { return writeMarker(m.DataDir, p.ID, staging) },
			})
			if res.Quarantined != "" {
				mu.Lock()
				rep.Quarantined[m.Name] = res.Quarantined
				mu.Unlock()
			}
			if err != nil {
				return "", err
			}
			note := ""
			if res.Quarantined != "" {
				note = "old data dir moved to " + res.Quarantined
			}
			return note, nil
		})
	}); err != nil {
		return err
	}
	if err := r.parallel(members, func(m cluster.Member) error {
		return st.do("start", m.Name, func() (string, error) {
			return "", r.controller(m).Start(ctx, cluster.StartEnv{State: "new", InitialCluster: p.Cluster.InitialCluster(), Token: p.Token})
		})
	}); err != nil {
		return err
	}
	if len(members) < len(p.Cluster.Members) {
		return nil // the other members are applied elsewhere; quorum comes when they are
	}
	return st.do("wait for quorum", "", func() (string, error) { return r.waitQuorum(ctx, p.Cluster, 2*time.Minute) })
}

// keptSource looks at a source copy an earlier run of the plan left in the state dir. A copy
// with its .verified marker and the plan's SHA-256 is used as it is. A copy without the marker (a
// crash between the copy and the marker, or a marker removed by hand) is checked again: with the
// plan's SHA-256 and a database that passes its checks it is marked and used; otherwise it is
// etcdguard's own unverified scratch, removed so the source is fetched again. Neither case blames
// the backup's stored copies, which were never read.
func (r *Recoverer) keptSource(ctx context.Context, p Plan, src string) (string, bool, error) {
	if _, err := os.Lstat(src); err != nil {
		return "", false, nil
	}
	sum, err := fileSHA256(ctx, src)
	if err == nil && sum == p.Source.SHA256 {
		if _, err := os.Stat(src + ".verified"); err == nil {
			return "checked source kept from an earlier run of this plan", true, nil
		}
		if _, err := snapshot.ReadStatus(ctx, src); err == nil {
			if err := atomicfile.Write(src+".verified", []byte(p.ID+"\n"), 0o600); err != nil {
				return "", false, err
			}
			return "source kept from an earlier run of this plan, checked again (its SHA-256 is the plan's and its database passes bbolt's check)", true, nil
		}
	}
	if err := ctx.Err(); err != nil {
		return "", false, err
	}
	r.log().Warn("removing an unverified source copy left by an earlier run; fetching the source again", "path", src)
	if err := os.Remove(src); err != nil {
		return "", false, fmt.Errorf("remove the unverified source copy %s left by an earlier run: %w", src, err)
	}
	_ = os.Remove(src + ".verified")
	return "", false, nil
}

// sourcePath returns where the checked source snapshot is kept, and what removes it when the
// recovery no longer needs it.
func (r *Recoverer) sourcePath(p Plan) (string, func(), error) {
	if r.StateDir != "" {
		if err := os.MkdirAll(r.StateDir, 0o700); err != nil {
			return "", nil, err
		}
		return filepath.Join(r.StateDir, "recovery-"+p.ID+"-source.db"), func() {}, nil
	}
	parent := r.WorkDir
	if parent == "" {
		parent = filepath.Dir(p.Cluster.Members[0].DataDir)
	}
	dir, err := os.MkdirTemp(parent, ".etcdguard-recover-")
	if err != nil {
		return "", nil, fmt.Errorf("create a scratch folder in %s (set --work-dir): %w", parent, err)
	}
	return filepath.Join(dir, "snapshot.db"), func() { os.RemoveAll(dir) }, nil
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

// copyMemberDB copies the source member's database, read-only, and checks it is the one the plan
// was made on and that it passes bbolt's check.
func (r *Recoverer) copyMemberDB(ctx context.Context, p Plan, dst string) (string, error) {
	in, err := snapshot.OpenFile(p.Source.DBPath) // a plan file may name a device or a FIFO
	if err != nil {
		return "", fmt.Errorf("open the source database: %w", err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	if _, err := io.CopyBuffer(io.MultiWriter(out, h), in, make([]byte, 1<<20)); err != nil {
		out.Close()
		return "", fmt.Errorf("copy the source database: %w", err)
	}
	if err := out.Close(); err != nil {
		return "", err
	}
	if sum := hex.EncodeToString(h.Sum(nil)); p.Source.SHA256 != "" && sum != p.Source.SHA256 {
		return "", fmt.Errorf("%w: the database of member %s now has SHA-256 %s, the plan was made on %s: make a new plan", ErrPlanMismatch, p.Source.Member, sum, p.Source.SHA256)
	}
	status, err := snapshot.ReadStatus(ctx, dst)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("member %s's database: revision %d, %d keys", p.Source.Member, status.Revision, status.TotalKey), nil
}

// fetchBackup fetches and checks the plan's backup, and refuses one whose SHA-256 differs.
func (r *Recoverer) fetchBackup(ctx context.Context, p Plan, dst string) (string, error) {
	cat, err := snapshot.Load(ctx, r.Targets)
	if cat != nil {
		defer cat.Close()
	}
	if err != nil {
		return "", err
	}
	e, err := cat.Find(p.Source.BackupID)
	if err != nil {
		return "", err
	}
	if e.Manifest.SHA256 != p.Source.SHA256 {
		return "", fmt.Errorf("%w: backup %s has SHA-256 %s, the plan says %s", ErrPlanMismatch, e.Manifest.ID, e.Manifest.SHA256, p.Source.SHA256)
	}
	cr, _, err := snapshot.FetchBest(ctx, r.log(), e, r.Identities, dst)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("backup %s from target %s, verified", e.Manifest.ID, cr.Target), nil
}

func (r *Recoverer) parallel(ms []cluster.Member, fn func(cluster.Member) error) error {
	errs := make([]error, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Go(func() { errs[i] = fn(m) })
	}
	wg.Wait()
	return errors.Join(errs...)
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

func fileSHA256(ctx context.Context, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		n, err := f.Read(buf)
		h.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func memberNames(c cluster.Cluster) string {
	var names []string
	for _, m := range c.Members {
		names = append(names, m.Name)
	}
	return strings.Join(names, ", ")
}

func containsString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
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
