package deltalog

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sort"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/etcdguard/etcdguard/internal/backend"
	"github.com/etcdguard/etcdguard/internal/delta"
	"github.com/etcdguard/etcdguard/internal/repository"
)

// Defaults of the writer's cadences. docs/benchmarks.md, "Delta log", has the measurements the
// sync interval was chosen from.
const (
	// DefaultSyncInterval is how often the open segment is made durable while revisions arrive:
	// the recovery point of a power cut that takes the agent's host down with the cluster.
	DefaultSyncInterval = 50 * time.Millisecond
	// DefaultSealInterval and DefaultSealSize say when the open segment is sealed and stored
	// (and then shipped): the recovery point of a disaster that takes the local target too.
	DefaultSealInterval = 10 * time.Second
	DefaultSealSize     = 16 << 20
	// DefaultLeasePoll is how often the writer asks etcd which leases are still granted, to
	// record the revocations and expiries the watch does not show.
	DefaultLeasePoll = 5 * time.Second
)

// ErrGap is returned (wrapped) by Stream when it ended the chain because events were lost: the
// watch was compacted past, or the cluster's revisions jumped (a restore with a revision bump).
// The chain's end record says "gap"; the caller takes a new full snapshot and starts a new chain
// from it.
var ErrGap = errors.New("delta chain gap")

// ErrClusterChanged is returned (wrapped) by Stream when it ended the chain because the
// endpoints answer for another cluster than the base's (the cluster was restored, which gives it
// a new cluster id): the chain's end record says "cluster-changed"; the caller takes a full
// snapshot of the cluster there is now and starts its chain.
var ErrClusterChanged = errors.New("delta chain source is another cluster")

// ErrEnded is returned (wrapped) by Stream when the chain of the base it was given is closed
// already: the caller continues the chain of the newer base, or takes one.
var ErrEnded = errors.New("delta chain ended")

// StreamOptions configures the writer of one cluster's delta log.
type StreamOptions struct {
	// Client reaches the cluster (etcdx.Config.ClusterClient: every endpoint).
	Client *clientv3.Client
	// Local is the target whose backend keeps the open segment (a backend.Appender: a local
	// disk), and where sealed segments are stored first.
	Local *repository.Repository
	// Remotes are the other targets. A writer that takes over from another (on another host,
	// whose local target it cannot read) continues the chain from the one that holds the most
	// of it; the shipper then sends the new segments after the old ones.
	Remotes []*repository.Repository
	// Codec is how sealed segments are compressed and encrypted, as full snapshots are.
	Codec repository.Codec
	// Times remembers when revisions were first received, across the Streams of one writer
	// (a new chain watches the revisions after its base again); nil remembers nothing.
	Times *ReceiptTimes
	// Term and Writer are recorded in each segment: the writer's election term (the revision
	// of its election key; it grows with each new writer) and who it is (host, process).
	Term   int64
	Writer string
	// SyncInterval, SealInterval, SealSize and LeasePoll: zero means the defaults above.
	SyncInterval time.Duration
	SealInterval time.Duration
	SealSize     int64
	LeasePoll    time.Duration
	Logger       *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// OnDurable is called after each sync with what is durable on the local target.
	OnDurable func(Progress)
	// OnSealed is called after each segment is stored on the local target (for shipping).
	OnSealed func(repository.SegmentManifest)
}

// Progress is how far the delta log is durable.
type Progress struct {
	Base string
	// Revision is the newest revision durable on the local target (open segment included); At
	// is when it was received.
	Revision int64
	At       time.Time
	// Head is the newest revision etcd reported to the writer (a watch response's header).
	Head int64
	// SyncedAt is when the open segment was last made durable.
	SyncedAt time.Time
	// WatchErr is why the watch has been failing since WatchFailingSince (nil while it
	// delivers): the writer runs but its durable revision does not move.
	WatchErr          error
	WatchFailingSince time.Time
}

