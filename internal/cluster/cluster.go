// Package cluster is what etcdguard knows of an etcd cluster: its description (members, where
// they listen and keep their data, how each is stopped and started), what is known of each member
// at one moment (its assessment), and what a quorum of them can do. doctor and recover both
// judge members here, so the two can never disagree about one.
package cluster

import (
	"fmt"
	"net/url"
	"path/filepath"
	"sort"
	"strings"

	"github.com/etcdguard/etcdguard/internal/redact"
)

// Member describes one member of the cluster to recover: where it listens, where its data is, and
// how to stop and start it (one of SystemdUnit, StaticPodManifest, or StartCommand/StopCommand).
type Member struct {
	Name      string `yaml:"name" json:"name"`
	PeerURL   string `yaml:"peer-url" json:"peer_url"`
	ClientURL string `yaml:"client-url" json:"client_url"`
	DataDir   string `yaml:"data-dir" json:"data_dir"`
	// Host is the host name of the machine the member runs on. When it is set and is not this
	// machine, the member's data dir is not read from here: a plan made on another host cannot
	// see it, and never treats it as lost.
	Host string `yaml:"host,omitempty" json:"host,omitempty"`
	// SystemdUnit is the member's unit, such as etcd.service.
	SystemdUnit string `yaml:"systemd-unit,omitempty" json:"systemd_unit,omitempty"`
	// StaticPodManifest is the member's kubeadm static-pod manifest, such as
	// /etc/kubernetes/manifests/etcd.yaml: moving it out stops the pod, moving it back starts it.
	StaticPodManifest string `yaml:"static-pod-manifest,omitempty" json:"static_pod_manifest,omitempty"`
	// StartCommand and StopCommand are shell commands (run with sh -c). The start command must
	// return once etcd is started (run it in the background or through a supervisor), and must
	// not set --initial-cluster-state, --initial-cluster or --initial-cluster-token itself:
	// etcdguard passes them as ETCD_INITIAL_CLUSTER_STATE, ETCD_INITIAL_CLUSTER and
	// ETCD_INITIAL_CLUSTER_TOKEN, which etcd reads when the flags are absent.
	StartCommand string `yaml:"start-command,omitempty" json:"start_command,omitempty"`
	StopCommand  string `yaml:"stop-command,omitempty" json:"stop_command,omitempty"`
}

// Cluster is the description of the cluster `etcdguard recover` works on.
type Cluster struct {
	Members []Member `yaml:"members" json:"members"`
	// ControlPlaneManifests are static-pod manifests of kube-apiserver, controller-manager and
	// scheduler that recover moves out before a restore and back after it, when asked.
	ControlPlaneManifests []string `yaml:"control-plane-manifests,omitempty" json:"control_plane_manifests,omitempty"`
}

// Validate checks the description without changing it: names unique, URLs and paths well
// formed, exactly one way to control each member.
func (c Cluster) Validate() error {
	if len(c.Members) == 0 {
		return fmt.Errorf("no cluster members described: list them under cluster.members in --config, or give --member")
	}
	names, peers, clients, dirs := map[string]bool{}, map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, m := range c.Members {
		if m.Name == "" {
			return fmt.Errorf("a cluster member has no name")
		}
		if names[m.Name] {
			return fmt.Errorf("two cluster members are named %q", m.Name)
		}
		names[m.Name] = true
		for what, u := range map[string]string{"peer-url": m.PeerURL, "client-url": m.ClientURL} {
			pu, err := url.Parse(u)
			if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
				return fmt.Errorf("member %s: %s %s is not an http(s) URL such as https://10.0.0.1:2379", m.Name, what, redact.URL(u))
			}
			// etcd refuses any path in its URLs, a lone "/" included: refused here, before
			// anything is stopped, rather than by etcd in the middle of a recovery.
			if pu.User != nil || pu.RawQuery != "" || pu.ForceQuery || pu.Fragment != "" || pu.Path != "" || pu.RawPath != "" {
				return fmt.Errorf("member %s: %s %s carries credentials, a path or parameters, which etcd's URLs do not take: give scheme://host:port", m.Name, what, redact.URL(u))
			}
		}
		if peers[urlKey(m.PeerURL)] {
			return fmt.Errorf("member %s: peer-url %s is used twice", m.Name, m.PeerURL)
		}
		peers[urlKey(m.PeerURL)] = true
		if clients[urlKey(m.ClientURL)] {
			return fmt.Errorf("member %s: client-url %s is used twice: each member answers on its own", m.Name, m.ClientURL)
		}
		clients[urlKey(m.ClientURL)] = true
		if !filepath.IsAbs(m.DataDir) {
			return fmt.Errorf("member %s: data-dir %q must be an absolute path", m.Name, m.DataDir)
		}
		if dirs[m.Host+":"+filepath.Clean(m.DataDir)] {
			return fmt.Errorf("member %s: data-dir %s is used twice on one host (give each member its host)", m.Name, m.DataDir)
		}
		dirs[m.Host+":"+filepath.Clean(m.DataDir)] = true
		ways := 0
		if m.SystemdUnit != "" {
			ways++
		}
		if m.StaticPodManifest != "" {
			ways++
		}
		if m.StartCommand != "" || m.StopCommand != "" {
			ways++
			if m.StartCommand == "" || m.StopCommand == "" {
				return fmt.Errorf("member %s: give both start-command and stop-command", m.Name)
			}
		}
		if ways != 1 {
			return fmt.Errorf("member %s: say how to stop and start it with exactly one of systemd-unit, static-pod-manifest, or start-command and stop-command", m.Name)
		}
	}
	return nil
}

