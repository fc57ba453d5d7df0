package main

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/testcluster"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

type doctorOut struct {
	Worst    string `json:"worst"`
	Findings []struct {
		Severity string   `json:"severity"`
		Check    string   `json:"check"`
		Subject  string   `json:"subject"`
		Summary  string   `json:"summary"`
		Evidence []string `json:"evidence"`
		Next     string   `json:"next"`
	} `json:"findings"`
}

func doctorJSON(t *testing.T, wantCode int, args ...string) doctorOut {
	t.Helper()
	r := etcdguard(t, append([]string{"doctor", "-o", "json"}, args...)...)
	require.Equal(t, wantCode, r.code, r.stderr)
	var out doctorOut
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &out), r.stdout)
	return out
}

// find returns the first finding of a check whose summary contains text.
func (d doctorOut) find(t *testing.T, check, text string) (sev, summary, next string, evidence []string) {
	t.Helper()
	for _, f := range d.Findings {
		if f.Check == check && strings.Contains(f.Summary, text) {
			return f.Severity, f.Summary, f.Next, f.Evidence
		}
	}
	t.Fatalf("no %s finding containing %q in %+v", check, text, d.Findings)
	return
}

// TestDoctor produces faults for real on 3-member TLS clusters and checks that doctor names the
// cause and the next command.
func TestDoctor(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			c := startCluster(t, version)
			loadData(t, c, 200, 100)
			repo := filepath.Join(t.TempDir(), "repo")
			saveJSON(t, 0, append([]string{"--target", "file://" + repo}, tlsFlags(c)...)...)

			t.Run("healthy", func(t *testing.T) {
				out := doctorJSON(t, 10, append([]string{"--target", "file://" + repo}, tlsFlags(c)...)...)
				sev, _, _, _ := out.find(t, "quorum", "3 of 3 members answer, one leader")
				require.Equal(t, "ok", sev)
				sev, _, _, _ = out.find(t, "hashkv", "3 members agree")
				require.Equal(t, "ok", sev)
				sev, _, next, _ := out.find(t, "3-2-1", "not kept by the 3-2-1 rule")
				require.Equal(t, "warning", sev, "one local copy only")
				require.Contains(t, next, "snapshot copy")
			})

			t.Run("the incident: a member down (connection refused)", func(t *testing.T) {
				m3 := c.Members()[2]
				require.NoError(t, m3.Kill())
				t.Cleanup(func() { require.NoError(t, m3.Restart(context.Background())) })
				out := doctorJSON(t, 11, append([]string{"--endpoints", strings.Join(c.Endpoints(), ",")}, tlsFlags(c)[2:]...)...)
				sev, summary, next, _ := out.find(t, "endpoint", "connection refused")
				require.Equal(t, "critical", sev)
				require.Contains(t, summary, m3.ClientURL)
				require.Contains(t, next, "systemctl status etcd")
				sev, _, _, _ = out.find(t, "quorum", "quorum holds, but 1 of 3 members are down")
				require.Equal(t, "warning", sev)
			})

			t.Run("the incident: an expired client certificate", func(t *testing.T) {
				now := time.Now()
				cert, key, err := c.PKI.IssueClient("old-client", now.Add(-400*24*time.Hour), now.Add(-2*24*time.Hour))
				require.NoError(t, err)
				out := doctorJSON(t, 11, "--endpoints", c.Endpoints()[0], "--cacert", c.CAFile, "--cert", cert, "--key", key)
				sev, summary, next, _ := out.find(t, "endpoint", "expired on "+now.Add(-2*24*time.Hour).UTC().Format("2006-01-02"))
				require.Equal(t, "critical", sev)
				require.Contains(t, summary, cert)
				require.Contains(t, next, "kubeadm certs renew")
			})

			t.Run("two of three killed: no quorum, who answers, the freshest data dir", func(t *testing.T) {
				ms := c.Members()
				require.NoError(t, ms[0].Kill())
				require.NoError(t, ms[1].Kill())
				t.Cleanup(func() {
					for _, m := range ms[:2] {
						go func() { _ = m.Restart(t.Context()) }()
					}
				})
				before := map[string]map[string]string{}
				for _, m := range ms[:2] {
					before[m.Name] = treeHashes(t, m.DataDir)
				}
				out := doctorJSON(t, 11, append([]string{"--endpoints", strings.Join(c.Endpoints(), ","),
					"--data-dir", ms[0].DataDir, "--data-dir", ms[1].DataDir}, tlsFlags(c)[2:]...)...)
				sev, _, _, evidence := out.find(t, "quorum", "no quorum: 1 of 3 members answer, 2 are needed")
				require.Equal(t, "critical", sev)
				require.Contains(t, strings.Join(evidence, "\n"), ms[2].ClientURL, "the member that answers")
				require.Contains(t, strings.Join(evidence, "\n"), "raft index")
				_, summary, _, evidence := out.find(t, "cluster-data", "data dirs are intact")
				require.Contains(t, summary, "all 2 data dirs are intact")
				require.Contains(t, strings.Join(evidence, "\n"), "freshest intact database")
				for _, m := range ms[:2] {
					require.Equal(t, before[m.Name], treeHashes(t, m.DataDir), "the offline checks change no file")
				}
			})
		})
	}
}

