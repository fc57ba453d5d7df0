package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

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

// findFor returns the finding of a check about subject.
func (d doctorOut) findFor(t *testing.T, check, subject string) (sev, summary, next string, evidence []string) {
	t.Helper()
	for _, f := range d.Findings {
		if f.Check == check && f.Subject == subject {
			return f.Severity, f.Summary, f.Next, f.Evidence
		}
	}
	t.Fatalf("no %s finding about %s in %+v", check, subject, d.Findings)
	return
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

			t.Run("the newest backup older than the RPO", func(t *testing.T) {
				args := append([]string{"--target", "file://" + repo}, tlsFlags(c)...)
				// This host's clock moved ahead: the members' clocks are now behind (critical).
				out := doctorAt(t, func() time.Time { return time.Now().Add(45 * time.Minute) }, 11, args...)
				sev, summary, next, _ := out.find(t, "backup-age", "more than the RPO of 30m0s")
				require.Equal(t, "warning", sev)
				require.Regexp(t, `is 4[5-6]m0s old`, summary)
				require.Contains(t, next, "snapshot save")
				out = doctorAt(t, func() time.Time { return time.Now().Add(2 * time.Hour) }, 11, args...)
				sev, _, _, _ = out.find(t, "backup-age", "more than twice the RPO")
				require.Equal(t, "critical", sev)
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

			t.Run("a learner", func(t *testing.T) {
				l, err := c.AddLearner(t.Context())
				require.NoError(t, err)
				// Whatever the outcome, the later subtests find the cluster as it was.
				t.Cleanup(func() {
					_ = l.Kill()
					removeMember(t, c, l.PeerURL)
				})
				// From one voter's endpoint: the learner is found in the member list.
				out := doctorJSON(t, 10, append([]string{"--endpoints", c.Endpoints()[0]}, tlsFlags(c)[2:]...)...)
				sev, _, next, _ := out.find(t, "learner", "does not vote")
				require.Equal(t, "ok", sev)
				require.Contains(t, next, "etcdctl member promote")
				sev, _, _, evidence := out.find(t, "quorum", "3 of 3 members answer, one leader")
				require.Equal(t, "ok", sev, "a learner counts for neither the size nor the quorum")
				require.Contains(t, strings.Join(evidence, "\n"), l.ClientURL+", learner")

				// Down, the learner is a warning, not a loss of quorum.
				require.NoError(t, l.Kill())
				out = doctorJSON(t, 10, append([]string{"--endpoints", c.Endpoints()[0]}, tlsFlags(c)[2:]...)...)
				sev, summary, _, _ := out.find(t, "endpoint", "a learner does not answer")
				require.Equal(t, "warning", sev)
				require.Contains(t, summary, l.ClientURL)
				sev, _, _, _ = out.find(t, "quorum", "3 of 3 members answer, one leader")
				require.Equal(t, "ok", sev)
			})

			t.Run("a CORRUPT alarm", func(t *testing.T) {
				cli, err := c.Client(context.Background())
				require.NoError(t, err)
				t.Cleanup(func() { cli.Close() }) // after the disarm below
				st, err := cli.Status(t.Context(), c.Endpoints()[1])
				require.NoError(t, err)
				id := st.Header.MemberId
				// What etcd's corruption check raises when a member's hash differs.
				_, err = etcdserverpb.NewMaintenanceClient(cli.ActiveConnection()).Alarm(t.Context(), &etcdserverpb.AlarmRequest{
					Action: etcdserverpb.AlarmRequest_ACTIVATE, MemberID: id, Alarm: etcdserverpb.AlarmType_CORRUPT})
				require.NoError(t, err)
				t.Cleanup(func() {
					_, err := cli.AlarmDisarm(context.Background(), &clientv3.AlarmMember{MemberID: id, Alarm: etcdserverpb.AlarmType_CORRUPT})
					require.NoError(t, err)
				})
				out := doctorJSON(t, 11, append([]string{"--endpoints", strings.Join(c.Endpoints(), ",")}, tlsFlags(c)[2:]...)...)
				var found bool
				for _, f := range out.Findings {
					if f.Check == "alarm" && strings.Contains(f.Summary, "CORRUPT") {
						found = true
						require.Equal(t, "critical", f.Severity)
						require.Contains(t, f.Subject, c.Endpoints()[1])
						require.Contains(t, f.Next, "recover")
					}
				}
				require.True(t, found, "no CORRUPT finding in %+v", out.Findings)
			})

			t.Run("two of three killed: no quorum, who answers, the freshest data dir", func(t *testing.T) {
				ms := c.Members()
				require.NoError(t, ms[0].Kill())
				require.NoError(t, ms[1].Kill())
				t.Cleanup(func() {
					// Back to three members before the cluster closes, so that nothing writes into
					// a folder being removed.
					var wg sync.WaitGroup
					for _, m := range ms[:2] {
						wg.Go(func() { _ = m.Restart(context.Background()) })
					}
					wg.Wait()
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
				require.Contains(t, summary, "2 of 3 members' data dirs are intact: a quorum (2) can start", "the size from the databases' member records")
				require.Contains(t, strings.Join(evidence, "\n"), "freshest intact database")
				for _, m := range ms[:2] {
					require.Equal(t, before[m.Name], treeHashes(t, m.DataDir), "the offline checks change no file")
				}
			})
		})
	}
}

// TestDoctorOffline: after a power cut, one member's WAL cut inside its last record, one
// member's database pages zeroed, one member's last 512 WAL bytes zeroed; found by reading the
// data dirs only, no file changed, and etcd then does what doctor said.
func TestDoctorOffline(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			c := startCluster(t, version)
			loadData(t, c, 300, 100)
			commitBackends(t, c)
			putBig(t, c)
			powerCut(t, c)
			ms := c.Members()
			require.NoError(t, ms[0].TearWALTail())
			require.NoError(t, ms[1].ZeroDBPages(2, 4))
			require.NoError(t, testcluster.ZeroWALTail(ms[2].DataDir))
			before := map[string]map[string]string{}
			var args []string
			for _, m := range ms {
				before[m.Name] = treeHashes(t, m.DataDir)
				args = append(args, "--data-dir", m.DataDir)
			}
			out := doctorJSON(t, 11, append([]string{"--offline"}, args...)...)
			for _, m := range []*testcluster.Member{ms[0], ms[2]} {
				sev, summary, next, evidence := out.findFor(t, "wal", m.DataDir)
				require.Equal(t, "warning", sev, summary)
				require.Regexp(t, `repairs this itself on start, dropping [1-9]\d* bytes`, summary)
				require.Contains(t, strings.Join(evidence, " "), "cut at offset")
				require.Contains(t, next, "start etcd")
				sev, summary, _, _ = out.findFor(t, "verdict", m.DataDir)
				require.Equal(t, "warning", sev)
				require.Contains(t, summary, "starts and repairs itself")
			}
			sev, _, _, evidence := out.findFor(t, "db", ms[1].DataDir)
			require.Equal(t, "critical", sev)
			require.Contains(t, strings.Join(evidence, " "), "its header names page 0: the page was zeroed or overwritten")
			// Of the zeroed pages 2-5, those in use (a zeroed free page is no damage).
			require.Regexp(t, `damaged pages: \[[2-5]( [2-5])*\]`, strings.Join(evidence, " "))
			sev, summary, _, _ := out.findFor(t, "verdict", ms[1].DataDir)
			require.Equal(t, "critical", sev)
			require.Contains(t, summary, "must be replaced", "the other two are intact: a quorum")
			sev, summary, next, evidence := out.find(t, "cluster-data", "2 of 3 data dirs are intact")
			require.Equal(t, "warning", sev)
			require.Contains(t, summary, "recover path: start")
			require.Contains(t, next, "etcdguard recover")
			require.Contains(t, strings.Join(evidence, "\n"), "freshest intact database: ")
			// Two of the three data dirs given, one of them damaged: the third member, not
			// checked here, decides between a start and a restore.
			out = doctorJSON(t, 11, "--offline", "--data-dir", ms[1].DataDir, "--data-dir", ms[2].DataDir)
			sev, summary, next, _ = out.find(t, "cluster-data", "not checked here")
			require.Equal(t, "critical", sev)
			require.Contains(t, summary, "1 of the 2 data dirs given are intact; the cluster has 3 members, 1 not checked here")
			require.Contains(t, next, "doctor --offline --data-dir")
			_, summary, _, _ = out.findFor(t, "verdict", ms[1].DataDir)
			require.Contains(t, summary, "must be replaced (if the others have quorum) or restored", "undecided without the third member")
			for _, m := range ms {
				require.Equal(t, before[m.Name], treeHashes(t, m.DataDir), "doctor changed a file in %s", m.DataDir)
			}
			// etcd does start on both self-repairing members, as doctor says: a quorum.
			logFrom := map[string]int64{}
			for _, m := range []*testcluster.Member{ms[0], ms[2]} {
				logFrom[m.Name] = logLen(t, m)
			}
			var wg sync.WaitGroup
			errs := make([]error, 2)
			for i, m := range []*testcluster.Member{ms[0], ms[2]} {
				wg.Go(func() { errs[i] = m.Restart(t.Context()) })
			}
			wg.Wait()
			require.NoError(t, errors.Join(errs...))
			for _, m := range []*testcluster.Member{ms[0], ms[2]} {
				require.Contains(t, logSinceOf(t, m, logFrom[m.Name]), "repaired", "%s repaired its WAL", m.Name)
			}
		})
	}
}

