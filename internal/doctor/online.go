package doctor

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdguard/etcdguard/internal/cluster"
	"github.com/etcdguard/etcdguard/internal/etcdx"
)

// Thresholds of the online checks.
const (
	lagWarnEntries   = 1000 // applied index behind the most advanced member
	fragmentedShare  = 0.5  // free share of the database file worth a defrag
	fragmentedMinDB  = 100 << 20
	quotaWarnShare   = 0.8
	quotaCritShare   = 0.95
	defaultQuotaSize = 2 << 30 // etcd's default --quota-backend-bytes
)

// checkMembers asks every endpoint (and every member the member list names) for its status, and
// reports unreachable members, quorum, leader, lag, learners, alarms, sizes and versions.
func checkMembers(ctx context.Context, cfg etcdx.Config) ([]Finding, []etcdx.MemberStatus) {
	var fs []Finding
	statuses := cfg.Status(ctx, true)
	var up []etcdx.MemberStatus
	for _, st := range statuses {
		if st.Err != "" {
			f := endpointFinding(st)
			if st.IsLearner {
				// It does not vote: the cluster does without it.
				f.Severity, f.Summary = Warning, "a learner does not answer: "+f.Summary
			}
			fs = append(fs, f)
			continue
		}
		up = append(up, st)
	}
	if len(up) == 0 {
		fs = append(fs, Finding{Severity: Critical, Check: "quorum", Subject: "cluster",
			Summary:  fmt.Sprintf("no member answers (%d endpoint(s) tried)", len(statuses)),
			Evidence: []string{"the etcd client (kube-apiserver: 'etcd3 client is not responding') sees the same"},
			Next:     "find out why each member is down (findings above); if etcd does not start, run: etcdguard doctor --data-dir DIR (one per member) on each host"})
		return fs, statuses
	}
	// Learners answer but do not vote: they count for neither the cluster's size nor its quorum.
	voters := slices.DeleteFunc(slices.Clone(up), func(st etcdx.MemberStatus) bool { return st.IsLearner })
	total := clusterSize(ctx, cfg, voters, statuses)
	q := cluster.Quorum(total)
	leaders := map[uint64]bool{}
	var maxApplied uint64
	for _, st := range up {
		if st.Leader != 0 && !st.IsLearner {
			leaders[st.Leader] = true
		}
		maxApplied = max(maxApplied, applied(st))
	}
	var ev []string
	for _, st := range up {
		role := ""
		if st.IsLearner {
			role = ", learner"
		}
		ev = append(ev, fmt.Sprintf("%s (%s%s): term %d, raft index %d, applied %d, revision %d, leader %s, version %s",
			nameOr(st), st.Endpoint, role, st.RaftTerm, st.RaftIndex, applied(st), st.Revision, hexID(st.Leader), st.Version))
	}
	switch {
	case len(voters) < q:
		fs = append(fs, Finding{Severity: Critical, Check: "quorum", Subject: "cluster",
			Summary:  fmt.Sprintf("no quorum: %d of %d members answer, %d are needed", len(voters), total, q),
			Evidence: ev,
			Next:     "bring back the members that are down (findings above); if their data is damaged: etcdguard recover --dry-run --config CONFIG"})
	case len(leaders) != 1 || leaders[0]:
		fs = append(fs, Finding{Severity: Critical, Check: "quorum", Subject: "cluster",
			Summary:  fmt.Sprintf("%d of %d members answer but they report %d leader(s)", len(voters), total, len(leaders)),
			Evidence: ev, Next: "wait a few seconds and run doctor again; if it persists, check the network between members (peer port 2380)"})
	default:
		sev, summary := OK, fmt.Sprintf("quorum: %d of %d members answer, one leader", len(voters), total)
		if len(voters) < total {
			sev = Warning
			summary = fmt.Sprintf("quorum holds, but %d of %d members are down: one more failure stops the cluster", total-len(voters), total)
		}
		fs = append(fs, Finding{Severity: sev, Check: "quorum", Subject: "cluster", Summary: summary, Evidence: ev,
			Next: nextIf(sev != OK, "bring back the members that are down (findings above)")})
	}
	for _, st := range up {
		fs = append(fs, memberFindings(st, maxApplied)...)
		if len(st.Errors) > 0 {
			fs = append(fs, Finding{Severity: Critical, Check: "member", Subject: nameOr(st) + " " + st.Endpoint,
				Summary: "the member reports: " + strings.Join(st.Errors, "; "),
				Next:    "bring back enough members for quorum (findings above)"})
		}
	}
	return fs, statuses
}

