// Package layering holds the test that keeps etcdguard's imports one-way:
// cmd -> cli | agent -> capabilities -> cluster -> repository -> backend -> foundations.
// docs/design.md, "Package map", lists the packages of each layer.
package layering

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const module = "github.com/etcdguard/etcdguard/"

// layers ranks etcdguard's packages: a package may import packages of its own layer or of deeper
// (higher-numbered) ones, never of a layer above it. A package missing here fails the test, so
// that a new package is placed on purpose.
var layers = map[string]int{
	"cmd/etcdguard": 0,

	// The CLI and the agent share a layer: the agent command in internal/cli wires the agent,
	// and the agent never reaches back into the CLI (forbidden, below).
	"internal/cli": 1, "internal/agent": 1,

	"internal/snapshot": 2, "internal/restore": 2, "internal/doctor": 2, "internal/config": 2, "internal/certs": 2,
	// The delta log's segment format: what the agent writes and point-in-time restore replays.
	"internal/delta": 2, "internal/deltalog": 2, "internal/retention": 2, "internal/policy": 2,
	// Restore drills: the restore of a backup into a scratch member of its own, and its checks.
	"internal/drill": 2,
	// Carrying out the retention policy: what the prune command and the agent call.
	"internal/prune": 2,

	// The cluster: its description, how members are stopped and started, what is known of each
	// member and what a quorum of them can do. A layer of its own below the capabilities, so that
	// doctor, recover and config share it and it can never reach up into any of them (which would
	// let one capability's view of a member leak into the others); above the repository, which
	// stores backups and knows nothing of members.
	"internal/cluster": 3,

	"internal/repository": 4,

	"internal/backend": 5, "internal/backend/local": 5, "internal/backend/s3": 5, "internal/backend/backendtest": 5, "internal/backend/retry": 5,

	"internal/etcdx": 6, "internal/datadir": 6, "internal/atomicfile": 6, "internal/failpoint": 6,
	"internal/proc": 6, "internal/redact": 6, "internal/scratch": 6,

	// Test helpers: real etcd clusters and MinIO, and the faults only tests inject. They stand
	// beside the layers (testHelper): they may import any shipped package, and none imports them.
	"internal/testcluster": 0, "internal/testenv": 0, "internal/testrepo": 0,
}

// testHelper are the packages only tests may import.
var testHelper = map[string]bool{"internal/testcluster": true, "internal/testenv": true, "internal/testrepo": true}

// forbidden are imports between packages that the layers alone allow but that must not exist.
var forbidden = map[[2]string]string{
	{"internal/config", "internal/restore"}: "config describes settings; the cluster description is internal/cluster's",
	{"internal/doctor", "internal/restore"}: "doctor and recover share internal/cluster instead",
	{"internal/agent", "internal/cli"}:      "the CLI wires the agent; the agent takes its settings as values, never flags",
}

// known are today's violations, each to be removed by the issue named; the test fails when one
// of them disappears too, so that this list shrinks with the code.
var known = map[[2]string]string{}

// violations returns every import of graph (package -> its imports, both relative to the module)
// that goes up the layers, reaches a test helper from shipped code, or is forbidden.
func violations(graph map[string][]string) []string {
	var out []string
	for pkg, imports := range graph {
		from, ok := layers[pkg]
		if !ok {
			out = append(out, fmt.Sprintf("%s is in no layer: add it to layers", pkg))
			continue
		}
		for _, imp := range imports {
			to, ok := layers[imp]
			switch {
			case !ok:
				out = append(out, fmt.Sprintf("%s imports %s, which is in no layer", pkg, imp))
			case testHelper[imp] && !testHelper[pkg]:
				out = append(out, fmt.Sprintf("%s imports the test helper %s", pkg, imp))
			case to < from:
				out = append(out, fmt.Sprintf("%s imports %s, against the direction of the layers", pkg, imp))
			case forbidden[[2]string{pkg, imp}] != "":
				out = append(out, fmt.Sprintf("%s imports %s: %s", pkg, imp, forbidden[[2]string{pkg, imp}]))
			}
		}
	}
	sort.Strings(out)
	return out
}

