package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

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
	running  bool // a chain is being streamed
	base     string
	progress deltalog.Progress
	lastErr  error
	errAt    time.Time
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
		remote, err := repository.Open(ctx, t)
		if err != nil {
			lg.Error("the delta log is not shipped to a target that does not open", "target", t.Name, "error", err)
			continue
		}
		defer remote.Close()
		sh := deltalog.NewShipper(local, remote, lg.With("component", "delta-shipper"), a.opts.Now)
		shippers = append(shippers, sh)
		wg.Go(func() { _ = sh.Run(ctx) })
	}
	opts := deltalog.StreamOptions{
		Client: cli, Local: local, Codec: a.current().Save.Codec,
		SyncInterval: s.SyncInterval, SealInterval: s.SealInterval,
		Logger: lg, Now: a.opts.Now,
		OnDurable: func(p deltalog.Progress) {
			a.mu.Lock()
			a.delta.progress = p
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
	for ctx.Err() == nil {
		if base == nil {
			base, err = a.deltaBase(ctx, local, cli)
			if err != nil {
				a.deltaFailed(err)
				lg.Warn("could not find the full snapshot to stream the delta log from", "error", err)
			}
		}
		if base == nil {
			if err == nil {
				a.snapshotNow("the delta log needs a full snapshot of the cluster in target " + s.Local.Name)
			}
			base, err = a.waitBase(ctx, min(max(2*backoff, 5*time.Second), time.Minute))
			backoff = max(backoff, 5*time.Second)
			continue
		}
		a.mu.Lock()
		a.delta.running, a.delta.base = true, base.ID
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
		case errors.Is(err, deltalog.ErrGap), errors.Is(err, deltalog.ErrEnded):
			a.deltaFailed(err)
			base = nil
			a.snapshotNow("the delta chain ended: " + err.Error())
			base, _ = a.waitBase(ctx, time.Minute)
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

// deltaBase returns the newest full backup on the local target of the cluster the client
// reaches, or nil when there is none.
func (a *Agent) deltaBase(ctx context.Context, local *repository.Repository, cli *clientv3.Client) (*repository.Manifest, error) {
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := cli.Get(tctx, "health", clientv3.WithCountOnly())
	if err != nil {
		return nil, fmt.Errorf("ask the cluster for its id: %w", err)
	}
	cluster := fmt.Sprintf("%016x", resp.Header.ClusterId)
	ms, _, err := local.Manifests(ctx)
	if err != nil {
		return nil, err
	}
	for i := len(ms) - 1; i >= 0; i-- {
		m := ms[i]
		if m.ClusterID == cluster && m.Status.Revision > 0 {
			return &m, nil
		}
	}
	return nil, nil
}

// waitBase waits for the scheduler to store a new full backup, at most limit.
func (a *Agent) waitBase(ctx context.Context, limit time.Duration) (*repository.Manifest, error) {
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return nil, nil
	case m := <-a.newBases:
		return &m, nil
	case <-t.C:
		return nil, nil
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
