package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/etcdguard/etcdguard/internal/deltalog"
	"github.com/etcdguard/etcdguard/internal/repository"
)

// DeltaSettings configure the agent's delta log.
type DeltaSettings struct {
	// Enabled turns it on.
	Enabled bool
	// Local is the target that keeps the open segment (a local disk); Remotes are the targets
	// sealed segments are shipped to.
	Local   repository.Target
	Remotes []repository.Target
	// SyncInterval and SealInterval: zero means deltalog's defaults.
	SyncInterval, SealInterval time.Duration
}

// deltaState is what the delta log component reports, for readiness.
type deltaState struct {
	// standby: another agent is the delta writer (leader names it, when known); a writer has
	// leader set to itself.
	standby  bool
	leader   string
	running  bool // a chain is being streamed
	base     string
	baseRev  int64 // the base's revision: durable before anything is written to its chain
	progress deltalog.Progress
	lastErr  error
	errAt    time.Time
	// electedAt is when this agent last became the writer; caughtUpAt when its delta log last
	// held every revision etcd had reported (the recovery point is measured from it).
	electedAt, caughtUpAt time.Time
}

// durable is the newest revision the current chain holds durably: its newest durable revision,
// or the base's own before anything is written to it (0 while no chain runs).
func (d deltaState) durable() int64 {
	switch {
	case !d.running:
		return 0
	case d.progress.Base == d.base && d.progress.Revision > 0:
		return d.progress.Revision
	}
	return d.baseRev
}

// deltaLog runs the delta log until ctx ends: it streams the chain of the newest full backup on
// the local target, moves to the chain of each newer one the scheduler stores, asks for a full
// snapshot at once when there is none or when a chain ends by a gap, and ships sealed segments to
// the other targets. The delta settings are the ones the agent started with; a reload that
// changes them takes effect at the next start.
func (a *Agent) deltaLog(ctx context.Context) error {
	s := a.current().Delta
	if !s.Enabled {
		<-ctx.Done()
		return nil
	}
	lg := a.lg.With("component", "delta-log")
	local, err := repository.Open(ctx, s.Local)
	if err != nil {
		return fmt.Errorf("agent: delta log: open target %s: %w", s.Local.Name, err)
	}
	defer local.Close()
	cli, err := a.current().Save.Etcd.ClusterClient(ctx)
	if err != nil {
		return fmt.Errorf("agent: delta log: %w", err)
	}
	defer cli.Close()

	var wg sync.WaitGroup
	defer wg.Wait()
	var shippers []*deltalog.Shipper
	for _, t := range s.Remotes {
		sh := deltalog.NewShipper(local, t, lg.With("component", "delta-shipper"), a.opts.Now)
		defer sh.Close()
		shippers = append(shippers, sh)
		wg.Go(func() { _ = sh.Run(ctx) })
	}
	a.mu.Lock()
	a.shippers = shippers
	a.mu.Unlock()
	writer := a.writerName()
	times := deltalog.NewReceiptTimes(deltalog.DefaultReceiptTimes)
	for ctx.Err() == nil {
		term, lctx, resign, err := a.elect(ctx, cli, writer)
		if err != nil {
			if ctx.Err() == nil {
				a.deltaFailed(err)
				lg.Warn("could not take part in the election of the delta writer; trying again", "error", err)
				sleepCtx(ctx, 5*time.Second)
			}
			continue
		}
		lg.Info("elected the delta writer of the cluster", "term", term, "writer", writer)
		err = a.streamChains(lctx, lg, s, local, shippers, cli, term, writer, times)
		resign()
		if err != nil {
			return err
		}
		if ctx.Err() == nil {
			lg.Warn("lost the delta writer's election lease; standing by", "term", term)
		}
	}
	return nil
}

