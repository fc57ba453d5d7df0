package scratch

import (
	"context"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Writer keeps writing Kubernetes-shaped keys and logs every write etcd acknowledged, so that
// what a power cut and a recovery lose is measured, not estimated. It stops at the first write
// that fails (the power went) or when halted.
type Writer struct {
	mu    sync.Mutex
	acked []string
	stop  chan struct{}
	done  chan struct{}
}

// StartWriter starts writing keys /registry/events/<namespace>/<n> through cli.
func StartWriter(ctx context.Context, cli *clientv3.Client, namespace string) *Writer {
	w := &Writer{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			default:
			}
			key := fmt.Sprintf("/registry/events/%s/event-%06d", namespace, i)
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			_, err := cli.Put(cctx, key, fmt.Sprintf(`{"kind":"Event","count":%d}`, i))
			cancel()
			if err != nil {
				return
			}
			w.mu.Lock()
			w.acked = append(w.acked, key)
			w.mu.Unlock()
		}
	}()
	return w
}

// Halt stops the writer and returns the keys etcd acknowledged, in order.
func (w *Writer) Halt() []string {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.acked...)
}