// stream is the state of one Stream call: one chain of one base.
type stream struct {
	opts StreamOptions
	lg   *slog.Logger
	base repository.Manifest

	next          int64  // the next revision the chain needs
	prev, prevSHA string // what the next segment continues
	seg           *openSegment
	leases        map[int64]bool // leases known granted (a grant record written, or in the base)
	polled        time.Time      // when the leases were last listed
	head          int64
	durable       Progress
	received      bool // the current watch delivered a response (the backoff starts over)
	// carry holds the events of a revision cut across the pieces of a fragmented response.
	carry []*mvccpb.Event
	// watchErr is why the watch has been failing since watchErrAt (nil once it delivers).
	watchErr   error
	watchErrAt time.Time
}

// watchResult is one response of the watch stream, or the error that ended it.
type watchResult struct {
	resp *etcdserverpb.WatchResponse
	err  error
}

// watch opens a watch of the whole keyspace from revision from on etcd's gRPC stream itself and
// returns its responses, one at a time, until the stream ends (an error, as the last result) or
// ctx ends. etcd's client library is not used for it: it buffers every response its reader has
// not taken yet, without bound, so a writer slower than the cluster would grow without limit;
// here the next response is read only once the last one was taken, and gRPC's flow control holds
// the rest in etcd, which catches a slow watcher up from its store. The stream needs a leader
// (a member cut off from its cluster ends it, and the next watch goes to another member).
func watch(ctx context.Context, cli *clientv3.Client, from int64) <-chan watchResult {
	out := make(chan watchResult)
	go func() {
		defer close(out)
		send := func(r watchResult) bool {
			select {
			case out <- r:
				return true
			case <-ctx.Done():
				return false
			}
		}
		sctx := metadata.AppendToOutgoingContext(ctx, rpctypes.MetadataRequireLeaderKey, rpctypes.MetadataHasLeader)
		// etcd sends a watcher that fell behind up to 1,000 revisions in one response; with
		// Fragment it cuts a response larger than its request limit (1.5 MiB by default) into
		// pieces, and the receive limit (gRPC's default is 4 MiB; etcd's client sets its own per
		// call, which this stream does not go through) admits any piece. A revision may be cut
		// across pieces: follow joins them.
		st, err := etcdserverpb.NewWatchClient(cli.ActiveConnection()).Watch(sctx, grpc.MaxCallRecvMsgSize(math.MaxInt32))
		if err != nil {
			send(watchResult{err: err})
			return
		}
		req := &etcdserverpb.WatchRequest{RequestUnion: &etcdserverpb.WatchRequest_CreateRequest{CreateRequest: &etcdserverpb.WatchCreateRequest{
			Key: []byte{0}, RangeEnd: []byte{0}, StartRevision: from, ProgressNotify: true, Fragment: true,
		}}}
		if err := st.Send(req); err != nil {
			send(watchResult{err: err})
			return
		}
		for {
			resp, err := st.Recv()
			if err != nil {
				send(watchResult{err: err})
				return
			}
			// A created response holds no event, but its header says which cluster answers:
			// passed on, so that the writer checks it before anything is appended.
			if !send(watchResult{resp: resp}) || resp.Canceled {
				return
			}
		}
	}()
	return out
}

// openSegment is the segment being appended to.
type openSegment struct {
	first  int64
	name   string
	f      backend.AppendFile
	w      *delta.Writer
	opened time.Time
	last   int64 // the newest revision appended
	lastAt time.Time
	dirty  bool // appended to since the last sync
}

