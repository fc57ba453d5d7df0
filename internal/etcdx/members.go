package etcdx

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// Client returns an etcd client for exactly one endpoint. Talking to members one at a time is
// what lets etcdguard say which member answered what, and stream a snapshot from a chosen member.
func (c Config) Client(ctx context.Context, endpoint string) (*clientv3.Client, error) {
	cfg, err := c.clientConfig(ctx, []string{endpoint})
	if err != nil {
		return nil, err
	}
	cfg.DialOptions = []grpc.DialOption{grpc.WithBlock()} //nolint:staticcheck // fail fast per endpoint
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", endpoint, err)
	}
	return cli, nil
}

// clientConfig is the client configuration of both kinds of client: TLS, timeouts, and
// keepalives, which notice a member that vanished without closing the connection (its host lost
// power), so that a snapshot stream or a watch fails instead of waiting forever.
func (c Config) clientConfig(ctx context.Context, endpoints []string) (clientv3.Config, error) {
	tlsCfg, err := c.TLS()
	if err != nil {
		return clientv3.Config{}, err
	}
	return clientv3.Config{
		Endpoints:            endpoints,
		DialTimeout:          c.dialTimeout(),
		TLS:                  tlsCfg,
		Context:              ctx,
		Logger:               zap.NewNop(),
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
	}, nil
}

// MemberStatus is what one endpoint said about its member, or why it said nothing.
type MemberStatus struct {
	Endpoint  string `json:"endpoint"`
	ID        uint64 `json:"id,omitempty"`
	Name      string `json:"name,omitempty"`
	ClusterID uint64 `json:"cluster_id,omitempty"`
	Leader    uint64 `json:"leader,omitempty"`
	Version   string `json:"version,omitempty"`
	DBSize    int64  `json:"db_size,omitempty"`
	// DBSizeInUse is the part of DBSize holding data; the rest is free pages a defrag returns.
	DBSizeInUse int64 `json:"db_size_in_use,omitempty"`
	// DBSizeQuota is the member's --quota-backend-bytes (etcd 3.6 reports it; 0 when unknown).
	DBSizeQuota  int64  `json:"db_size_quota,omitempty"`
	RaftIndex    uint64 `json:"raft_index,omitempty"`
	AppliedIndex uint64 `json:"applied_index,omitempty"`
	RaftTerm     uint64 `json:"raft_term,omitempty"`
	// Revision is the member's current revision, read locally (serializable).
	Revision int64    `json:"revision,omitempty"`
	Alarms   []string `json:"alarms,omitempty"`
	// Errors are the errors the member reports about itself, such as "etcdserver: no leader".
	Errors    []string `json:"errors,omitempty"`
	IsLearner bool     `json:"is_learner,omitempty"`
	// Err explains why the endpoint could not be used; empty when it answered.
	Err string `json:"error,omitempty"`
	// Fault says which of the known causes Err is, when it is one.
	Fault Fault `json:"fault,omitempty"`
}

// IsLeader reports whether the member said it is the leader.
func (s MemberStatus) IsLeader() bool { return s.ID != 0 && s.ID == s.Leader }

// Healthy reports whether the member answered and raised no alarm.
func (s MemberStatus) Healthy() bool { return s.Err == "" && len(s.Alarms) == 0 }

// Status asks every endpoint, in parallel, for its member's status and alarms. Endpoints that do
// not answer are probed so that their Err explains why. When discover is true, the client URLs of
// every member in the cluster (from the member list of the first endpoint that answers) are added,
// so that giving one endpoint is enough.
func (c Config) Status(ctx context.Context, discover bool) []MemberStatus {
	endpoints := slices.Clone(c.Endpoints)
	statuses := c.statusOf(ctx, endpoints)
	if discover {
		var extra []string
		var listed map[string]listedMember
		for _, st := range statuses {
			// A learner refuses the member list: ask a voter.
			if st.Err != "" || st.IsLearner {
				continue
			}
			if extra, listed = c.memberURLs(ctx, st.Endpoint); len(extra) > 0 {
				break
			}
		}
		var added []string
		for _, ep := range extra {
			if !slices.Contains(endpoints, ep) {
				added = append(added, ep)
				endpoints = append(endpoints, ep)
			}
		}
		statuses = append(statuses, c.statusOf(ctx, added)...)
		for i := range statuses {
			// What a learner cannot say of itself (it refuses the member list), or a member that
			// does not answer, the member list says.
			if m, ok := listed[statuses[i].Endpoint]; ok {
				statuses[i].IsLearner = statuses[i].IsLearner || m.learner
				if statuses[i].Name == "" {
					statuses[i].Name = m.name
				}
			}
		}
	}
	return dedupe(statuses)
}

// dedupe keeps one status per member: a member listed under several URLs (127.0.0.1 and its
// advertised address, say) is one member, and must count, and be retried, once.
func dedupe(statuses []MemberStatus) []MemberStatus {
	seen := map[uint64]bool{}
	out := statuses[:0:0]
	for _, st := range statuses {
		if st.Err == "" && st.ID != 0 {
			if seen[st.ID] {
				continue
			}
			seen[st.ID] = true
		}
		out = append(out, st)
	}
	return out
}

// listedMember is what the member list says of a member.
type listedMember struct {
	name    string
	learner bool
}