// streamChains streams one chain after another while this agent is the delta writer (until ctx
// ends: the agent stops, or it lost the election).
func (a *Agent) streamChains(ctx context.Context, lg *slog.Logger, s DeltaSettings, local *repository.Repository, shippers []*deltalog.Shipper, cli *clientv3.Client, term int64, writer string, times *deltalog.ReceiptTimes) error {
	opts := deltalog.StreamOptions{
		Client: cli, Local: local, Codec: a.current().Save.Codec, Term: term, Writer: writer, Times: times,
		SyncInterval: s.SyncInterval, SealInterval: s.SealInterval,
		Logger: lg, Now: a.opts.Now,
		OnDurable: func(p deltalog.Progress) {
			a.mu.Lock()
			a.delta.progress = p
			if a.delta.durable() >= p.Head && p.WatchErr == nil {
				a.delta.caughtUpAt = a.opts.Now()
			}
			a.mu.Unlock()
		},
		OnSealed: func(m repository.SegmentManifest) {
			for _, sh := range shippers {
				sh.Sealed(m)
			}
		},
	}
	backoff := time.Duration(0)
	var base *repository.Manifest
	var err error
	for ctx.Err() == nil {
		// The remotes that open now serve the base's choice and the writer's resume (a
		// takeover continues the chain from the one that holds the most of it); one that does
		// not is shipped to once it answers, and counted here at the next chain.
		remotes := openRemotes(ctx, lg, shippers)
		opts.Remotes = remotes
		if base == nil {
			base, err = a.deltaBase(ctx, append([]*repository.Repository{local}, remotes...), cli)
			if err != nil {
				a.deltaFailed(err)
				lg.Warn("could not find the full snapshot to stream the delta log from", "error", err)
			}
		}
		if base == nil {
			if err == nil {
				a.snapshotNow("the delta log needs a full snapshot of the cluster in target " + s.Local.Name)
			}
			base, err = a.waitBase(ctx, min(max(2*backoff, 5*time.Second), time.Minute)), nil
			backoff = max(backoff, 5*time.Second)
			continue
		}
		a.mu.Lock()
		a.delta.running, a.delta.base, a.delta.baseRev = true, base.ID, base.Revision
		a.mu.Unlock()
		next, err := deltalog.Stream(ctx, opts, *base, a.newBases)
		a.mu.Lock()
		a.delta.running = false
		a.mu.Unlock()
		for _, sh := range shippers {
			sh.Notify(base.ID) // its end record, if it got one
		}
		switch {
		case next != nil:
			base, backoff = next, 0
		case err == nil:
			return nil // ctx ended
		case errors.Is(err, deltalog.ErrGap), errors.Is(err, deltalog.ErrEnded), errors.Is(err, deltalog.ErrClusterChanged):
			a.deltaFailed(err)
			a.snapshotNow("the delta chain ended: " + err.Error())
			base = a.waitBase(ctx, time.Minute)
		default:
			a.deltaFailed(err)
			backoff = min(max(2*backoff, time.Second), time.Minute)
			lg.Error("the delta log stopped; it starts again", "error", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			base = nil // read the targets again: a newer base may be there
		}
	}
	return nil
}

// openRemotes returns the shippers' targets that open now. A target not opened yet is given a
// few seconds: the chain's start waits for it (its revisions wait in etcd meanwhile).
func openRemotes(ctx context.Context, lg *slog.Logger, shippers []*deltalog.Shipper) []*repository.Repository {
	var remotes []*repository.Repository
	for _, sh := range shippers {
		octx, cancel := context.WithTimeout(ctx, remoteOpenTimeout)
		r, err := sh.To(octx)
		cancel()
		if err != nil {
			lg.Warn("a target does not open; the delta log waits on the local target and is shipped to it once it answers", "target", sh.Target.Name, "error", err)
			continue
		}
		remotes = append(remotes, r)
	}
	return remotes
}

// remoteOpenTimeout bounds how long a chain's start waits for a remote target that is not open.
const remoteOpenTimeout = 3 * time.Second

// deltaBase returns the newest full backup, in the local target or the remotes, of the cluster
// the client reaches, or nil when there is none. (A writer that took over from another one on
// another host finds the base on the remotes.)
func (a *Agent) deltaBase(ctx context.Context, repos []*repository.Repository, cli *clientv3.Client) (*repository.Manifest, error) {
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := cli.Get(tctx, "health", clientv3.WithCountOnly())
	if err != nil {
		return nil, fmt.Errorf("ask the cluster for its id: %w", err)
	}
	cluster := fmt.Sprintf("%016x", resp.Header.ClusterId)
	var best *repository.Manifest
	var firstErr error
	for _, r := range repos {
		ms, _, err := r.Manifests(ctx)
		if err != nil {
			firstErr = cmp.Or(firstErr, err)
			continue
		}
		for i := len(ms) - 1; i >= 0; i-- {
			m := ms[i]
			if m.ClusterID == cluster && m.Status.Revision > 0 {
				if best == nil || m.Started.After(best.Started) {
					best = &m
				}
				break
			}
		}
	}
	if best == nil {
		return nil, firstErr
	}
	return best, nil
}

// waitBase waits for the scheduler to store a new full backup, at most limit.
func (a *Agent) waitBase(ctx context.Context, limit time.Duration) *repository.Manifest {
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return nil
	case m := <-a.newBases:
		return &m
	case <-t.C:
		return nil
	}
}