// Stream writes the chain of base, the newest full backup of the cluster on the local target,
// from the revision after base's (read from the snapshot itself) or, when the chain holds
// segments already, from the revision after its last one: a killed writer's open segment is
// sealed first, its complete prefix kept. It returns when:
//   - ctx ends: the open segment is sealed and stored, the chain left open; nil, nil;
//   - newBase delivers a newer base: the open segment is sealed, the chain ended ("new-base",
//     naming it), and the new base returned, for the caller to stream its chain;
//   - events were lost: the chain is ended ("gap") and the error wraps ErrGap;
//   - the endpoints answer for another cluster than the base's: the chain is ended
//     ("cluster-changed") and the error wraps ErrClusterChanged;
//   - the chain is ended already (ErrEnded), or the local target fails: the chain is left as it
//     is, for the caller to try again.
func Stream(ctx context.Context, opts StreamOptions, base repository.Manifest, newBase <-chan repository.Manifest) (*repository.Manifest, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	opts.SyncInterval = cmp.Or(opts.SyncInterval, DefaultSyncInterval)
	opts.SealInterval = cmp.Or(opts.SealInterval, DefaultSealInterval)
	opts.SealSize = cmp.Or(opts.SealSize, DefaultSealSize)
	opts.LeasePoll = cmp.Or(opts.LeasePoll, DefaultLeasePoll)
	if _, ok := backend.As[backend.Appender](opts.Local.Backend()); !ok {
		return nil, fmt.Errorf("target %s cannot keep the delta log's open segment: it must be a local disk", opts.Local.Target.Name)
	}
	s := &stream{opts: opts, lg: opts.Logger.With("base", base.ID), base: base, leases: map[int64]bool{}}
	defer s.release()
	if err := s.resume(ctx); err != nil {
		return nil, err
	}
	s.lg.Info("delta log streaming", "from_revision", s.next)
	return s.run(ctx, newBase)
}

// resume reads the chain on the local target: the revision to go on from and the link to its
// last segment; a killed writer's open segments are sealed or, if sealed already, removed.
func (s *stream) resume(ctx context.Context) (err error) {
	l, err := s.opts.Local.ListChain(ctx, s.base.ID)
	if err != nil {
		return err
	}
	if l.Ended {
		return fmt.Errorf("%w: the chain of %s in target %s has its end record", ErrEnded, s.base.ID, s.opts.Local.Target.Name)
	}
	// The chain goes on after the newest segment this target holds. The local chain may have
	// holes: segments another writer wrote (a handover) are on the remotes, not here; a
	// restore reads the target whose chain runs furthest without one.
	segs := append([]repository.SegmentRef(nil), l.Segments...)
	sort.Slice(segs, func(i, j int) bool { return segs[i].Last < segs[j].Last })
	s.next = s.base.Status.Revision + 1
	s.prev, s.prevSHA = repository.ManifestName(s.base.ID), s.base.SHA256
	if n := len(segs); n > 0 {
		m, err := s.opts.Local.SegmentManifest(ctx, segs[n-1])
		if err != nil {
			return err
		}
		s.next = m.Last + 1
		s.prev, s.prevSHA = m.Ref().ManifestName(), m.SHA256
	}
	defer func() {
		if err == nil {
			err = s.resumeFromRemotes(ctx)
		}
	}()
	for _, first := range l.Open {
		name := repository.OpenSegmentName(s.base.ID, first)
		switch {
		case first < s.next:
			// Sealed and stored before the writer was killed, not yet removed: the sealed
			// segment that starts there holds it.
			if !startsSegment(segs, first) {
				s.lg.Warn("an open delta segment overlaps the sealed ones and is left as it is", "segment", name)
				continue
			}
			if err := s.opts.Local.Backend().Remove(ctx, name); err != nil {
				return fmt.Errorf("target %s: remove %s, sealed already: %w", s.opts.Local.Target.Name, name, err)
			}
		case first == s.next:
			s.lg.Info("sealing the open delta segment an earlier writer left", "segment", name)
			if err := s.seal(ctx, first); err != nil {
				return err
			}
		default:
			s.lg.Warn("an open delta segment after a gap in the chain is left as it is", "segment", name, "chain_reaches", s.next-1)
		}
	}
	return nil
}

// resumeFromRemotes continues the chain from a remote target when one holds more of it than the
// local target: the writer took over from another one, whose segments reached the remotes. An
// open segment of this writer's own is sealed before this is asked, so the local target's
// reach is final.
func (s *stream) resumeFromRemotes(ctx context.Context) error {
	for _, r := range s.opts.Remotes {
		c, err := LoadChain(ctx, r, s.base)
		if err != nil {
			s.lg.Warn("could not read the delta chain in a remote target; continuing from the others", "target", r.Target.Name, "error", err)
			continue
		}
		if c.End != nil {
			return fmt.Errorf("%w: the chain of %s in target %s has its end record", ErrEnded, s.base.ID, r.Target.Name)
		}
		if c.Reach < s.next || len(c.Segments) == 0 {
			continue
		}
		last := c.Segments[len(c.Segments)-1]
		s.lg.Info("continuing the delta chain from a remote target, which holds more of it (another writer wrote it)", "target", r.Target.Name, "from_revision", c.Reach+1)
		s.next = c.Reach + 1
		s.prev, s.prevSHA = last.Ref().ManifestName(), last.SHA256
	}
	return nil
}

