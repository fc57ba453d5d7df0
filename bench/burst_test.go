package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/time/rate"

	"github.com/etcdguard/etcdguard/internal/scratch"
)

// randomValues returns n Kubernetes-shaped values (a ConfigMap's JSON) of about size bytes each:
// half of it hex of random bytes, half repeated text, so that they compress about as real objects
// do, and so many that a compressor's window does not see one value twice.
func randomValues(n, size int) []string {
	out := make([]string, n)
	raw := make([]byte, size/4)
	text := strings.Repeat("lorem ipsum dolor sit amet ", size/2/27)
	for i := range out {
		_, _ = rand.Read(raw)
		out[i] = fmt.Sprintf(`{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"cm-%05d","namespace":"burst"},"data":{"blob":"%s","text":"%s"}}`,
			i, hex.EncodeToString(raw), text)
	}
	return out
}

// burst is the writer of BenchmarkAgentMemory: txns of puts of large values, rate-limited, over
// a fixed set of keys; it compacts etcd every 10 s to the revision the agent made durable.
type burst struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	writes int64 // acknowledged puts
	failed int64 // failed txns
	last   int64 // the revision of the newest acknowledged txn
	acks   []scratch.Ack
}

// startBurst writes txnRate txns a second of perTxn puts each, from 32 goroutines (enough for
// the limiter, not the writers' latency, to set the rate while the cluster keeps up).
func startBurst(cli *clientv3.Client, a *agentProc, values []string, txnRate float64, perTxn int) *burst {
	ctx, cancel := context.WithCancel(context.Background())
	w := &burst{cancel: cancel}
	lim := rate.NewLimiter(rate.Limit(txnRate), 1)
	const keys = 20000
	const writers = 32
	for g := range writers {
		w.wg.Go(func() {
			for i := g; ; i += writers {
				if lim.Wait(ctx) != nil {
					return
				}
				ops := make([]clientv3.Op, perTxn)
				for j := range ops {
					n := (i*perTxn + j) % keys
					ops[j] = clientv3.OpPut(fmt.Sprintf("/registry/configmaps/burst/cm-%05d", n), values[(i*perTxn+j)%len(values)])
				}
				tctx, tcancel := context.WithTimeout(ctx, 5*time.Second)
				resp, err := cli.Txn(tctx).Then(ops...).Commit()
				tcancel()
				w.mu.Lock()
				switch {
				case err != nil && ctx.Err() == nil:
					w.failed++
				case err == nil:
					w.writes += int64(perTxn)
					w.last = max(w.last, resp.Header.Revision)
					w.acks = append(w.acks, scratch.Ack{Revision: resp.Header.Revision, At: time.Now()})
				}
				w.mu.Unlock()
			}
		})
	}
	w.wg.Go(func() {
		hc := &http.Client{Timeout: time.Second}
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			st, err := a.status(ctx, hc)
			if err != nil || st.Delta == nil || st.Delta.DurableRevision <= 1 {
				continue
			}
			cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
			_, _ = cli.Compact(cctx, st.Delta.DurableRevision)
			ccancel()
		}
	})
	return w
}

// halt stops the burst and returns the puts acknowledged, the txns failed and the revision of
// the newest acknowledged txn.
func (w *burst) halt() (writes, failed, last int64) {
	w.cancel()
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.writes, w.failed, w.last
}

// ackLog is the AckLog of the burst's acknowledged txns.
func (w *burst) ackLog() scratch.AckLog {
	w.mu.Lock()
	defer w.mu.Unlock()
	return scratch.NewAckLog(w.acks)
}

// lagWatch samples the agent's durable revision every 100 ms in the background; the returned
// func stops it and gives, for each 10-second window, the worst recovery point of the samples
// in it, computed with log.
func lagWatch(a *agentProc) func(log scratch.AckLog) []time.Duration {
	start := time.Now()
	stop := sampleDurable(a, 100*time.Millisecond)
	return func(log scratch.AckLog) []time.Duration {
		samples, _ := stop()
		var windows []time.Duration
		for _, s := range samples {
			w := int(s.at.Sub(start) / (10 * time.Second))
			for len(windows) <= w {
				windows = append(windows, 0)
			}
			windows[w] = max(windows[w], log.RecoveryPoint(s.durable, s.at))
		}
		return windows
	}
}
