package restore

import (
	"fmt"
	"io"
	"sort"
	"time"

	"go.etcd.io/etcd/server/v3/lease/leasepb"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/schema"

	"github.com/etcdguard/etcdguard/internal/delta"
	"github.com/etcdguard/etcdguard/internal/deltalog"
)

// Lease is a lease a replay restores: its granted TTL and the TTL it has left at the replay's
// target, both in seconds. etcd gives a restored lease its remaining TTL (RemainingTTL in its
// lease bucket) when a leader takes it up, and its full TTL at each renewal after.
type Lease struct {
	ID, TTL, Remaining int64
}

// LeaseSource is implemented by revision sources that also know the cluster's leases (a delta
// chain's lease records). After the last revision, Replay asks it which leases were granted and
// which revoked at that revision, and writes them into the database's lease bucket.
type LeaseSource interface {
	Leases(rev int64) (granted []Lease, revoked []int64)
}

// ChainSource is the RevisionSource of a delta chain: the revisions a deltalog.Reader returns, up
// to a moment when one is given (revisions received after Until are not returned), with the
// chain's lease records kept for LeaseSource.
type ChainSource struct {
	r     *deltalog.Reader
	until time.Time
	// Reached is the revision and receipt time of the last revision returned.
	Reached     int64
	ReachedTime time.Time

	grants  map[int64]delta.LeaseGrant
	revokes map[int64]int64 // lease id: the revision it was seen gone at
}

var _ LeaseSource = (*ChainSource)(nil)

// NewChainSource returns a source of r's revisions; until, if not zero, stops it at the last
// revision received at or before that moment.
func NewChainSource(r *deltalog.Reader, until time.Time) *ChainSource {
	return &ChainSource{r: r, until: until, Reached: r.Last(), grants: map[int64]delta.LeaseGrant{}, revokes: map[int64]int64{}}
}

// Next returns the chain's next revision.
func (c *ChainSource) Next() (Revision, error) {
	for {
		rec, err := c.r.Next()
		if err != nil {
			return Revision{}, err
		}
		switch r := rec.(type) {
		case delta.LeaseGrant:
			c.grants[r.ID] = r
			delete(c.revokes, r.ID) // a lease id granted again after a revocation is the new one
		case delta.LeaseRevoke:
			c.revokes[r.ID] = r.At
		case delta.Revision:
			if !c.until.IsZero() && r.Received.After(c.until) {
				if err := c.r.Stop(); err != nil {
					return Revision{}, err
				}
				return Revision{}, io.EOF
			}
			if r.Revision > c.Reached {
				c.Reached, c.ReachedTime = r.Revision, r.Received
			}
			return Revision{Rev: r.Revision, Events: r.Events}, nil
		default:
			return Revision{}, fmt.Errorf("delta chain: a record of type %T", rec)
		}
	}
}

// Leases returns the leases granted and revoked by revision rev: a grant is restored with what
// was left of its TTL when it was seen, less the time from then to rev's receipt (at least one
// second); a lease seen gone at or before rev is removed.
func (c *ChainSource) Leases(rev int64) (granted []Lease, revoked []int64) {
	at := c.ReachedTime
	for id, g := range c.grants {
		if g.At > rev {
			continue
		}
		if gone, ok := c.revokes[id]; ok && gone <= rev {
			continue
		}
		left := g.TTL
		if g.Remaining > 0 {
			left = g.Remaining
		}
		if !at.IsZero() && at.After(g.Received) {
			left -= int64(at.Sub(g.Received) / time.Second)
		}
		granted = append(granted, Lease{ID: id, TTL: g.TTL, Remaining: max(left, 1)})
	}
	for id, gone := range c.revokes {
		if gone <= rev {
			revoked = append(revoked, id)
		}
	}
	sort.Slice(granted, func(i, j int) bool { return granted[i].ID < granted[j].ID })
	sort.Slice(revoked, func(i, j int) bool { return revoked[i] < revoked[j] })
	return granted, revoked
}

// restoreLeases writes the leases src knows at revision rev into the database's lease bucket.
func restoreLeases(be backend.Backend, src RevisionSource, rev int64) (restored, removed int) {
	ls, ok := src.(LeaseSource)
	if !ok {
		return 0, 0
	}
	granted, revoked := ls.Leases(rev)
	tx := be.BatchTx()
	tx.LockOutsideApply()
	defer tx.Unlock()
	for _, id := range revoked {
		if schema.MustUnsafeGetLease(tx, id) != nil {
			schema.UnsafeDeleteLease(tx, &leasepb.Lease{ID: id})
			removed++
		}
	}
	for _, l := range granted {
		schema.MustUnsafePutLease(tx, &leasepb.Lease{ID: l.ID, TTL: l.TTL, RemainingTTL: l.Remaining})
		restored++
	}
	return restored, removed
}