func startsSegment(segs []repository.SegmentRef, first int64) bool {
	for _, sg := range segs {
		if sg.First == first {
			return true
		}
	}
	return false
}

// run follows the watch until one of Stream's ends.
func (s *stream) run(ctx context.Context, newBase <-chan repository.Manifest) (*repository.Manifest, error) {
	cli := s.opts.Client
	if err := s.loadLeases(ctx); err != nil {
		s.lg.Warn("could not list the cluster's leases; their revocations are recorded from the next listing", "error", err)
	}
	tick := time.NewTicker(s.opts.SyncInterval)
	defer tick.Stop()
	backoff := time.Duration(0)
	for {
		wctx, cancel := context.WithCancel(ctx)
		wch := watch(wctx, cli, s.next)
		again, nb, err := s.follow(ctx, wch, tick.C, newBase)
		cancel()
		for range wch {
			// the stream's goroutine ends with its context
		}
		if s.received {
			backoff, s.received = 0, false
		}
		switch {
		case err != nil:
			return nil, err
		case nb != nil:
			return nb, nil
		case ctx.Err() != nil:
			return nil, s.stop(ctx)
		case !again:
			return nil, nil
		}
		backoff = min(max(2*backoff, 100*time.Millisecond), 5*time.Second)
		select {
		case <-ctx.Done():
			return nil, s.stop(ctx)
		case <-time.After(backoff):
		}
	}
}

// follow handles one watch until it fails (again: watch again from s.next), ctx ends, a new
// base arrives (returned, the chain ended) or the chain must end (the error).
func (s *stream) follow(ctx context.Context, wch <-chan watchResult, tick <-chan time.Time, newBase <-chan repository.Manifest) (again bool, nb *repository.Manifest, err error) {
	for {
		select {
		case <-ctx.Done():
			return false, nil, nil
		case m := <-newBase:
			if m.ID == s.base.ID || !m.Started.After(s.base.Started) {
				// Offered before this Stream began (the caller chose it as the newest base
				// meanwhile): it is no newer base, and ending the chain for it would end
				// the chain in favour of itself.
				s.lg.Debug("an offered full backup is not newer than the base; ignored", "offered", m.ID)
				continue
			}
			if err := s.endNewBase(ctx, m); err != nil {
				return false, nil, err
			}
			return false, &m, nil
		case <-tick:
			if err := s.tick(ctx); err != nil {
				return false, nil, err
			}
		case wr, ok := <-wch:
			if !ok {
				return true, nil, nil
			}
			resp := wr.resp
			if resp != nil && resp.Header != nil && resp.Header.ClusterId != 0 && s.base.ClusterID != "" {
				if got := fmt.Sprintf("%016x", resp.Header.ClusterId); got != s.base.ClusterID {
					return false, nil, s.endClusterChanged(ctx, got)
				}
			}
			if resp != nil && resp.CompactRevision != 0 {
				return false, nil, s.endGap(ctx, fmt.Sprintf("etcd compacted its history to revision %d, past revision %d, the next the chain needs", resp.CompactRevision, s.next))
			}
			err := wr.err
			if err == nil && resp.Canceled {
				err = fmt.Errorf("watch cancelled by etcd: %s", resp.CancelReason)
			}
			if err != nil {
				level := slog.LevelWarn
				if errors.Is(err, rpctypes.ErrNoLeader) || rpctypes.ErrorDesc(err) == rpctypes.ErrNoLeader.Error() || ctx.Err() != nil {
					level = slog.LevelInfo
				}
				s.lg.Log(ctx, level, "delta log watch ended; watching again from the next revision", "next_revision", s.next, "error", err)
				s.carry = nil // the pieces of a response cut off: the next watch sends them again
				if s.watchErr == nil {
					s.watchErr, s.watchErrAt = err, s.opts.Now()
				}
				s.report()
				return true, nil, nil
			}
			if !resp.Created || len(resp.Events) > 0 {
				s.received = true // a watch that delivers (not one only created) resets the backoff
			}
			if resp.Header != nil {
				s.head = max(s.head, resp.Header.Revision)
			}
			s.watchErr = nil
			evs := resp.Events
			if len(s.carry) > 0 {
				evs = append(s.carry, evs...)
				s.carry = nil
			}
			if resp.Fragment && len(evs) > 0 {
				// More pieces of this response follow: its last revision may go on in the next.
				last := evs[len(evs)-1].Kv.ModRevision
				cut := len(evs)
				for cut > 0 && evs[cut-1].Kv.ModRevision == last {
					cut--
				}
				s.carry = append([]*mvccpb.Event(nil), evs[cut:]...)
				evs = evs[:cut]
			}
			if err := s.events(ctx, evs); err != nil {
				return false, nil, err
			}
		}
	}
}