// memberURLs returns the client URLs of every member in the member list of endpoint, and what
// the list says of the member behind each.
func (c Config) memberURLs(ctx context.Context, endpoint string) (urls []string, listed map[string]listedMember) {
	listed = map[string]listedMember{}
	cli, err := c.Client(ctx, endpoint)
	if err != nil {
		return nil, listed
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, c.commandTimeout())
	defer cancel()
	resp, err := cli.MemberList(ctx, clientv3.WithSerializable())
	if err != nil {
		return nil, listed
	}
	// Learners too: doctor reports them, and ChooseSource never takes one for a snapshot.
	for _, m := range resp.Members {
		urls = append(urls, m.ClientURLs...)
		for _, u := range m.ClientURLs {
			listed[u] = listedMember{name: m.Name, learner: m.IsLearner}
		}
	}
	sort.Strings(urls)
	return urls, listed
}

func (c Config) statusOf(ctx context.Context, endpoints []string) []MemberStatus {
	out := make([]MemberStatus, len(endpoints))
	var wg sync.WaitGroup
	for i, ep := range endpoints {
		wg.Go(func() { out[i] = c.statusOne(ctx, ep) })
	}
	wg.Wait()
	return out
}

func (c Config) statusOne(ctx context.Context, endpoint string) MemberStatus {
	st := MemberStatus{Endpoint: endpoint}
	if err := c.Probe(ctx, endpoint); err != nil {
		st.Err, st.Fault = err.Error(), FaultOf(err)
		return st
	}
	cli, err := c.Client(ctx, endpoint)
	if err != nil {
		// An http:// endpoint is probed without TLS, but the client still loads the files.
		st.Err, st.Fault = fmt.Sprintf("%s: %v", endpoint, err), FaultOf(err)
		return st
	}
	defer cli.Close()
	cctx, cancel := context.WithTimeout(ctx, c.commandTimeout())
	defer cancel()
	resp, err := cli.Status(cctx, endpoint)
	if err != nil {
		st.Err = fmt.Sprintf("%s: status: %v", endpoint, err)
		return st
	}
	st.ID = resp.Header.MemberId
	st.ClusterID = resp.Header.ClusterId
	st.Leader = resp.Leader
	st.Version = resp.Version
	st.DBSize = resp.DbSize
	st.DBSizeInUse = resp.DbSizeInUse
	st.DBSizeQuota = resp.DbSizeQuota
	st.RaftIndex = resp.RaftIndex
	st.AppliedIndex = resp.RaftAppliedIndex
	st.RaftTerm = resp.RaftTerm
	st.IsLearner = resp.IsLearner
	st.Errors = append(st.Errors, resp.Errors...)
	alarms, err := cli.AlarmList(cctx)
	if err == nil {
		for _, a := range alarms.Alarms {
			if a.MemberID == st.ID && a.Alarm != etcdserverpb.AlarmType_NONE {
				st.Alarms = append(st.Alarms, "alarm:"+a.Alarm.String())
			}
		}
	}
	if resp, err := cli.Get(cctx, "/etcdguard/probe", clientv3.WithSerializable(), clientv3.WithCountOnly()); err == nil {
		st.Revision = resp.Header.Revision
	}
	if members, err := cli.MemberList(cctx, clientv3.WithSerializable()); err == nil {
		for _, m := range members.Members {
			if m.ID == st.ID {
				st.Name = m.Name
			}
		}
	}
	return st
}

// ChooseSource picks the member to take a snapshot from: one that answered, raised no alarm and
// is not a learner, with the highest applied raft index; among equals a follower, to spare the
// leader. It returns the candidates best first and, for the first, a sentence saying why it was
// chosen. It is pure: the statuses are its only input.
func ChooseSource(statuses []MemberStatus) (ranked []MemberStatus, why string, err error) {
	var skipped []string
	for _, st := range statuses {
		switch {
		case st.IsLearner && st.Err != "":
			skipped = append(skipped, fmt.Sprintf("%s: learner, not answering", st.Endpoint))
		case st.Err != "":
			skipped = append(skipped, st.Err)
		case len(st.Alarms) > 0:
			skipped = append(skipped, fmt.Sprintf("%s: alarm %s", st.Endpoint, strings.Join(st.Alarms, ",")))
		case len(st.Errors) > 0:
			skipped = append(skipped, fmt.Sprintf("%s: %s", st.Endpoint, strings.Join(st.Errors, ",")))
		case st.IsLearner:
			skipped = append(skipped, fmt.Sprintf("%s: learner", st.Endpoint))
		default:
			ranked = append(ranked, st)
		}
	}
	if len(ranked) == 0 {
		return nil, "", fmt.Errorf("%w: no etcd member can be used: %s", ErrUnavailable, strings.Join(skipped, "; "))
	}
	applied := func(s MemberStatus) uint64 {
		if s.AppliedIndex != 0 {
			return s.AppliedIndex
		}
		return s.RaftIndex
	}
	sort.SliceStable(ranked, func(i, j int) bool {
		a, b := ranked[i], ranked[j]
		if applied(a) != applied(b) {
			return applied(a) > applied(b)
		}
		return !a.IsLeader() && b.IsLeader()
	})
	best := ranked[0]
	role := "a follower"
	if best.IsLeader() {
		role = "the leader"
	}
	why = fmt.Sprintf("highest applied index %d among %d usable member(s), no alarm, %s", applied(best), len(ranked), role)
	if len(skipped) > 0 {
		why += fmt.Sprintf("; skipped %d: %s", len(skipped), strings.Join(skipped, "; "))
	}
	return ranked, why, nil
}

// ClusterClient returns one etcd client over every endpoint, for work that must outlive any one
// member: the delta log's watch moves to another member when its own fails (with
// clientv3.WithRequireLeader, also when it loses the leader). Unlike Client it does not wait for
// a connection: the first call fails, or waits, as the cluster is.
func (c Config) ClusterClient(ctx context.Context) (*clientv3.Client, error) {
	cfg, err := c.clientConfig(ctx, c.Endpoints)
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", strings.Join(c.Endpoints, ","), err)
	}
	return cli, nil
}