func TestViolations(t *testing.T) {
	cases := []struct {
		name  string
		graph map[string][]string
		want  []string
	}{
		{"the direction of the layers", map[string][]string{
			"cmd/etcdguard": {"internal/cli"}, "internal/cli": {"internal/snapshot"}, "internal/snapshot": {"internal/repository", "internal/etcdx"},
			"internal/repository": {"internal/backend/local"}, "internal/backend/local": {"internal/backend", "internal/atomicfile"},
		}, nil},
		{"a deliberately wrong import: the backend reaching up into the repository", map[string][]string{
			"internal/backend/s3": {"internal/repository"},
		}, []string{"internal/backend/s3 imports internal/repository, against the direction of the layers"}},
		{"a capability importing the CLI", map[string][]string{"internal/restore": {"internal/cli"}},
			[]string{"internal/restore imports internal/cli, against the direction of the layers"}},
		{"shipped code importing a test helper", map[string][]string{"internal/snapshot": {"internal/testenv"}},
			[]string{"internal/snapshot imports the test helper internal/testenv"}},
		{"the CLI importing a test helper", map[string][]string{"internal/cli": {"internal/testcluster"}},
			[]string{"internal/cli imports the test helper internal/testcluster"}},
		{"a test helper importing shipped code", map[string][]string{"internal/testcluster": {"internal/scratch", "internal/etcdx"}}, nil},
		{"a forbidden import within a layer", map[string][]string{"internal/doctor": {"internal/restore"}},
			[]string{"internal/doctor imports internal/restore: doctor and recover share internal/cluster instead"}},
		{"the cluster package reaching up into a capability", map[string][]string{"internal/cluster": {"internal/restore"}},
			[]string{"internal/cluster imports internal/restore, against the direction of the layers"}},
		{"the agent reaching back into the CLI", map[string][]string{"internal/agent": {"internal/cli"}},
			[]string{"internal/agent imports internal/cli: the CLI wires the agent; the agent takes its settings as values, never flags"}},
		{"the CLI wiring the agent", map[string][]string{"internal/cli": {"internal/agent"}, "internal/agent": {"internal/snapshot", "internal/config"}}, nil},
		{"a package in no layer", map[string][]string{"internal/types": {"internal/backend"}},
			[]string{"internal/types is in no layer: add it to layers"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, violations(tc.graph))
		})
	}
}

// TestImportDirection checks etcdguard's real import graph (shipped code, not tests).
func TestImportDirection(t *testing.T) {
	out, err := exec.CommandContext(t.Context(), "go", "list", "-json", module+"...").Output()
	require.NoError(t, err, "go list")
	graph := map[string][]string{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p struct {
			ImportPath string
			Imports    []string
		}
		require.NoError(t, dec.Decode(&p))
		pkg, ok := strings.CutPrefix(p.ImportPath, module)
		if !ok || pkg == "internal/layering" || strings.HasPrefix(pkg, "bench") || strings.HasPrefix(pkg, "tools") {
			continue
		}
		graph[pkg] = nil
		for _, imp := range p.Imports {
			if rel, ok := strings.CutPrefix(imp, module); ok {
				graph[pkg] = append(graph[pkg], rel)
			}
		}
	}
	require.NotEmpty(t, graph)
	var unexpected []string
	seen := map[string]bool{}
	for _, v := range violations(graph) {
		isKnown := false
		for k := range known {
			if strings.HasPrefix(v, k[0]+" imports ") && strings.Contains(v, " "+k[1]) {
				isKnown, seen[k[0]+" "+k[1]] = true, true
			}
		}
		if !isKnown {
			unexpected = append(unexpected, v)
		}
	}
	require.Empty(t, unexpected, "imports against the layers")
	for k, why := range known {
		require.True(t, seen[k[0]+" "+k[1]], "%s no longer imports %s (%s): remove it from known", k[0], k[1], why)
	}
}