// events appends a watch response's events, one record per revision.
func (s *stream) events(ctx context.Context, evs []*mvccpb.Event) error {
	for i := 0; i < len(evs); {
		rev := evs[i].Kv.ModRevision
		j := i
		for j < len(evs) && evs[j].Kv.ModRevision == rev {
			j++
		}
		group := evs[i:j]
		i = j
		switch {
		case rev < s.next:
			continue // delivered again after a watch was resumed: the chain holds it
		case rev > s.next:
			// A whole-keyspace watch sees every revision: each one is a write that changed at
			// least one key. A revision missing is events lost.
			return s.endGap(ctx, fmt.Sprintf("the watch went from revision %d to %d", s.next-1, rev))
		}
		now := s.opts.Times.observe(rev, nowUTC(s.opts.Now))
		r := delta.Revision{Revision: rev, Received: now, Events: make([]*mvccpb.Event, len(group))}
		for k, ev := range group {
			r.Events[k] = &mvccpb.Event{Type: ev.Type, Kv: ev.Kv}
			if ev.Type == mvccpb.PUT && ev.Kv.Lease != 0 && !s.leases[ev.Kv.Lease] {
				if err := s.grant(ctx, ev.Kv.Lease, rev); err != nil {
					return err
				}
			}
		}
		if err := s.append(ctx, r); err != nil {
			return err
		}
		s.next = rev + 1
	}
	return s.sealIfDue(ctx)
}

// grant records the grant of a lease first seen attached to a key at revision rev.
func (s *stream) grant(ctx context.Context, id, rev int64) error {
	s.leases[id] = true
	tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := s.opts.Client.TimeToLive(tctx, clientv3.LeaseID(id))
	if err != nil {
		s.lg.Warn("could not ask etcd for a lease's ttl; its grant is not recorded", "lease", fmt.Sprintf("%x", id), "error", err)
		return nil
	}
	if resp.TTL < 0 || resp.GrantedTTL < 1 {
		return nil // expired already: the deletes of its keys follow
	}
	return s.append(ctx, delta.LeaseGrant{ID: id, TTL: resp.GrantedTTL, At: rev, Received: nowUTC(s.opts.Now), Remaining: min(resp.TTL, resp.GrantedTTL)})
}

// loadLeases learns the leases granted now, so that their revocations are recorded.
func (s *stream) loadLeases(ctx context.Context) error {
	tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := s.opts.Client.Leases(tctx)
	if err != nil {
		return err
	}
	for _, l := range resp.Leases {
		s.leases[int64(l.ID)] = true
	}
	s.polled = s.opts.Now()
	return nil
}

// pollLeases records the revocation of every known lease etcd no longer holds.
func (s *stream) pollLeases(ctx context.Context) error {
	s.polled = s.opts.Now()
	tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := s.opts.Client.Leases(tctx)
	if err != nil {
		s.lg.Debug("could not list the cluster's leases", "error", err)
		return nil
	}
	live := make(map[int64]bool, len(resp.Leases))
	for _, l := range resp.Leases {
		live[int64(l.ID)] = true
	}
	at := max(resp.ResponseHeader.GetRevision(), 1)
	for id := range s.leases {
		if live[id] {
			continue
		}
		delete(s.leases, id)
		if err := s.append(ctx, delta.LeaseRevoke{ID: id, At: at, Received: nowUTC(s.opts.Now)}); err != nil {
			return err
		}
	}
	return nil
}

