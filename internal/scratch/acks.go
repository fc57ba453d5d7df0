package scratch

import (
	"slices"
	"sort"
	"time"
)

// Ack is one operation of a Load that etcd acknowledged.
type Ack struct {
	// Revision is the revision the operation wrote (its response's header); 0 when it wrote
	// none (a delete of a key that was gone, a revoke of a lease with no keys).
	Revision int64
	// At is when the acknowledgement arrived; Latency how long after the op was sent.
	At      time.Time
	Latency time.Duration
}

// Acks returns every acknowledged operation so far, in the order they were acknowledged.
func (l *Load) Acks() []Ack {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.acks)
}

// AckLog answers, for the writes a Load had acknowledged when it was made, how old the oldest
// one beyond a revision is: what a backup durable up to that revision would lose.
type AckLog struct {
	// revs are the revisions of the acknowledged writes, ascending; oldest[i] is the earliest
	// acknowledgement of revs[i:].
	revs   []int64
	oldest []time.Time
}

// AckLog returns the AckLog of the writes acknowledged so far.
func (l *Load) AckLog() AckLog { return NewAckLog(l.Acks()) }

// NewAckLog makes the AckLog of acks; operations that wrote no revision are left out.
func NewAckLog(acks []Ack) AckLog {
	ws := slices.DeleteFunc(slices.Clone(acks), func(a Ack) bool { return a.Revision == 0 })
	sort.Slice(ws, func(i, j int) bool { return ws[i].Revision < ws[j].Revision })
	a := AckLog{revs: make([]int64, len(ws)), oldest: make([]time.Time, len(ws))}
	for i := len(ws) - 1; i >= 0; i-- {
		a.revs[i], a.oldest[i] = ws[i].Revision, ws[i].At
		if i+1 < len(ws) && a.oldest[i+1].Before(ws[i].At) {
			a.oldest[i] = a.oldest[i+1]
		}
	}
	return a
}

// OldestAfter returns when the first write of a revision above rev was acknowledged: the
// earliest acknowledgement among those writes (acknowledgements of concurrent writers do not
// arrive in revision order). ok is false when no acknowledged write is above rev.
func (a AckLog) OldestAfter(rev int64) (at time.Time, ok bool) {
	i := sort.Search(len(a.revs), func(i int) bool { return a.revs[i] > rev })
	if i == len(a.revs) {
		return time.Time{}, false
	}
	return a.oldest[i], true
}

// RecoveryPoint is how much a backup durable up to revision durable, as seen at now, would lose:
// how long before now the oldest acknowledged write above durable was acknowledged; 0 when every
// write acknowledged before now is at or below durable.
func (a AckLog) RecoveryPoint(durable int64, now time.Time) time.Duration {
	at, ok := a.OldestAfter(durable)
	if !ok || !at.Before(now) {
		return 0
	}
	return now.Sub(at)
}