func memberFindings(st etcdx.MemberStatus, maxApplied uint64) []Finding {
	var fs []Finding
	subj := nameOr(st) + " " + st.Endpoint
	if lag := maxApplied - applied(st); lag > lagWarnEntries && !st.IsLearner {
		fs = append(fs, Finding{Severity: Warning, Check: "lag", Subject: subj,
			Summary:  fmt.Sprintf("%d entries behind the most advanced member", lag),
			Evidence: []string{fmt.Sprintf("applied %d, most advanced %d", applied(st), maxApplied)},
			Next:     "check the member's disk (WAL fsync latency) and network; etcdguard doctor shows both"})
	}
	if st.IsLearner {
		// A learner behind is catching up, which is what learners do: no warning.
		f := Finding{Severity: OK, Check: "learner", Subject: subj, Summary: "a learner: it receives data but does not vote",
			Evidence: []string{fmt.Sprintf("applied %d, most advanced member %d (%d behind)", applied(st), maxApplied, maxApplied-applied(st))},
			Next:     fmt.Sprintf("once it has caught up, make it a voting member: etcdctl member promote %x", st.ID)}
		fs = append(fs, f)
	}
	for _, a := range st.Alarms {
		switch {
		case strings.Contains(a, "NOSPACE"):
			fs = append(fs, Finding{Severity: Critical, Check: "alarm", Subject: subj,
				Summary:  "NOSPACE alarm: the database reached its quota; the cluster accepts reads and deletes only",
				Evidence: []string{fmt.Sprintf("db size %s, in use %s, quota %s", mib(st.DBSize), mib(st.DBSizeInUse), quotaText(st.DBSizeQuota))},
				Next: fmt.Sprintf("etcdctl --endpoints %s compact %d && etcdctl --endpoints %s defrag && etcdctl --endpoints %s alarm disarm (or raise --quota-backend-bytes)",
					st.Endpoint, st.Revision, st.Endpoint, st.Endpoint)})
		case strings.Contains(a, "CORRUPT"):
			fs = append(fs, Finding{Severity: Critical, Check: "alarm", Subject: subj,
				Summary: "CORRUPT alarm: this member's data differs from the others'",
				Next:    "replace the member: etcdguard recover --dry-run --config CONFIG"})
		default:
			fs = append(fs, Finding{Severity: Warning, Check: "alarm", Subject: subj, Summary: "alarm " + a,
				Next: "etcdctl --endpoints " + st.Endpoint + " alarm list"})
		}
	}
	quota := st.DBSizeQuota
	if quota == 0 {
		quota = defaultQuotaSize
	}
	if share := float64(st.DBSize) / float64(quota); share >= quotaWarnShare {
		sev := Warning
		if share >= quotaCritShare {
			sev = Critical
		}
		fs = append(fs, Finding{Severity: sev, Check: "db-size", Subject: subj,
			Summary:  fmt.Sprintf("database at %.0f%% of its quota", 100*share),
			Evidence: []string{fmt.Sprintf("db size %s, quota %s", mib(st.DBSize), quotaText(st.DBSizeQuota))},
			Next:     fmt.Sprintf("compact and defragment (etcdctl --endpoints %s defrag), or raise --quota-backend-bytes", st.Endpoint)})
	}
	if st.DBSize >= fragmentedMinDB && st.DBSizeInUse > 0 {
		if free := 1 - float64(st.DBSizeInUse)/float64(st.DBSize); free >= fragmentedShare {
			fs = append(fs, Finding{Severity: Warning, Check: "fragmentation", Subject: subj,
				Summary:  fmt.Sprintf("%.0f%% of the database file is free pages", 100*free),
				Evidence: []string{fmt.Sprintf("db size %s, in use %s", mib(st.DBSize), mib(st.DBSizeInUse))},
				Next:     fmt.Sprintf("etcdctl --endpoints %s defrag (one member at a time, followers first)", st.Endpoint)})
		}
	}
	fs = append(fs, versionFinding(st, subj)...)
	return fs
}

// versionFinding warns about etcd versions with known data-loss bugs or below the production
// minimum.
func versionFinding(st etcdx.MemberStatus, subj string) []Finding {
	maj, min, patch, ok := parseVersion(st.Version)
	if !ok || maj != 3 {
		return nil
	}
	switch {
	case min == 5 && patch <= 2:
		return []Finding{{Severity: Critical, Check: "version", Subject: subj,
			Summary:  fmt.Sprintf("etcd %s can lose committed writes when it crashes (data inconsistency fixed in 3.5.3)", st.Version),
			Evidence: []string{"etcd 3.5.0 to 3.5.2 are not recommended for production"},
			Next:     "upgrade to the newest 3.5 patch release, one member at a time"}}
	case min < 5 || (min == 5 && patch < 6):
		return []Finding{{Severity: Warning, Check: "version", Subject: subj,
			Summary: fmt.Sprintf("etcd %s is below 3.5.6, the minimum recommended for production", st.Version),
			Next:    "upgrade to the newest 3.5 or 3.6 patch release, one member at a time"}}
	}
	return nil
}