// append writes one record to the open segment, opening one if none is.
func (s *stream) append(ctx context.Context, rec delta.Record) error {
	if s.seg == nil {
		name := repository.OpenSegmentName(s.base.ID, s.next)
		ap, _ := backend.As[backend.Appender](s.opts.Local.Backend())
		f, err := ap.Create(ctx, name)
		if err != nil {
			return fmt.Errorf("target %s: open delta segment: %w", s.opts.Local.Target.Name, err)
		}
		s.seg = &openSegment{first: s.next, name: name, f: f, w: delta.NewWriter(f), opened: s.opts.Now()}
	}
	if err := s.seg.w.Append(rec); err != nil {
		return fmt.Errorf("target %s: append to %s: %w", s.opts.Local.Target.Name, s.seg.name, err)
	}
	if r, ok := rec.(delta.Revision); ok {
		s.seg.last, s.seg.lastAt = r.Revision, r.Received
	}
	s.seg.dirty = true
	return nil
}

// tick syncs the open segment, seals it when due, and lists leases when due.
func (s *stream) tick(ctx context.Context) error {
	if s.opts.Now().Sub(s.polled) >= s.opts.LeasePoll {
		if err := s.pollLeases(ctx); err != nil {
			return err
		}
	}
	if err := s.sync(); err != nil {
		return err
	}
	if err := s.sealIfDue(ctx); err != nil {
		return err
	}
	s.report()
	return nil
}

// report hands the progress to OnDurable: what is durable, the head etcd last reported, and
// why the watch fails, if it does.
func (s *stream) report() {
	if s.opts.OnDurable == nil {
		return
	}
	p := s.durable
	p.Base, p.Head = s.base.ID, s.head
	p.WatchErr, p.WatchFailingSince = s.watchErr, s.watchErrAt
	s.opts.OnDurable(p)
}

// madeDurable records that revision rev, received at at, is durable on the local target, and
// reports it.
func (s *stream) madeDurable(rev int64, at time.Time) {
	s.durable.Revision, s.durable.At, s.durable.SyncedAt = rev, at, s.opts.Now()
	s.report()
}

// sync makes the open segment durable, if anything was appended since the last sync.
func (s *stream) sync() error {
	sg := s.seg
	if sg == nil || !sg.dirty {
		return nil
	}
	if err := sg.w.Flush(); err != nil {
		return fmt.Errorf("target %s: write %s: %w", s.opts.Local.Target.Name, sg.name, err)
	}
	if err := sg.f.Sync(); err != nil {
		return fmt.Errorf("target %s: sync %s: %w", s.opts.Local.Target.Name, sg.name, err)
	}
	sg.dirty = false
	if sg.last != 0 {
		s.madeDurable(sg.last, sg.lastAt)
	}
	return nil
}

// sealIfDue seals the open segment when it is old or big enough.
func (s *stream) sealIfDue(ctx context.Context) error {
	sg := s.seg
	if sg == nil || sg.last == 0 {
		return nil
	}
	if s.opts.Now().Sub(sg.opened) < s.opts.SealInterval && sg.w.Stats().Size < s.opts.SealSize {
		return nil
	}
	return s.closeAndSeal(ctx)
}

// closeAndSeal finishes the open segment (its trailer, a sync) and seals it.
func (s *stream) closeAndSeal(ctx context.Context) error {
	sg := s.seg
	if sg == nil {
		return nil
	}
	err := sg.w.Close()
	if err == nil {
		err = sg.f.Sync()
	}
	if cerr := sg.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("target %s: finish %s: %w", s.opts.Local.Target.Name, sg.name, err)
	}
	s.seg = nil
	if sg.last == 0 {
		// Lease records only, no revision: nothing a chain can hold.
		fctx, cancel := finishing(ctx)
		defer cancel()
		return s.opts.Local.Backend().Remove(fctx, sg.name)
	}
	return s.seal(ctx, sg.first)
}