// deltaFailed records the delta log's last failure, for readiness.
func (a *Agent) deltaFailed(err error) {
	a.mu.Lock()
	a.delta.lastErr, a.delta.errAt = err, a.opts.Now()
	a.mu.Unlock()
}

// snapshotNow asks the scheduler for a full snapshot at once.
func (a *Agent) snapshotNow(why string) {
	select {
	case a.snapNow <- why:
	default: // one is asked for already
	}
}

// offerBase hands a new full backup stored on the delta log's target to the delta log; an
// older one not taken yet is replaced.
func (a *Agent) offerBase(m repository.Manifest) {
	s := a.current().Delta
	if !s.Enabled || !storedIn(m, s.Local.Name) {
		return
	}
	for {
		select {
		case a.newBases <- m:
			return
		default:
		}
		select {
		case <-a.newBases:
		default:
		}
	}
}

func storedIn(m repository.Manifest, target string) bool {
	for _, t := range m.Targets {
		if t.Name == target && t.State == repository.StateStored {
			return true
		}
	}
	return false
}

// electionPrefix is where the agents of a cluster elect their delta writer, in the cluster's
// own keyspace (a lease-backed election: etcd's concurrency package). Kubernetes keeps its data
// under /registry/ and never reads it.
const electionPrefix = "/etcdguard/delta-writer"

// electionTTL is the election lease's TTL: how long a writer that vanished (its host lost power)
// holds the role before another agent takes over.
const electionTTL = 5

// elect campaigns until this agent is the delta writer, and returns its term (the revision of
// its election key), a context that ends when the role is lost (the lease expired: this agent
// could not reach etcd in time) and the function that gives the role up.
func (a *Agent) elect(ctx context.Context, cli *clientv3.Client, writer string) (int64, context.Context, func(), error) {
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(electionTTL), concurrency.WithContext(ctx))
	if err != nil {
		return 0, nil, nil, fmt.Errorf("open an election session: %w", err)
	}
	el := concurrency.NewElection(sess, electionPrefix)
	a.setStandby(true, "")
	go a.watchLeader(ctx, el, sess)
	if err := el.Campaign(ctx, writer); err != nil {
		sess.Close()
		return 0, nil, nil, fmt.Errorf("campaign for the delta writer: %w", err)
	}
	a.setStandby(false, writer)
	lctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-sess.Done():
		case <-lctx.Done():
		}
		cancel()
	}()
	return el.Rev(), lctx, func() {
		cancel()
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer rcancel()
		_ = el.Resign(rctx)
		sess.Close()
	}, nil
}

// watchLeader keeps the name of the current delta writer for readiness while this agent stands by.
func (a *Agent) watchLeader(ctx context.Context, el *concurrency.Election, sess *concurrency.Session) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		<-sess.Done()
		cancel()
	}()
	for resp := range el.Observe(wctx) {
		if len(resp.Kvs) > 0 {
			a.mu.Lock()
			if a.delta.standby {
				a.delta.leader = string(resp.Kvs[0].Value)
			}
			a.mu.Unlock()
		}
	}
}

func (a *Agent) setStandby(standby bool, leader string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.delta.standby, a.delta.leader = standby, leader
	if !standby {
		a.delta.electedAt, a.delta.caughtUpAt = a.opts.Now(), time.Time{}
	}
}

// isWriter reports whether this agent is the delta writer (always, with the delta log off: then
// every agent takes its scheduled snapshots).
func (a *Agent) isWriter() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return !a.settings.Delta.Enabled || (!a.delta.standby && a.delta.leader != "")
}

// writerName names this agent in the election and in the segments it writes: host and process.
func (a *Agent) writerName() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s/%d", host, os.Getpid())
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
