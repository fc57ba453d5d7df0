package doctor

import (
	"context"
	"sync"
	"time"

	"github.com/etcdguard/etcdguard/internal/etcdx"
	"github.com/etcdguard/etcdguard/internal/repository"
)

// DefaultRPO is the recovery point objective backups are checked against when none is given:
// the every-30-minutes schedule operators adopt after losing hours of changes.
const DefaultRPO = 30 * time.Minute

// Options says what to check.
type Options struct {
	// Etcd is how to reach the members; with no endpoints, the online checks are skipped.
	Etcd etcdx.Config
	// DataDirs are checked offline (strictly read-only).
	DataDirs []string
	// Targets hold the backups; RPO is how old the newest may be.
	Targets []repository.Target
	RPO     time.Duration
	// PKIDirs are folders whose certificates are checked against the clock.
	PKIDirs []string
	// Timeout bounds the whole run; the checks run in parallel within it.
	Timeout time.Duration
	// Now is the clock; tests inject it.
	Now func() time.Time
}

// Run runs every check that applies, in parallel, and returns the findings worst first.
func Run(ctx context.Context, o Options) []Finding {
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	if o.RPO == 0 {
		o.RPO = DefaultRPO
	}
	if o.Timeout == 0 {
		o.Timeout = 20 * time.Second
	}
	// The offline inspection of data dirs is bounded by the caller only, as before it took a
	// context: Timeout is for talking to members and targets, and a large data dir takes
	// longer to read.
	offline := ctx
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	var mu sync.Mutex
	var all []Finding
	add := func(fs []Finding) {
		mu.Lock()
		all = append(all, fs...)
		mu.Unlock()
	}
	var wg sync.WaitGroup
	if len(o.Etcd.Endpoints) > 0 {
		wg.Go(func() {
			fs, statuses := checkMembers(ctx, o.Etcd)
			add(fs)
			var inner sync.WaitGroup
			inner.Go(func() { add(checkHashKV(ctx, o.Etcd, statuses)) })
			inner.Go(func() { add(checkClocks(ctx, o.Etcd, statuses, o.Targets, now)) })
			inner.Go(func() { add(checkDisks(ctx, o.Etcd, statuses)) })
			inner.Wait()
		})
	}
	if len(o.DataDirs) > 0 {
		wg.Go(func() { add(checkDataDirs(offline, o.DataDirs)) })
	}
	if len(o.PKIDirs) > 0 {
		wg.Go(func() { add(checkCerts(o.PKIDirs, now())) })
	}
	if o.Targets != nil {
		wg.Go(func() { add(checkBackups(ctx, o.Targets, o.RPO, now())) })
	}
	wg.Wait()
	Sort(all)
	return all
}