// TestDoctorWALCorruptOlderSegment: a byte flipped in a record of a WAL segment that is not the
// last is named (file and offset) as damage etcd cannot repair, and etcd does refuse to start.
func TestDoctorWALCorruptOlderSegment(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			c := startCluster(t, version)
			// More than one 64 MiB segment of WAL.
			cli, err := c.Client(t.Context())
			require.NoError(t, err)
			val := strings.Repeat("w", 1<<20)
			for i := range 72 {
				_, err := cli.Put(t.Context(), fmt.Sprintf("/registry/configmaps/big/cm-%02d", i), val)
				require.NoError(t, err)
			}
			require.NoError(t, cli.Close())
			powerCut(t, c)
			m := c.Members()[0]
			segs, err := filepath.Glob(filepath.Join(m.DataDir, "member", "wal", "*.wal"))
			require.NoError(t, err)
			require.GreaterOrEqual(t, len(segs), 2, "a WAL of more than one segment")
			seg, off, err := testcluster.FlipWALRecord(m.DataDir, 0)
			require.NoError(t, err)
			before := treeHashes(t, m.DataDir)

			out := doctorJSON(t, 11, "--offline", "--data-dir", m.DataDir)
			sev, summary, next, evidence := out.findFor(t, "wal", m.DataDir)
			require.Equal(t, "critical", sev)
			require.Contains(t, summary, "etcd cannot repair this")
			require.Contains(t, evidence, fmt.Sprintf("file %s, offset %d", filepath.Base(seg), off))
			require.Contains(t, strings.Join(evidence, " "), "crc mismatch")
			require.Contains(t, next, "recover")
			sev, _, _, _ = out.findFor(t, "verdict", m.DataDir)
			require.Equal(t, "critical", sev)
			require.Equal(t, before, treeHashes(t, m.DataDir), "doctor changed a file")

			from := logLen(t, m)
			require.Error(t, m.Restart(t.Context()), "etcd started on a WAL damaged before its last segment")
			require.Contains(t, logSinceOf(t, m, from), "crc mismatch")
		})
	}
}

