package deltalog

import (
	"sort"
	"sync"
	"time"
)

// ReceiptTimes remembers when the writer received its most recent revisions. When a newer full
// backup starts a new chain, the revisions after it are watched again from etcd's history; they
// keep the time they were first received (what --to-time goes by), not the time of that second
// watch, which can be minutes later (the snapshot was taken, verified and stored meanwhile). It
// holds a fixed number of revisions (a ring, 16 bytes each), so memory does not grow with the
// write rate; a revision older than the ring gets the time it is watched again. Safe for
// concurrent use; one serves every Stream of an agent.
type ReceiptTimes struct {
	mu    sync.Mutex
	revs  []int64
	times []int64 // Unix ns
	start int     // the oldest entry's index, once the ring is full
	full  bool
}

// DefaultReceiptTimes is the ring's size: two minutes at 1,000 revisions a second, 2 MiB.
const DefaultReceiptTimes = 128 << 10

// NewReceiptTimes returns a ring of n revisions.
func NewReceiptTimes(n int) *ReceiptTimes {
	return &ReceiptTimes{revs: make([]int64, 0, n), times: make([]int64, 0, n)}
}

// observe returns when rev was first received: the remembered time if the ring holds it, else
// now, which it remembers if rev is newer than every revision it holds.
func (r *ReceiptTimes) observe(rev int64, now time.Time) time.Time {
	if r == nil {
		return now
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n := len(r.revs)
	if n > 0 {
		newest := r.revs[(r.start+n-1)%n]
		if rev <= newest {
			// The ring is sorted in its own order, from start: search it as one sorted list.
			i := sort.Search(n, func(i int) bool { return r.revs[(r.start+i)%n] >= rev })
			if i < n && r.revs[(r.start+i)%n] == rev {
				return time.Unix(0, r.times[(r.start+i)%n]).UTC()
			}
			return now
		}
	}
	if n < cap(r.revs) {
		r.revs, r.times = append(r.revs, rev), append(r.times, now.UnixNano())
		return now
	}
	r.revs[r.start], r.times[r.start] = rev, now.UnixNano()
	r.start = (r.start + 1) % n
	return now
}
