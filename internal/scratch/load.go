package scratch

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/time/rate"
)

// Load is a Kubernetes-shaped write load: puts of objects (new ones and updates), deletes,
// multi-key txns, and events on leases with a TTL that are renewed by nobody (a lease is
// revoked now and then, deleting its keys). Each worker owns its keys and writes them one op at
// a time, so that every key's history is a sequence, and Load keeps, per key, what etcd
// acknowledged and when: Check then says which acknowledged writes a cluster lost.
type Load struct {
	opts LoadOptions
	ctx  context.Context // ends at Halt
	halt context.CancelFunc
	lim  *rate.Limiter // nil: unlimited
	done chan struct{}
	mu   sync.Mutex
	keys map[string]*keyLog
	acks []Ack // in the order the acknowledgements were recorded
	// acked counts the acknowledged operations, errors the failed ones.
	errors int64
}

// LoadOptions shape a Load.
type LoadOptions struct {
	// Workers is the number of concurrent writers (each one op at a time); 0 means 16.
	Workers int
	// Namespace is a prefix of every key: /registry/<resource>/<Namespace>-<worker>/...
	Namespace string
	// ValueSize pads values to about that many bytes; 0 means 256.
	ValueSize int
	// LeaseTTL is the TTL of the leases events are attached to (seconds); 0 means 600.
	LeaseTTL int64
	// Seed makes the mix of operations repeatable.
	Seed uint64
	// Rate limits the load to about that many operations per second, across all workers;
	// 0 means unlimited (each worker sends its next op as soon as the last one returned).
	Rate float64
}

// keyLog is one key's acknowledged history, newest last; sequence numbers grow per key.
type keyLog struct {
	ops []loggedOp
	// issued is the highest sequence number sent, acknowledged or not; deletes the sequence
	// numbers of the deletes sent.
	issued  int64
	deletes []int64
}

type loggedOp struct {
	seq     int64
	deleted bool
	acked   time.Time
}

// StartLoad starts the load through cli until Halt.
func StartLoad(cli *clientv3.Client, opts LoadOptions) *Load {
	if opts.Workers <= 0 {
		opts.Workers = 16
	}
	if opts.ValueSize <= 0 {
		opts.ValueSize = 256
	}
	if opts.LeaseTTL <= 0 {
		opts.LeaseTTL = 600
	}
	ctx, halt := context.WithCancel(context.Background())
	l := &Load{opts: opts, ctx: ctx, halt: halt, done: make(chan struct{}), keys: map[string]*keyLog{}}
	if opts.Rate > 0 {
		// A burst of one: the ops are spread evenly rather than sent in bunches.
		l.lim = rate.NewLimiter(rate.Limit(opts.Rate), 1)
	}
	var wg sync.WaitGroup
	for w := range opts.Workers {
		wg.Go(func() { l.work(cli, w) })
	}
	go func() { wg.Wait(); close(l.done) }()
	return l
}

// Halt stops the load and waits for its workers (an op in flight ends with its timeout).
func (l *Load) Halt() {
	l.halt()
	<-l.done
}

// Acked returns the number of acknowledged operations and of failed ones so far.
func (l *Load) Acked() (acked, failed int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return int64(len(l.acks)), l.errors
}

func (l *Load) work(cli *clientv3.Client, w int) {
	rng := rand.New(rand.NewPCG(l.opts.Seed, uint64(w)))
	ns := fmt.Sprintf("%s-%d", l.opts.Namespace, w)
	pad := strings.Repeat("x", l.opts.ValueSize)
	seq := map[string]int64{}
	var lease clientv3.LeaseID
	var leaseKeys []string
	live := []string{}
	next := func(k string) int64 { seq[k]++; return seq[k] }
	for i := 0; ; i++ {
		if l.ctx.Err() != nil {
			return
		}
		if l.lim != nil && l.lim.Wait(l.ctx) != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		var keys []string
		var seqs []int64
		deleted := false
		var err error
		// rev is the revision of the write (its response's header) when it made one.
		var rev int64
		sent := time.Now()
		switch r := rng.IntN(100); {
		case r < 55 || len(live) < 10: // create or update an object
			k := fmt.Sprintf("/registry/pods/%s/pod-%05d", ns, rng.IntN(2000))
			s := next(k)
			l.issue(k, s, false)
			var resp *clientv3.PutResponse
			if resp, err = cli.Put(ctx, k, value(s, pad)); err == nil {
				rev = resp.Header.Revision
			}
			keys, seqs = []string{k}, []int64{s}
			live = append(live, k)
		case r < 70: // delete one
			j := rng.IntN(len(live))
			k := live[j]
			live = append(live[:j], live[j+1:]...)
			s := next(k)
			l.issue(k, s, true)
			var resp *clientv3.DeleteResponse
			if resp, err = cli.Delete(ctx, k); err == nil && resp.Deleted > 0 {
				rev = resp.Header.Revision // deleting nothing makes no revision
			}
			keys, seqs, deleted = []string{k}, []int64{s}, true
		case r < 85: // a txn: a deployment and its replica set change together
			d := rng.IntN(200)
			k1 := fmt.Sprintf("/registry/deployments/%s/d-%03d", ns, d)
			k2 := fmt.Sprintf("/registry/replicasets/%s/d-%03d-rs", ns, d)
			s1, s2 := next(k1), next(k2)
			l.issue(k1, s1, false)
			l.issue(k2, s2, false)
			var resp *clientv3.TxnResponse
			if resp, err = cli.Txn(ctx).Then(clientv3.OpPut(k1, value(s1, pad)), clientv3.OpPut(k2, value(s2, pad))).Commit(); err == nil {
				rev = resp.Header.Revision
			}
			keys, seqs = []string{k1, k2}, []int64{s1, s2}
		case r < 98 || lease == 0: // an event on a lease
			if lease == 0 {
				g, gerr := cli.Grant(ctx, l.opts.LeaseTTL)
				if gerr != nil {
					err = gerr
					break
				}
				lease = g.ID
			}
			k := fmt.Sprintf("/registry/events/%s/ev-%06d", ns, i)
			s := next(k)
			l.issue(k, s, false)
			var resp *clientv3.PutResponse
			if resp, err = cli.Put(ctx, k, value(s, pad), clientv3.WithLease(lease)); err == nil {
				rev = resp.Header.Revision
			}
			keys, seqs = []string{k}, []int64{s}
			leaseKeys = append(leaseKeys, k)
		default: // the lease revoked: its events deleted in one revision
			ks := leaseKeys
			ss := make([]int64, len(ks))
			for j, k := range ks {
				ss[j] = next(k)
				l.issue(k, ss[j], true)
			}
			var resp *clientv3.LeaseRevokeResponse
			if resp, err = cli.Revoke(ctx, lease); err == nil && len(ks) > 0 {
				rev = resp.Header.Revision // the deletes of its keys; none: no revision
			}
			keys, seqs, deleted = ks, ss, true
			lease, leaseKeys = 0, nil
		}
		cancel()
		l.record(keys, seqs, deleted, rev, sent, err)
		if err != nil {
			select {
			case <-l.ctx.Done():
				return
			case <-time.After(100 * time.Millisecond): // the cluster is down: do not spin
			}
		}
	}
}