func parseVersion(v string) (maj, min, patch int, ok bool) {
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	if len(parts) != 3 {
		return 0, 0, 0, false
	}
	var err1, err2, err3 error
	maj, err1 = strconv.Atoi(parts[0])
	min, err2 = strconv.Atoi(parts[1])
	patch, err3 = strconv.Atoi(strings.SplitN(parts[2], "-", 2)[0])
	return maj, min, patch, err1 == nil && err2 == nil && err3 == nil
}

// endpointFinding explains an endpoint that could not be used. The reason comes from the probe
// (TCP, TLS, certificates), which already names the thing and the fix; the next action is
// chosen from the fault the probe found.
func endpointFinding(st etcdx.MemberStatus) Finding {
	f := Finding{Severity: Critical, Check: "endpoint", Subject: st.Endpoint, Summary: st.Err, Next: nextForFault[st.Fault]}
	switch {
	case st.Fault == etcdx.FaultRefused:
		f.Summary = st.Endpoint + ": connection refused: etcd is not running on that host (kube-apiserver reports 'dial tcp ...: connect: connection refused')"
	case f.Next == "":
		f.Next = "etcdctl --endpoints " + st.Endpoint + " endpoint health, and the member's logs"
	}
	return f
}

// nextForFault is the next action for each fault an endpoint probe tells apart (read only).
var nextForFault = map[etcdx.Fault]string{
	etcdx.FaultRefused:               "on that host: systemctl status etcd / crictl ps -a | grep etcd, and its logs; if etcd fails to start, run: etcdguard doctor --data-dir /var/lib/etcd",
	etcdx.FaultClientCertExpired:     "renew the client certificate: kubeadm certs renew etcd-healthcheck-client apiserver-etcd-client; if the date is wrong, fix the clock first",
	etcdx.FaultServerCertExpired:     "renew the server certificates (kubeadm certs renew etcd-server etcd-peer) and restart etcd; if the date is wrong, fix the clock first",
	etcdx.FaultClientCertNotYetValid: "fix the clock (timedatectl, chronyc tracking), then try again",
	etcdx.FaultServerCertNotYetValid: "fix the clock (timedatectl, chronyc tracking), then try again",
	etcdx.FaultUnknownAuthority:      "pass etcd's CA: --cacert /etc/kubernetes/pki/etcd/ca.crt",
	etcdx.FaultCANotYetValid:         "fix the clock (timedatectl, chronyc tracking): etcd's CA is not valid yet by this host's clock",
	etcdx.FaultCAExpired: "if the date is wrong, fix the clock; otherwise issue a new etcd CA and re-issue every etcd certificate from it " +
		"(kubeadm init phase certs etcd-ca, kubeadm certs renew etcd-server etcd-peer etcd-healthcheck-client apiserver-etcd-client)",
	etcdx.FaultCAFile:             "pass a readable PEM file holding etcd's CA certificate: --cacert /etc/kubernetes/pki/etcd/ca.crt",
	etcdx.FaultServerCertUsage:    "re-issue the member's server certificate with the serverAuth usage (kubeadm certs renew etcd-server), then restart etcd",
	etcdx.FaultSANMismatch:        "use an endpoint address listed in the certificate, or re-issue the certificate with that address",
	etcdx.FaultClientCertRejected: "use a client certificate signed by etcd's CA: --cert/--key /etc/kubernetes/pki/etcd/healthcheck-client.{crt,key}",
	etcdx.FaultClientCertRequired: "use a client certificate signed by etcd's CA: --cert/--key /etc/kubernetes/pki/etcd/healthcheck-client.{crt,key}",
	etcdx.FaultKeyMismatch:        "pass the key issued with the client certificate: --key /etc/kubernetes/pki/etcd/healthcheck-client.key for --cert /etc/kubernetes/pki/etcd/healthcheck-client.crt",
	etcdx.FaultClientCertFile:     "pass a readable PEM client certificate and key: --cert/--key /etc/kubernetes/pki/etcd/healthcheck-client.{crt,key}",
	etcdx.FaultTimeout:            "check that the host is up and that port 2379 is open from here (firewall, routing)",
	etcdx.FaultHung:               "on that host: is etcd hung (ps, its logs, iostat -x 1 for a stalled disk)? restart it; if it does not start, run: etcdguard doctor --data-dir /var/lib/etcd",
	etcdx.FaultClientCertUsage:    "use a client certificate, whose extended key usage includes clientAuth: --cert/--key /etc/kubernetes/pki/etcd/healthcheck-client.{crt,key}",
	etcdx.FaultDNS:                "fix the endpoint's host name or DNS",
	etcdx.FaultNotTLS:             "use an http:// endpoint, or enable TLS on the member",
	etcdx.FaultBadEndpoint:        "give endpoints as URLs: --endpoints https://10.0.0.1:2379,https://10.0.0.2:2379",
}

