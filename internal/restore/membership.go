package restore

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"go.etcd.io/bbolt"

	"github.com/etcdguard/etcdguard/internal/cluster"
)

// dbMember is a member as recorded in a database's members bucket.
type dbMember struct {
	ID       uint64   `json:"id"`
	Name     string   `json:"name"`
	PeerURLs []string `json:"peerURLs"`
}

// readMembership reads the cluster membership recorded in a member's database, read-only. It
// returns nil when the database cannot be read (damaged, or held by a running etcd).
func readMembership(dbPath string) (members []dbMember) {
	defer func() {
		if recover() != nil { // a damaged database can make bbolt panic
			members = nil
		}
	}()
	db, err := bbolt.Open(dbPath, 0o400, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return nil
	}
	defer db.Close()
	_ = db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte("members"))
		if b == nil {
			return nil
		}
		return b.ForEach(func(_, v []byte) error {
			var m dbMember
			if json.Unmarshal(v, &m) == nil {
				members = append(members, m)
			}
			return nil
		})
	})
	return members
}

// checkPeerURLs compares the described members' peer URLs with the membership a data dir
// records, and explains any difference.
func checkPeerURLs(c cluster.Cluster, owner string, recorded []dbMember) error {
	if len(recorded) == 0 {
		return nil
	}
	var want, got []string
	for _, m := range c.Members {
		want = append(want, m.PeerURL)
	}
	for _, m := range recorded {
		got = append(got, m.PeerURLs...)
	}
	sort.Strings(want)
	sort.Strings(got)
	if strings.Join(want, ",") == strings.Join(got, ",") {
		return nil
	}
	return fmt.Errorf("%w: the data dir of member %s records the members' peer URLs as %s, the cluster description says %s: fix the peer-url of each member (or the data-dir) in the description",
		ErrPlanMismatch, owner, strings.Join(got, ","), strings.Join(want, ","))
}