// sealTimeout bounds a seal that goes on after its Stream was stopped.
const sealTimeout = 30 * time.Second

// finishing returns the context a seal runs in: ctx's values without its cancellation, and a
// deadline of its own. A seal once begun is finished (a stop in the middle of it, the agent's or
// a lost election's, would report the stop as a failure and leave the segment to be sealed again
// by the next start), as the seal at a stop is.
func finishing(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), sealTimeout)
}

// release closes the open segment's file of a Stream that ends with it still open (a write or
// sync failed: a full disk). What was synced stays on the target, and the next Stream seals it;
// the file is not kept open, which would hold the blocks of a file that seal removes.
func (s *stream) release() {
	if s.seg != nil {
		_ = s.seg.f.Close()
		s.seg = nil
	}
}

// stop ends a Stream whose context ended: the open segment is sealed and stored, with a
// deadline of its own.
func (s *stream) stop(ctx context.Context) error {
	ctx, cancel := finishing(ctx)
	defer cancel()
	if err := s.closeAndSeal(ctx); err != nil {
		return fmt.Errorf("seal the open delta segment at stop (it stays on the target, and the next start seals it): %w", err)
	}
	return nil
}

// seal stores the open segment that starts at first as a sealed segment: its complete records
// (all of them once its writer closed it; a killed writer's complete prefix), through the codec,
// read back; then the revision-to-time index record and a high-water mark, and the open segment
// is removed.
func (s *stream) seal(ctx context.Context, first int64) error {
	ctx, cancel := finishing(ctx)
	defer cancel()
	local := s.opts.Local
	name := repository.OpenSegmentName(s.base.ID, first)
	st, damaged, err := scanOpen(ctx, local, name)
	if err != nil {
		return err
	}
	if st.Last == 0 {
		s.lg.Warn("an open delta segment holds no complete revision and is removed", "segment", name)
		return local.Backend().Remove(ctx, name)
	}
	m := repository.SegmentManifest{
		Format: repository.FormatVersion, Kind: repository.KindDelta, Base: s.base.ID, ClusterID: s.base.ClusterID,
		First: st.First, Last: st.Last, FirstTime: st.FirstTime, LastTime: st.LastTime, Events: int(st.Events),
		Prev: s.prev, PrevSHA256: s.prevSHA, Created: nowUTC(s.opts.Now),
		WriterTerm: s.opts.Term, Writer: s.opts.Writer,
	}
	var stored repository.SegmentManifest
	for try := 0; ; try++ {
		stored, err = storeSegment(ctx, local, s.opts.Codec, rewrite(ctx, local, name, st.Records), m)
		if err == nil || !errors.Is(err, errRetry) || try > 0 {
			break
		}
	}
	if err != nil {
		return err
	}
	for _, rec := range []string{
		repository.IndexName(repository.IndexEntry{At: st.LastTime, Revision: st.Last}),
		repository.MarkName(repository.Mark{Revision: st.Last, At: nowUTC(s.opts.Now)}),
	} {
		if err := local.SaveNewRecord(ctx, rec); err != nil {
			s.lg.Warn("could not store a record of the delta log", "record", rec, "error", err)
		}
	}
	if damaged != nil {
		s.lg.Error("an open delta segment is damaged after its complete records; they are sealed, the segment is left as it is", "segment", name, "error", damaged)
	} else if err := local.Backend().Remove(ctx, name); err != nil {
		return fmt.Errorf("target %s: remove %s, sealed as %s: %w", local.Target.Name, name, stored.Ref(), err)
	}
	s.prev, s.prevSHA = stored.Ref().ManifestName(), stored.SHA256
	s.next = max(s.next, stored.Last+1)
	if stored.Last > s.durable.Revision {
		s.madeDurable(stored.Last, stored.LastTime) // the last revision, if sealed before a sync
	}
	s.lg.Debug("sealed delta segment", "segment", stored.Ref().String(), "events", stored.Events, "bytes", stored.StoredSize)
	if s.opts.OnSealed != nil {
		s.opts.OnSealed(stored)
	}
	return nil
}

