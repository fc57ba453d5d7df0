package restore

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdguard/etcdguard/internal/cluster"
)

// Verification is the check after a recovery: every member healthy, one leader, the same data on
// every member, the expected number of keys, and revisions above anything seen before.
type Verification struct {
	Healthy  []string          `json:"healthy"`
	Leader   string            `json:"leader"`
	Revision int64             `json:"revision"`
	HashKV   map[string]uint32 `json:"hash_kv"`
	Keys     int64             `json:"keys"`
	// WantKeys is the source's key count on a restore (0 when not known).
	WantKeys int64    `json:"want_keys,omitempty"`
	Problems []string `json:"problems,omitempty"`
}

// Summary is one line for the report.
func (v Verification) Summary() string {
	s := fmt.Sprintf("%d members healthy, leader %s, revision %d, %d keys, HashKV equal on all", len(v.Healthy), v.Leader, v.Revision, v.Keys)
	if len(v.Problems) > 0 {
		s = "problems: " + strings.Join(v.Problems, "; ")
	}
	return s
}

// Verify checks the recovered cluster. It waits (up to a minute) for every member to answer and
// agree, then compares HashKV of every member at one revision.
func (r *Recoverer) Verify(ctx context.Context, p Plan) (Verification, error) {
	deadline := time.Now().Add(time.Minute)
	var v Verification
	for {
		v = r.verifyOnce(ctx, p)
		if len(v.Problems) == 0 || time.Now().After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return v, ctx.Err()
		case <-time.After(time.Second):
		}
	}
	if len(v.Problems) == 0 {
		// Once the members agree, the member list must be exactly the planned one: a member of
		// the old cluster left in it (a zombie) is not transient, so it is not waited on.
		v.Problems = r.checkMemberList(ctx, p)
	}
	if len(v.Problems) > 0 {
		return v, fmt.Errorf("the recovered cluster failed its checks: %s", strings.Join(v.Problems, "; "))
	}
	return v, nil
}

func (r *Recoverer) checkMemberList(ctx context.Context, p Plan) []string {
	ep := p.Cluster.Members[0].ClientURL
	cli, err := r.etcdFor(ep).Client(ctx, ep)
	if err != nil {
		return []string{err.Error()}
	}
	defer cli.Close()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	list, err := cli.MemberList(cctx)
	if err != nil {
		return []string{"list members: " + err.Error()}
	}
	return memberListProblems(p.Cluster, list.Members)
}

func (r *Recoverer) verifyOnce(ctx context.Context, p Plan) Verification {
	v := Verification{HashKV: map[string]uint32{}}
	leaders := map[uint64]bool{}
	var urls []string
	for _, m := range p.Cluster.Members {
		urls = append(urls, m.ClientURL)
	}
	statuses := r.etcdFor(urls...).Status(ctx, false)
	byURL := map[string]string{}
	for _, m := range p.Cluster.Members {
		byURL[m.ClientURL] = m.Name
	}
	idToName := map[uint64]string{}
	for _, st := range statuses {
		name := byURL[st.Endpoint]
		if st.Err != "" {
			v.Problems = append(v.Problems, fmt.Sprintf("member %s: %s", name, st.Err))
			continue
		}
		if len(st.Alarms) > 0 {
			v.Problems = append(v.Problems, fmt.Sprintf("member %s raised %s", name, strings.Join(st.Alarms, ",")))
		}
		idToName[st.ID] = name
		leaders[st.Leader] = true
		v.Healthy = append(v.Healthy, name)
	}
	if len(leaders) != 1 || leaders[0] {
		v.Problems = append(v.Problems, fmt.Sprintf("members report %d different leaders", len(leaders)))
	}
	for id := range leaders {
		v.Leader = idToName[id]
	}
	if len(v.Problems) > 0 {
		return v
	}
	cli, err := r.etcdFor(urls[0]).Client(ctx, urls[0])
	if err != nil {
		v.Problems = append(v.Problems, err.Error())
		return v
	}
	defer cli.Close()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// Count every key, and fix the revision at which the members are compared.
	resp, err := cli.Get(cctx, "\x00", clientv3.WithFromKey(), clientv3.WithCountOnly())
	if err != nil {
		v.Problems = append(v.Problems, "count keys: "+err.Error())
		return v
	}
	v.Revision, v.Keys = resp.Header.Revision, resp.Count
	for _, m := range p.Cluster.Members {
		h, err := cli.HashKV(cctx, m.ClientURL, v.Revision)
		if err != nil {
			v.Problems = append(v.Problems, fmt.Sprintf("HashKV of %s at revision %d: %v", m.Name, v.Revision, err))
			continue
		}
		v.HashKV[m.Name] = h.Hash
	}
	var first uint32
	i := 0
	for _, h := range v.HashKV {
		if i > 0 && h != first {
			v.Problems = append(v.Problems, fmt.Sprintf("HashKV differs between members at revision %d: %v", v.Revision, v.HashKV))
			break
		}
		first = h
		i++
	}
	if p.Path == PathRestore && p.Source != nil && p.Source.TotalKey > 0 {
		v.WantKeys = int64(p.Source.TotalKey)
		if v.Keys < v.WantKeys {
			v.Problems = append(v.Problems, fmt.Sprintf("%d keys, the source had %d", v.Keys, v.WantKeys))
		}
	}
	if p.Path == PathRestore && p.Bump > 0 && v.Revision <= p.HighWater {
		v.Problems = append(v.Problems, fmt.Sprintf("revision %d is not above %d, the highest known before the restore", v.Revision, p.HighWater))
	}
	return v
}

// memberListProblems compares the cluster's member list with the planned members: a member the
// plan does not describe (a zombie of the old cluster, a learner added and never started) or a
// planned member missing from the list means the cluster is not the one recovered.
func memberListProblems(c cluster.Cluster, list []*etcdserverpb.Member) []string {
	planned := map[string]string{}
	for _, m := range c.Members {
		planned[m.PeerURL] = m.Name
	}
	var problems []string
	seen := map[string]bool{}
	for _, mem := range list {
		name, known := "", false
		for _, u := range mem.PeerURLs {
			if n, ok := planned[u]; ok {
				name, known = n, true
				seen[n] = true
			}
		}
		if !known {
			kind := "member"
			if mem.IsLearner {
				kind = "learner"
			}
			problems = append(problems, fmt.Sprintf("the member list holds %s %016x (name %q, peer URLs %s) that the plan does not describe: remove it with etcdctl member remove %x if it is a leftover of the old cluster",
				kind, mem.ID, mem.Name, strings.Join(mem.PeerURLs, ","), mem.ID))
		} else if mem.Name == "" {
			problems = append(problems, fmt.Sprintf("member %016x on %s's peer URL has never started (it has no name)", mem.ID, name))
		} else if mem.Name != name {
			problems = append(problems, fmt.Sprintf("member %016x on %s's peer URL is named %q", mem.ID, name, mem.Name))
		}
	}
	for _, m := range c.Members {
		if !seen[m.Name] {
			problems = append(problems, fmt.Sprintf("member %s (%s) is not in the member list", m.Name, m.PeerURL))
		}
	}
	sort.Strings(problems)
	return problems
}