// removeMember removes the member with peer URL peerURL from the cluster.
func removeMember(t *testing.T, c *testcluster.Cluster, peerURL string) {
	t.Helper()
	// Called from cleanups too, where the test's context is already cancelled.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cli, err := c.Client(ctx)
	require.NoError(t, err)
	defer cli.Close()
	list, err := cli.MemberList(ctx)
	require.NoError(t, err)
	for _, m := range list.Members {
		if slices.Contains(m.PeerURLs, peerURL) {
			_, err := cli.MemberRemove(ctx, m.ID)
			require.NoError(t, err)
			return
		}
	}
	t.Fatalf("no member with peer URL %s", peerURL)
}

// commitBackends has every member write its database to disk (a defragmentation commits it).
// etcd commits its database every 100 ms: a member killed sooner after it applied the writes
// has them in its WAL only, and an empty database, without the cluster's member records. That
// happens after a real power cut too, but the tests that read the records need them there.
func commitBackends(t *testing.T, c *testcluster.Cluster) {
	t.Helper()
	cli, err := c.Client(t.Context())
	require.NoError(t, err)
	defer cli.Close()
	for _, ep := range c.Endpoints() {
		_, err := cli.Defragment(t.Context(), ep)
		require.NoError(t, err)
	}
}

// putBig writes one value of a few KiB last, so that the WAL ends inside a large record.
func putBig(t *testing.T, c *testcluster.Cluster) {
	t.Helper()
	cli, err := c.Client(t.Context())
	require.NoError(t, err)
	defer cli.Close()
	_, err = cli.Put(t.Context(), "/registry/configmaps/ns-0/big", strings.Repeat("b", 8<<10))
	require.NoError(t, err)
}