func value(seq int64, pad string) string { return fmt.Sprintf(`{"seq":%d,"pad":"%s"}`, seq, pad) }

// SeqOf returns the sequence number a Load's value carries.
func SeqOf(v []byte) (int64, bool) {
	s, ok := strings.CutPrefix(string(v), `{"seq":`)
	if !ok {
		return 0, false
	}
	n, _, ok := strings.Cut(s, ",")
	if !ok {
		return 0, false
	}
	seq, err := strconv.ParseInt(n, 10, 64)
	return seq, err == nil
}

func (l *Load) issue(k string, seq int64, deleted bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	kl := l.keys[k]
	if kl == nil {
		kl = &keyLog{}
		l.keys[k] = kl
	}
	kl.issued = max(kl.issued, seq)
	if deleted {
		kl.deletes = append(kl.deletes, seq)
	}
}

func (l *Load) record(keys []string, seqs []int64, deleted bool, rev int64, sent time.Time, err error) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.errors++
		return
	}
	l.acks = append(l.acks, Ack{Revision: rev, At: now, Latency: now.Sub(sent)})
	for i, k := range keys {
		kl := l.keys[k]
		kl.ops = append(kl.ops, loggedOp{seq: seqs[i], deleted: deleted, acked: now})
	}
}

// Lost is what Check found: acknowledged writes a cluster does not hold.
type Lost struct {
	// Keys whose newest write acknowledged before the cutoff is not reflected (its value, or a
	// later one; its delete, or a later write), with what the cluster holds.
	Keys []string
	// Checked counts the keys with a write acknowledged before the cutoff.
	Checked int
	// OldestAckAt and NewestAckAt are when the oldest and the newest write the cluster lost
	// were acknowledged (zero: none): the cutoff minus OldestAckAt is how much time was lost.
	OldestAckAt, NewestAckAt time.Time
}

// Check compares what a cluster holds (state: key to value, for every key of the load's
// namespace) with the writes acknowledged before cutoff: for each key, the newest such write
// must be there, or a write sent after it (the in-flight one, or a later acknowledged one).
func (l *Load) Check(state map[string][]byte, cutoff time.Time) Lost {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out Lost
	for k, kl := range l.keys {
		var last *loggedOp
		for i := range kl.ops {
			if kl.ops[i].acked.Before(cutoff) {
				last = &kl.ops[i]
			}
		}
		if last == nil {
			continue
		}
		out.Checked++
		v, present := state[k]
		ok := false
		if present {
			seq, parsed := SeqOf(v)
			ok = parsed && seq >= last.seq && seq <= kl.issued
		} else {
			// Absent: the last write before the cutoff was a delete, or a delete sent after it.
			ok = last.deleted
			for _, d := range kl.deletes {
				ok = ok || d > last.seq
			}
		}
		if !ok {
			out.Keys = append(out.Keys, k)
			// When the write the cluster lacks was acknowledged: the first after what it holds.
			if last.acked.After(out.NewestAckAt) {
				out.NewestAckAt = last.acked
			}
			if out.OldestAckAt.IsZero() || last.acked.Before(out.OldestAckAt) {
				out.OldestAckAt = last.acked
			}
		}
	}
	sort.Strings(out.Keys)
	return out
}

// LastAck returns when the newest write was acknowledged.
func (l *Load) LastAck() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	var t time.Time
	for _, kl := range l.keys {
		if n := len(kl.ops); n > 0 && kl.ops[n-1].acked.After(t) {
			t = kl.ops[n-1].acked
		}
	}
	return t
}
