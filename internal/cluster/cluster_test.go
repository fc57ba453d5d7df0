package cluster

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

func testCluster(n int) Cluster {
	var c Cluster
	for i := 1; i <= n; i++ {
		c.Members = append(c.Members, Member{
			Name: fmt.Sprintf("m%d", i), PeerURL: fmt.Sprintf("https://10.0.0.%d:2380", i),
			ClientURL: fmt.Sprintf("https://10.0.0.%d:2379", i), DataDir: fmt.Sprintf("/var/lib/etcd%d", i),
			SystemdUnit: "etcd.service",
		})
	}
	return c
}

func TestParseMemberFlag(t *testing.T) {
	m, err := ParseMemberFlag("name=m1,peer-url=https://10.0.0.1:2380,client-url=https://10.0.0.1:2379,data-dir=/var/lib/etcd,start-command=/usr/local/bin/start-etcd a,b,stop-command=pkill -f etcd")
	require.NoError(t, err)
	require.Equal(t, Member{Name: "m1", PeerURL: "https://10.0.0.1:2380", ClientURL: "https://10.0.0.1:2379", DataDir: "/var/lib/etcd",
		StartCommand: "/usr/local/bin/start-etcd a,b", StopCommand: "pkill -f etcd"}, m)
	_, err = ParseMemberFlag("nom=m1")
	require.ErrorContains(t, err, "expected key=value")
}

func TestValidateCluster(t *testing.T) {
	c := testCluster(3)
	require.NoError(t, c.Validate())
	bad := testCluster(3)
	bad.Members[1].PeerURL = bad.Members[0].PeerURL
	require.ErrorContains(t, bad.Validate(), "used twice")
	bad = testCluster(3)
	bad.Members[2].SystemdUnit = ""
	require.ErrorContains(t, bad.Validate(), "exactly one of")
	bad = testCluster(3)
	bad.Members[0].DataDir = "relative"
	require.ErrorContains(t, bad.Validate(), "absolute")
	require.Equal(t, "m1=https://10.0.0.1:2380,m2=https://10.0.0.2:2380,m3=https://10.0.0.3:2380", c.InitialCluster())
}

func TestSetEtcdFlags(t *testing.T) {
	manifest := []byte(`apiVersion: v1
kind: Pod
metadata:
  name: etcd
  namespace: kube-system
spec:
  containers:
  - name: etcd
    command:
    - etcd
    - --name=cp1
    - --initial-cluster=cp1=https://10.0.0.1:2380
    - --data-dir=/var/lib/etcd
    image: registry.k8s.io/etcd:3.5.4-0
`)
	out, err := SetEtcdFlags(manifest, map[string]string{"initial-cluster-state": "existing", "initial-cluster": "cp1=https://10.0.0.1:2380,cp2=https://10.0.0.2:2380"})
	require.NoError(t, err)
	require.Contains(t, string(out), "- --initial-cluster=cp1=https://10.0.0.1:2380,cp2=https://10.0.0.2:2380\n")
	require.Contains(t, string(out), "- --initial-cluster-state=existing\n")
	require.Contains(t, string(out), "- --data-dir=/var/lib/etcd\n")
	require.Contains(t, string(out), "image: registry.k8s.io/etcd:3.5.4-0")
}

func TestSameHost(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"cp1", "cp1", true}, {"CP1", "cp1", true}, {"cp1", "cp1.example.com", true}, {"cp1.Example.COM", "cp1", true},
		{"cp1.dc1.example", "cp1.dc2.example", false}, {"cp1.example.com", "CP1.EXAMPLE.COM", true},
		{"cp1", "cp10", false}, {"cp1", "cp1-backup", false}, {".example", "cp1", false},
	} {
		require.Equal(t, tc.want, SameHost(tc.a, tc.b), "%s vs %s", tc.a, tc.b)
	}
}

func TestDescriptionDiffIgnoresControl(t *testing.T) {
	a, b := testCluster(3), testCluster(3)
	b.Members[0].SystemdUnit = "etcd-fixed.service"
	require.Empty(t, DescriptionDiff(a, b), "how a member is started may change between runs")
	b.Members[1].Host = "cp9"
	require.Equal(t, []string{`member m2: host "" in the plan, "cp9" now`}, DescriptionDiff(a, b))
}
