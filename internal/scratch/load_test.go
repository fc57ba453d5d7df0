package scratch_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdguard/etcdguard/internal/scratch"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

func TestAckLog(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	// Two writers: revision 12 was acknowledged before revision 11 was.
	acks := []scratch.Ack{
		{Revision: 10, At: at(0)},
		{Revision: 12, At: at(5)},
		{Revision: 0, At: at(6)}, // a delete of nothing: no revision
		{Revision: 11, At: at(8)},
		{Revision: 13, At: at(20)},
	}
	log := scratch.NewAckLog(acks)
	tests := []struct {
		name    string
		durable int64
		now     time.Time
		oldest  time.Time // zero: none above durable
		rp      time.Duration
	}{
		{name: "nothing durable", durable: 0, now: at(30), oldest: at(0), rp: 30 * time.Millisecond},
		{name: "the oldest above is not the lowest revision", durable: 10, now: at(30), oldest: at(5), rp: 25 * time.Millisecond},
		{name: "a revision between two acknowledged ones", durable: 11, now: at(30), oldest: at(5), rp: 25 * time.Millisecond},
		{name: "only the newest missing", durable: 12, now: at(30), oldest: at(20), rp: 10 * time.Millisecond},
		{name: "acknowledged after now counts as nothing lost", durable: 12, now: at(15), oldest: at(20), rp: 0},
		{name: "everything durable", durable: 13, now: at(30), rp: 0},
		{name: "durable past every write", durable: 99, now: at(30), rp: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := log.OldestAfter(tt.durable)
			require.Equal(t, !tt.oldest.IsZero(), ok)
			require.Equal(t, tt.oldest, got)
			require.Equal(t, tt.rp, log.RecoveryPoint(tt.durable, tt.now))
		})
	}
	require.Zero(t, scratch.NewAckLog(nil).RecoveryPoint(5, at(1)), "an empty log loses nothing")
}

// TestLoadRateAndRevisions: a rate-limited load never starts more ops than its rate allows, and
// every acknowledged write carries its own revision, none beyond the cluster's.
func TestLoadRateAndRevisions(t *testing.T) {
	c := start(t, scratch.Options{Size: 1, Command: []string{testenv.Etcd(t, "3.6", "etcd")}, Dir: t.TempDir()})
	cli := client(t, c.Client)
	const rate = 200
	started := time.Now()
	load := scratch.StartLoad(cli, scratch.LoadOptions{Workers: 8, Namespace: "rate", Seed: 1, Rate: rate})
	time.Sleep(2 * time.Second)
	load.Halt()
	elapsed := time.Since(started)
	acked, failed := load.Acked()
	require.Zero(t, failed)
	require.Positive(t, acked)
	require.LessOrEqual(t, float64(acked), 1+rate*elapsed.Seconds(), "the limiter lets through at most its burst (1) and its rate")

	acks := load.Acks()
	require.Len(t, acks, int(acked))
	resp, err := cli.Get(t.Context(), "health", clientv3.WithCountOnly())
	require.NoError(t, err)
	seen := map[int64]bool{}
	for _, a := range acks {
		require.Positive(t, a.Latency)
		if a.Revision == 0 {
			continue
		}
		require.False(t, seen[a.Revision], "revision %d acknowledged twice", a.Revision)
		seen[a.Revision] = true
		require.LessOrEqual(t, a.Revision, resp.Header.Revision)
	}
	require.NotEmpty(t, seen)
	require.Zero(t, load.AckLog().RecoveryPoint(resp.Header.Revision, time.Now()), "everything is at or below the cluster's revision")
}