// urlKey is a URL as two URLs naming one listener compare: scheme and host without regard to
// case, without a trailing slash.
func urlKey(u string) string {
	pu, err := url.Parse(u)
	if err != nil {
		return u
	}
	return strings.ToLower(pu.Scheme) + "://" + strings.ToLower(pu.Host)
}

// controlKeys are the description's keys that say how a member is stopped and started.
var controlKeys = map[string]bool{"systemd-unit": true, "static-pod-manifest": true, "start-command": true, "stop-command": true}

// DescriptionDiff lists, member by member, how a description of the cluster differs from the one a
// plan was made for; none means the same cluster: the same members, URLs, data dirs and hosts.
// How a member is stopped and started may change (that is how a failed start is fixed), so it is
// not compared. Both are compared in their clean form.
func DescriptionDiff(planned, now Cluster) []string {
	planned, now = planned.Clean(), now.Clean()
	var diffs []string
	for _, a := range planned.Members {
		b, ok := now.Member(a.Name)
		if !ok {
			diffs = append(diffs, fmt.Sprintf("member %s is in the plan, not in the description", a.Name))
			continue
		}
		fa, fb := memberFields(&a), memberFields(&b)
		keys := make([]string, 0, len(fa))
		for k := range fa {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if controlKeys[k] {
				continue
			}
			if *fa[k] != *fb[k] {
				was, is := *fa[k], *fb[k]
				if strings.HasSuffix(k, "-url") {
					was, is = redact.URL(was), redact.URL(is)
				}
				diffs = append(diffs, fmt.Sprintf("member %s: %s %q in the plan, %q now", a.Name, k, was, is))
			}
		}
	}
	for _, b := range now.Members {
		if _, ok := planned.Member(b.Name); !ok {
			diffs = append(diffs, fmt.Sprintf("member %s is in the description, not in the plan", b.Name))
		}
	}
	return diffs
}

// Member returns the member of a name.
func (c Cluster) Member(name string) (Member, bool) {
	for _, m := range c.Members {
		if m.Name == name {
			return m, true
		}
	}
	return Member{}, false
}

// InitialCluster returns etcd's --initial-cluster for the members: name=peer-url, by name.
func (c Cluster) InitialCluster() string {
	parts := make([]string, 0, len(c.Members))
	for _, m := range c.Members {
		parts = append(parts, m.Name+"="+m.PeerURL)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// Quorum is the number of members this cluster needs to elect a leader.
func (c Cluster) Quorum() int { return Quorum(len(c.Members)) }

// Clean returns the description with every path in its clean form, so that "/var/lib/etcd/" and
// "/var/lib/etcd" are one data dir: a trailing slash would put the restore marker inside the
// data dir and make every later run take the restored data for somebody else's.
func (c Cluster) Clean() Cluster {
	out := c
	out.Members = make([]Member, len(c.Members))
	for i, m := range c.Members {
		m.DataDir = cleanPath(m.DataDir)
		m.StaticPodManifest = cleanPath(m.StaticPodManifest)
		m.Host = strings.TrimSpace(m.Host)
		out.Members[i] = m
	}
	out.ControlPlaneManifests = nil
	for _, p := range c.ControlPlaneManifests {
		out.ControlPlaneManifests = append(out.ControlPlaneManifests, cleanPath(p))
	}
	return out
}

func cleanPath(p string) string {
	if p == "" {
		return ""
	}
	return filepath.Clean(p)
}

// SameHost compares host names as people write them: without regard to case, and a short name
// (cp1) equal to a fully qualified one it begins (cp1.example.com). Two fully qualified names are
// compared whole: cp1.dc1.example is not cp1.dc2.example.
func SameHost(a, b string) bool {
	if strings.EqualFold(a, b) {
		return true
	}
	sa, _, aQualified := strings.Cut(a, ".")
	sb, _, bQualified := strings.Cut(b, ".")
	return aQualified != bQualified && sa != "" && strings.EqualFold(sa, sb)
}