// scanOpen reads an open segment's records and returns what its complete prefix holds; damaged
// is the error that ended it early when it was neither complete nor cut off (a damaged byte).
func scanOpen(ctx context.Context, repo *repository.Repository, name string) (st delta.Stats, damaged error, err error) {
	rc, err := repo.Backend().Open(ctx, name)
	if err != nil {
		return st, nil, fmt.Errorf("target %s: open %s: %w", repo.Target.Name, name, err)
	}
	defer rc.Close()
	r := delta.NewReader(rc)
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) || errors.Is(err, delta.ErrTruncated) {
			return st, nil, nil
		}
		if err != nil {
			if errors.Is(err, delta.ErrCorrupt) {
				return st, err, nil
			}
			return st, nil, fmt.Errorf("target %s: read %s: %w", repo.Target.Name, name, err)
		}
		st.Records++
		if rv, ok := rec.(delta.Revision); ok {
			if st.First == 0 {
				st.First, st.FirstTime = rv.Revision, rv.Received
			}
			st.Last, st.LastTime = rv.Revision, rv.Received
			st.Revisions++
			st.Events += int64(len(rv.Events))
		}
	}
}

// rewrite returns the plain bytes of a sealed segment of the first n records of an open one.
func rewrite(ctx context.Context, repo *repository.Repository, name string, n int64) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(func() error {
			rc, err := repo.Backend().Open(ctx, name)
			if err != nil {
				return err
			}
			defer rc.Close()
			r := delta.NewReader(rc)
			w := delta.NewWriter(pw)
			for range n {
				rec, err := r.Next()
				if err != nil {
					return fmt.Errorf("read %s again: %w", name, err)
				}
				if err := w.Append(rec); err != nil {
					return err
				}
			}
			return w.Close()
		}())
	}()
	return pr
}

// endGap seals what is open and ends the chain with "gap" at the last revision it holds.
func (s *stream) endGap(ctx context.Context, why string) error {
	if err := s.closeAndSeal(ctx); err != nil {
		return err
	}
	if err := s.end(ctx, repository.EndGap, ""); err != nil {
		return err
	}
	s.lg.Warn("delta chain ended by a gap; a new full snapshot starts a new chain", "last_revision", s.next-1, "reason", why)
	return fmt.Errorf("%w: the chain of %s ends at revision %d: %s", ErrGap, s.base.ID, s.next-1, why)
}

// endClusterChanged seals what is open (all of it from the base's cluster: each response is
// checked before its events are appended) and ends the chain with "cluster-changed".
func (s *stream) endClusterChanged(ctx context.Context, cluster string) error {
	if err := s.closeAndSeal(ctx); err != nil {
		return err
	}
	if err := s.end(ctx, repository.EndClusterChanged, ""); err != nil {
		return err
	}
	s.lg.Warn("delta chain ended: the endpoints answer for another cluster (restored?); a new full snapshot starts a new chain", "last_revision", s.next-1, "base_cluster", s.base.ClusterID, "cluster", cluster)
	return fmt.Errorf("%w: the chain of %s (cluster %s) ends at revision %d: the endpoints answer for cluster %s", ErrClusterChanged, s.base.ID, s.base.ClusterID, s.next-1, cluster)
}

// endNewBase seals what is open and ends the chain in favour of the newer base m.
func (s *stream) endNewBase(ctx context.Context, m repository.Manifest) error {
	if err := s.closeAndSeal(ctx); err != nil {
		return err
	}
	if err := s.end(ctx, repository.EndNewBase, m.ID); err != nil {
		return err
	}
	s.lg.Info("delta chain ended: a newer full snapshot carries on", "last_revision", s.next-1, "next_base", m.ID)
	return nil
}

func (s *stream) end(ctx context.Context, reason, next string) error {
	e := repository.ChainEnd{Format: repository.FormatVersion, Base: s.base.ID, Last: s.next - 1, Reason: reason, Next: next, Created: nowUTC(s.opts.Now)}
	if err := s.opts.Local.SaveNewChainEnd(ctx, e); err != nil {
		return fmt.Errorf("target %s: end the delta chain of %s: %w", s.opts.Local.Target.Name, s.base.ID, err)
	}
	return nil
}
