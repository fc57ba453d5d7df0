// Package testcluster is what etcdguard's tests use to get real etcd clusters: the scratch
// clusters of internal/scratch under the names the tests know, and the faults only tests inject
// (zeroed WAL sectors, flipped records), which the shipped binary never carries.
package testcluster

import (
	"context"
	"crypto/tls"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdguard/etcdguard/internal/scratch"
)

type (
	Options = scratch.Options
	Cluster = scratch.Cluster
	Member  = scratch.Member
	PKI     = scratch.PKI
	Writer  = scratch.Writer
	Load    = scratch.Load
	// LoadOptions shape a Load: see scratch.LoadOptions.
	LoadOptions = scratch.LoadOptions
)

// StartLoad starts a Kubernetes-shaped write load that logs what was acknowledged: see
// scratch.StartLoad.
func StartLoad(cli *clientv3.Client, opts LoadOptions) *Load { return scratch.StartLoad(cli, opts) }

// Start starts a scratch cluster: see scratch.Start.
func Start(ctx context.Context, opts Options) (*Cluster, error) { return scratch.Start(ctx, opts) }

// NewPKI makes a throw-away certificate authority: see scratch.NewPKI.
func NewPKI(dir string) (*PKI, error) { return scratch.NewPKI(dir) }

// ClientTLS loads a client's TLS configuration: see scratch.ClientTLS.
func ClientTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	return scratch.ClientTLS(caFile, certFile, keyFile)
}

// FreePorts reserves n free ports: see scratch.FreePorts.
func FreePorts(n int) ([]int, error) { return scratch.FreePorts(n) }

// StartWriter starts a background writer: see scratch.StartWriter.
func StartWriter(ctx context.Context, cli *clientv3.Client, namespace string) *Writer {
	return scratch.StartWriter(ctx, cli, namespace)
}