// logLen is the size of a member's log file now; logSinceOf reads it from there.
func logLen(t *testing.T, m *testcluster.Member) int64 {
	t.Helper()
	n, err := m.LogSize()
	require.NoError(t, err)
	return n
}

func logSinceOf(t *testing.T, m *testcluster.Member, from int64) string {
	t.Helper()
	log, err := m.LogSince(from)
	require.NoError(t, err)
	return log
}

// TestDoctorHashKV: one member's copy of a value changed behind etcd's back (as silent disk
// corruption would): the members' HashKV disagree, and doctor names the odd one out.
func TestDoctorHashKV(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			c := startCluster(t, version)
			loadData(t, c, 50, 100)
			commitBackends(t, c)
			m3 := c.Members()[2]
			require.NoError(t, m3.Kill())
			db, err := bbolt.Open(filepath.Join(m3.DataDir, "member", "snap", "db"), 0o600, nil)
			require.NoError(t, err)
			require.NoError(t, db.Update(func(tx *bbolt.Tx) error {
				b := tx.Bucket([]byte("key"))
				k, v := b.Cursor().Last()
				var kv mvccpb.KeyValue
				if err := kv.Unmarshal(v); err != nil {
					return err
				}
				require.NotEmpty(t, kv.Value)
				kv.Value[0] ^= 0x01 // one bit, same size: etcd reads it back without complaint
				nv, err := kv.Marshal()
				if err != nil {
					return err
				}
				return b.Put(bytes.Clone(k), nv)
			}))
			require.NoError(t, db.Close())
			require.NoError(t, m3.Restart(t.Context()))

			out := doctorJSON(t, 11, append([]string{"--endpoints", strings.Join(c.Endpoints(), ",")}, tlsFlags(c)[2:]...)...)
			sev, summary, next, evidence := out.find(t, "hashkv", "different data")
			require.Equal(t, "critical", sev)
			require.Contains(t, summary, m3.Name+" hold(s) different data from the other 2 members")
			require.Contains(t, next, "replace "+m3.Name)
			require.Len(t, evidence, 3)
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
