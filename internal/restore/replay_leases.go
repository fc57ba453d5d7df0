package restore

import (
	"errors"
	"sort"

	"go.etcd.io/etcd/server/v3/lease"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/schema"
)

// keyLeases is the lessor a replay gives etcd's mvcc store: it remembers which lease each key is
// attached to, and nothing else. The store writes a put's lease id into the key's record itself
// and asks its lessor only which lease a key had (GetLease) and to attach and detach keys; etcd's
// own lessor refuses to attach a key to a lease it holds no grant of, and the grants of leases
// made after the snapshot come from the delta log's lease records, which are restored in a later
// step, not from events. So keys get exactly the lease ids they had, and the leases themselves
// are reported (ReplayResult.LeasesNotRestored) rather than invented.
//
// The other methods of lease.Lessor serve etcd's server (grants, renewals, expiry) and are
// never called by the store; they are left to the embedded nil interface, so that a call to one
// panics, and the replay's recover turns that into an error, instead of doing something
// plausible.
type keyLeases struct {
	lease.Lessor
	items map[lease.LeaseItem]lease.LeaseID
}

var _ lease.Lessor = (*keyLeases)(nil)

func newKeyLeases() *keyLeases { return &keyLeases{items: map[lease.LeaseItem]lease.LeaseID{}} }

// SetRangeDeleter is called by the store when it opens; the deleter revokes expired leases,
// which a replay never does.
func (l *keyLeases) SetRangeDeleter(lease.RangeDeleter) {}

// Attach records that items are attached to id.
func (l *keyLeases) Attach(id lease.LeaseID, items []lease.LeaseItem) error {
	for _, it := range items {
		l.items[it] = id
	}
	return nil
}

// GetLease returns the lease item is attached to, or lease.NoLease.
func (l *keyLeases) GetLease(item lease.LeaseItem) lease.LeaseID { return l.items[item] }

// Detach records that items are no longer attached to id.
func (l *keyLeases) Detach(id lease.LeaseID, items []lease.LeaseItem) error {
	for _, it := range items {
		if l.items[it] != id {
			return errors.New("key is not attached to that lease")
		}
		delete(l.items, it)
	}
	return nil
}

// missing returns, sorted, the leases that keys are attached to and that the database has no
// record of in its lease bucket, and how many keys are attached to them.
func (l *keyLeases) missing(be backend.Backend) (ids []int64, keys int) {
	perLease := map[lease.LeaseID]int{}
	for _, id := range l.items {
		perLease[id]++
	}
	tx := be.ReadTx()
	tx.RLock()
	defer tx.RUnlock()
	for id, n := range perLease {
		if schema.MustUnsafeGetLease(tx, int64(id)) == nil {
			ids = append(ids, int64(id))
			keys += n
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids, keys
}
