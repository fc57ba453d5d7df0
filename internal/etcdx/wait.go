package etcdx

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// waitPoll is how long the waits below pause between two tries.
const waitPoll = 500 * time.Millisecond

// Linearizable checks that endpoint serves a linearizable read: the transport works (Probe), then
// a count-only Get goes through the leader, which only a member of a cluster with quorum serves.
func (c Config) Linearizable(ctx context.Context, endpoint string) error {
	c.Endpoints = []string{endpoint}
	if err := c.Probe(ctx, endpoint); err != nil {
		return err
	}
	cli, err := c.Client(ctx, endpoint)
	if err != nil {
		return err
	}
	defer cli.Close()
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	_, err = cli.Get(cctx, "/etcdguard/probe", clientv3.WithCountOnly())
	return err
}

// WaitServing waits, for up to limit, until the member named name serves a linearizable read on
// endpoint. The error wraps ErrUnavailable and the last read's error.
func (c Config) WaitServing(ctx context.Context, name, endpoint string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		if last = c.Linearizable(ctx, endpoint); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(waitPoll):
		}
	}
	return fmt.Errorf("%w: member %s not serving after %s: %w", ErrUnavailable, name, limit, last)
}

// WaitQuorum waits, for up to limit, until one of endpoints serves a linearizable read (the
// cluster has a quorum again), and returns that endpoint. The error wraps ErrUnavailable and
// the last read's error.
func (c Config) WaitQuorum(ctx context.Context, endpoints []string, limit time.Duration) (string, error) {
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		for _, ep := range endpoints {
			if last = c.Linearizable(ctx, ep); last == nil {
				return ep, nil
			}
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(waitPoll):
		}
	}
	return "", fmt.Errorf("%w: no quorum after %s: %w", ErrUnavailable, limit, last)
}