// TestDoctorOffline: torn WAL tails, a corrupt WAL and a damaged database, found by reading the
// data dirs only, and no file changed.
func TestDoctorOffline(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			c := startCluster(t, version)
			loadData(t, c, 300, 100)
			powerCut(t, c)
			ms := c.Members()
			require.NoError(t, testcluster.TearWALTail(ms[0].DataDir))
			require.NoError(t, testcluster.ZeroDBPages(ms[1].DataDir, 2, 4))
			before := map[string]map[string]string{}
			var args []string
			for _, m := range ms {
				before[m.Name] = treeHashes(t, m.DataDir)
				args = append(args, "--data-dir", m.DataDir)
			}
			out := doctorJSON(t, 11, append([]string{"--offline"}, args...)...)
			sev, summary, next, evidence := out.find(t, "wal", "torn")
			require.Equal(t, "warning", sev)
			require.Contains(t, summary, "repairs this itself")
			require.Contains(t, strings.Join(evidence, " "), "offset")
			require.Contains(t, next, "start etcd")
			sev, _, _, evidence = out.find(t, "db", "database damaged")
			require.Equal(t, "critical", sev)
			require.Contains(t, strings.Join(evidence, " "), "its header names page 0: the page was zeroed or overwritten")
			require.Contains(t, strings.Join(evidence, " "), "damaged pages: [")
			sev, summary, next, _ = out.find(t, "cluster-data", "2 of 3 data dirs are intact")
			require.Equal(t, "warning", sev)
			require.Contains(t, summary, "recover path: start")
			require.Contains(t, next, "etcdguard recover")
			for _, m := range ms {
				require.Equal(t, before[m.Name], treeHashes(t, m.DataDir), "doctor changed a file in %s", m.DataDir)
			}
			// etcd does start on the torn tail, as doctor says: with the intact third member, a quorum.
			var wg sync.WaitGroup
			errs := make([]error, 2)
			for i, m := range []*testcluster.Member{ms[0], ms[2]} {
				wg.Go(func() { errs[i] = m.Restart(t.Context()) })
			}
			wg.Wait()
			require.NoError(t, errors.Join(errs...))
		})
	}
}

// TestDoctorNoSpace: members with a small quota raise NOSPACE; doctor names it and gives the
// commands.
func TestDoctorNoSpace(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			c, err := testcluster.Start(t.Context(), testcluster.Options{Size: 3, TLS: true, Command: []string{testenv.Etcd(t, version, "etcd")},
				Dir: t.TempDir(), QuotaBackendBytes: 1 << 20})
			require.NoError(t, err)
			t.Cleanup(func() { c.Close() })
			cli, err := c.Client(t.Context())
			require.NoError(t, err)
			defer cli.Close()
			val := strings.Repeat("x", 64<<10)
			for i := range 100 {
				if _, err := cli.Put(t.Context(), "/registry/configmaps/big/"+itoa(i), val); err != nil {
					require.Contains(t, err.Error(), "database space exceeded")
					break
				}
			}
			out := doctorJSON(t, 11, tlsFlags(c)...)
			sev, _, next, _ := out.find(t, "alarm", "NOSPACE")
			require.Equal(t, "critical", sev)
			require.Contains(t, next, "defrag")
			require.Contains(t, next, "alarm disarm")
		})
	}
}