// memberCount is the size of the cluster from the member list of a member that answers.
func memberCount(ctx context.Context, cfg etcdx.Config, up []etcdx.MemberStatus) int {
	for _, st := range up {
		cli, err := cfg.Client(ctx, st.Endpoint)
		if err != nil {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		resp, err := cli.MemberList(cctx, clientv3.WithSerializable())
		cancel()
		cli.Close()
		if err == nil {
			n := 0
			for _, m := range resp.Members {
				if !m.IsLearner {
					n++
				}
			}
			return n
		}
	}
	return len(up)
}

// clusterSize is the number of voting members: from the member list when a member gives it,
// otherwise the number of distinct endpoints asked.
func clusterSize(ctx context.Context, cfg etcdx.Config, up, all []etcdx.MemberStatus) int {
	asked := 0
	for _, st := range all {
		if !st.IsLearner {
			asked++
		}
	}
	return max(memberCount(ctx, cfg, up), asked)
}

// checkHashKV compares every reachable member's HashKV at one revision.
func checkHashKV(ctx context.Context, cfg etcdx.Config, statuses []etcdx.MemberStatus) []Finding {
	var up []etcdx.MemberStatus
	var rev int64
	for _, st := range statuses {
		if st.Err == "" && !st.IsLearner {
			up = append(up, st)
			if rev == 0 || (st.Revision > 0 && st.Revision < rev) {
				rev = st.Revision
			}
		}
	}
	if len(up) < 2 || rev == 0 {
		return nil
	}
	hashes := map[string]uint32{}
	var ev []string
	for _, st := range up {
		cli, err := cfg.Client(ctx, st.Endpoint)
		if err != nil {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		h, err := cli.HashKV(cctx, st.Endpoint, rev)
		cancel()
		cli.Close()
		if err != nil {
			ev = append(ev, fmt.Sprintf("%s: HashKV at %d failed: %v", nameOr(st), rev, err))
			continue
		}
		hashes[nameOr(st)] = h.Hash
		ev = append(ev, fmt.Sprintf("%s: %d", nameOr(st), h.Hash))
	}
	sort.Strings(ev)
	distinct := map[uint32]bool{}
	for _, h := range hashes {
		distinct[h] = true
	}
	if len(distinct) > 1 {
		f := Finding{Severity: Critical, Check: "hashkv", Subject: "cluster",
			Summary: fmt.Sprintf("members hold different data at revision %d", rev), Evidence: ev,
			Next: "find the odd member out (evidence) and replace it: etcdguard recover --dry-run --config CONFIG"}
		if odd := oddOnesOut(hashes); len(odd) > 0 {
			f.Summary = fmt.Sprintf("%s hold(s) different data from the other %d members at revision %d", strings.Join(odd, ", "), len(hashes)-len(odd), rev)
			f.Next = fmt.Sprintf("replace %s (removed and added back empty, it copies the others' data): etcdguard recover --dry-run --config CONFIG", strings.Join(odd, ", "))
		}
		return []Finding{f}
	}
	return []Finding{{Severity: OK, Check: "hashkv", Subject: "cluster",
		Summary: fmt.Sprintf("%d members agree at revision %d", len(hashes), rev), Evidence: ev}}
}

// oddOnesOut returns the members whose hash differs from the one a majority of them holds,
// sorted; nil when no hash has a majority.
func oddOnesOut(hashes map[string]uint32) []string {
	count := map[uint32]int{}
	for _, h := range hashes {
		count[h]++
	}
	for h, n := range count {
		if n*2 <= len(hashes) {
			continue
		}
		var odd []string
		for name, hh := range hashes {
			if hh != h {
				odd = append(odd, name)
			}
		}
		sort.Strings(odd)
		return odd
	}
	return nil
}

func applied(st etcdx.MemberStatus) uint64 {
	if st.AppliedIndex != 0 {
		return st.AppliedIndex
	}
	return st.RaftIndex
}

func nameOr(st etcdx.MemberStatus) string {
	if st.Name != "" {
		return st.Name
	}
	return hexID(st.ID)
}

func hexID(id uint64) string { return fmt.Sprintf("%016x", id) }

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func quotaText(q int64) string {
	if q == 0 {
		return "unknown (etcd 3.5 does not report it; default 2 GiB)"
	}
	return mib(q)
}

func nextIf(cond bool, next string) string {
	if cond {
		return next
	}
	return ""
}
