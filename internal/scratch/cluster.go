// Package scratch starts throw-away etcd clusters, as child processes on 127.0.0.1: for the
// `etcdguard demo` command, for etcdguard's tests (through internal/testcluster), and for what
// needs an etcd of its own beside the real cluster (restore drills, replay). A member can be a real
// etcd binary or etcdguard's embedded server; either way it is a separate process that can be
// killed, stopped and restarted.
//
// Members never outlive the process that started them (they get SIGKILL when it dies), and
// their output goes to a log file per member, whose last lines are quoted in every error about
// that member.
package scratch

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
)

const (
	// DefaultStartTimeout bounds how long Start and Restart wait for members to become healthy
	// when Options.StartTimeout is zero.
	DefaultStartTimeout = 60 * time.Second

	// stopGrace is how long Stop lets a member shut down after SIGTERM before killing it. etcd
	// can take 7-9 s to exit after SIGTERM; tests have no use for a clean shutdown that slow.
	stopGrace = 2 * time.Second

	// healthCallTimeout bounds each call of a health check.
	healthCallTimeout = 2 * time.Second

	// healthPollInterval is the pause between two health checks of a member that is not ready.
	healthPollInterval = 100 * time.Millisecond

	// clientDialTimeout is the DialTimeout of the clients this package creates.
	clientDialTimeout = 5 * time.Second

	// startAttempts is how many times Start tries new ports when a member cannot bind one.
	startAttempts = 3

	// logTailLines is how many lines of a member's log errors quote.
	logTailLines = 30
)

// errPortInUse marks a member that exited because a port it was given was taken meanwhile.
var errPortInUse = errors.New("port already in use")

// Options describes a cluster to start.
type Options struct {
	// Size is the number of members, 1 to 7; 0 means 1. Use an odd number: 1 or 3.
	Size int
	// TLS turns on TLS with client and peer certificate authentication; the certificates are
	// generated under Dir/pki.
	TLS bool
	// Command is the program, and its leading arguments, that runs one etcd member, given
	// etcd's flags after them: {"/path/to/etcd"} or {"/path/to/etcdguard", "etcd"}.
	Command []string
	// Dir is the folder the cluster lives in: member mN keeps its data in Dir/mN and its
	// output in Dir/mN.log. Dir/mN must not exist yet.
	Dir string
	// SnapshotCount is etcd's --snapshot-count; 0 keeps etcd's default.
	SnapshotCount uint64
	// QuotaBackendBytes is etcd's --quota-backend-bytes; 0 keeps etcd's default.
	QuotaBackendBytes int64
	// ExtraArgs are more etcd flags, appended after the ones this package sets (so a repeated
	// flag overrides), e.g. {"--auto-compaction-retention=1"}.
	ExtraArgs []string
	// StartTimeout bounds how long Start and Restart wait for the members to become healthy;
	// 0 means DefaultStartTimeout.
	StartTimeout time.Duration
	// Logger receives the cluster's events (member started, stopped, killed); nil discards them.
	// Members' own output goes to their log files, not here.
	Logger *slog.Logger

	// Existing starts the members on the data dirs already in Dir/mN instead of new ones: a
	// data dir restored from a snapshot for a one-member cluster of member m1 (a restore drill),
	// with Ports the ports its restore was made for. Start refuses when one is missing.
	Existing bool
	// Ports are the members' ports, three each (client, peer, metrics: m1's first); nil draws
	// free ones (FreePorts), and draws again when one was taken meanwhile. Given ports are
	// never drawn again: a port taken meanwhile fails Start.
	Ports []int
	// Env is added to each member's environment, after this process's own (GOMAXPROCS=1).
	Env []string
	// Nice is the CPU niceness each member runs at, 0 (as this process) to 19 (the lowest
	// priority); IdleIO puts its disk I/O in the idle class, served only when no one else
	// uses the disk. Both are set before the member's first instruction (see lowerPriority).
	Nice   int
	IdleIO bool
}

// Cluster is a running etcd cluster of child processes. Close it when done.
type Cluster struct {
	// PKI is the CA that issued the cluster's certificates, for issuing more (expired ones,
	// say); nil without TLS.
	PKI *PKI
	// CAFile is the CA certificate clients must trust; empty without TLS.
	CAFile string
	// ClientCertFile and ClientKeyFile are a valid client certificate (common name "root")
	// and its key; empty without TLS.
	ClientCertFile, ClientKeyFile string

	opts      Options
	logger    *slog.Logger
	token     string
	members   []*Member
	learners  []*Member   // added by AddLearner; not in members, Endpoints or InitialCluster
	clientTLS *tls.Config // nil without TLS
}

// Start starts a new cluster as described by opts and waits until every member answers
// healthy. ctx bounds only the start: the members run until Close (or until this process
// dies). If a member cannot bind a port that was free a moment before, Start tries again with
// new ports. On failure nothing is left running and the error quotes the failing member's log.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Size == 0 {
		opts.Size = 1
	}
	switch {
	case opts.Size < 1 || opts.Size > 7:
		return nil, fmt.Errorf("start etcd cluster: size %d is not between 1 and 7", opts.Size)
	case len(opts.Command) == 0 || opts.Command[0] == "":
		return nil, errors.New("start etcd cluster: no command to run etcd members")
	case opts.Dir == "":
		return nil, errors.New("start etcd cluster: no folder given")
	case opts.Ports != nil && len(opts.Ports) != 3*opts.Size:
		return nil, fmt.Errorf("start etcd cluster: %d ports given for %d members: give three each", len(opts.Ports), opts.Size)
	case opts.Nice < 0 || opts.Nice > 19:
		return nil, fmt.Errorf("start etcd cluster: niceness %d is not between 0 and 19", opts.Nice)
	}
	opts.Command = slices.Clone(opts.Command)
	opts.ExtraArgs = slices.Clone(opts.ExtraArgs)
	opts.Ports = slices.Clone(opts.Ports)
	opts.Env = slices.Clone(opts.Env)
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = DefaultStartTimeout
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("start etcd cluster: create folder: %w", err)
	}
	c := &Cluster{opts: opts, logger: logger}
	for i := range opts.Size {
		m := &Member{
			Name:    "m" + strconv.Itoa(i+1),
			cluster: c,
		}
		m.DataDir = filepath.Join(opts.Dir, m.Name)
		m.LogFile = filepath.Join(opts.Dir, m.Name+".log")
		switch _, err := os.Stat(m.DataDir); {
		case opts.Existing && err != nil:
			return nil, fmt.Errorf("start etcd cluster on existing data dirs: %w", err)
		case opts.Existing:
		case err == nil:
			return nil, fmt.Errorf("start etcd cluster: data folder %s already exists; Start needs a fresh folder", m.DataDir)
		case !errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("start etcd cluster: check data folder: %w", err)
		}
		c.members = append(c.members, m)
	}
	if opts.TLS {
		if err := c.makePKI(); err != nil {
			return nil, fmt.Errorf("start etcd cluster: %w", err)
		}
	}

	for attempt := 1; ; attempt++ {
		err := c.startOnce(ctx)
		if err == nil {
			logger.Info("etcd cluster healthy", "size", opts.Size, "endpoints", strings.Join(c.Endpoints(), ","))
			return c, nil
		}
		closeErr := c.Close()
		if !errors.Is(err, errPortInUse) || attempt == startAttempts || opts.Ports != nil {
			return nil, errors.Join(fmt.Errorf("start etcd cluster: %w", err), closeErr)
		}
		logger.Info("etcd member could not bind its port; retrying with new ports", "attempt", attempt, "error", err)
		// The data folders were created by this call (Start checked they did not exist):
		// removing them deletes nothing anyone else owns. Existing ones are the caller's, and
		// a member that could not bind its port has not written to them.
		for _, m := range c.members {
			if opts.Existing {
				break
			}
			if err := os.RemoveAll(m.DataDir); err != nil {
				return nil, fmt.Errorf("start etcd cluster: remove data folder %s of a failed attempt: %w", m.DataDir, err)
			}
		}
	}
}

// startOnce picks ports and a token, starts every member and waits for the cluster to be
// healthy.
func (c *Cluster) startOnce(ctx context.Context) error {
	ports := c.opts.Ports
	if ports == nil {
		var err error
		if ports, err = FreePorts(3 * len(c.members)); err != nil {
			return err
		}
	}
	for i, m := range c.members {
		c.setURLs(m, ports[3*i:3*i+3])
	}
	token := make([]byte, 8)
	if _, err := rand.Read(token); err != nil {
		return fmt.Errorf("generate cluster token: %w", err)
	}
	c.token = "etcdguard-test-" + hex.EncodeToString(token)

	for _, m := range c.members {
		if err := m.start("new"); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.StartTimeout)
	defer cancel()
	return c.WaitHealthy(ctx)
}

// makePKI creates the CA and the certificates of the members and of the default client.
func (c *Cluster) makePKI() error {
	p, err := NewPKI(filepath.Join(c.opts.Dir, "pki"))
	if err != nil {
		return err
	}
	for _, m := range c.members {
		if err := issueMemberCerts(p, m); err != nil {
			return err
		}
	}
	now := time.Now()
	from, until := now.Add(-time.Hour), now.AddDate(1, 0, 0)
	if c.ClientCertFile, c.ClientKeyFile, err = p.IssueClient("root", from, until); err != nil {
		return err
	}
	if c.clientTLS, err = ClientTLS(p.CAFile, c.ClientCertFile, c.ClientKeyFile); err != nil {
		return err
	}
	c.PKI, c.CAFile = p, p.CAFile
	return nil
}

// issueMemberCerts issues a member's server and peer certificates, valid for a year.
func issueMemberCerts(p *PKI, m *Member) (err error) {
	now := time.Now()
	from, until := now.Add(-time.Hour), now.AddDate(1, 0, 0)
	if m.certFile, m.keyFile, err = p.IssueServer(m.Name, from, until); err != nil {
		return err
	}
	m.peerCertFile, m.peerKeyFile, err = p.IssueServer(m.Name+"-peer", from, until)
	return err
}

// setURLs gives a member its client, peer and metrics URLs on the three ports.
func (c *Cluster) setURLs(m *Member, ports []int) {
	scheme := "http"
	if c.opts.TLS {
		scheme = "https"
	}
	m.ClientURL = fmt.Sprintf("%s://127.0.0.1:%d", scheme, ports[0])
	m.PeerURL = fmt.Sprintf("%s://127.0.0.1:%d", scheme, ports[1])
	m.MetricsURL = fmt.Sprintf("http://127.0.0.1:%d", ports[2])
}

// Endpoints returns the client URLs of all members, running or not (https with TLS).
func (c *Cluster) Endpoints() []string {
	eps := make([]string, len(c.members))
	for i, m := range c.members {
		eps[i] = m.ClientURL
	}
	return eps
}

// Members returns the members, m1 first.
func (c *Cluster) Members() []*Member {
	return slices.Clone(c.members)
}

// InitialCluster returns the value of etcd's --initial-cluster for this cluster,
// "m1=https://127.0.0.1:p1,m2=...", as a restore onto the same members needs it.
func (c *Cluster) InitialCluster() string {
	parts := make([]string, len(c.members))
	for i, m := range c.members {
		parts[i] = m.Name + "=" + m.PeerURL
	}
	return strings.Join(parts, ",")
}

// Token returns the cluster's --initial-cluster-token, unique to each Start.
func (c *Cluster) Token() string {
	return c.token
}

// ClientConfig returns a client configuration for all the cluster's endpoints, with the
// cluster's default client certificate when TLS is on and a logger that discards. Tests
// that need another certificate replace its TLS field (see ClientTLS).
func (c *Cluster) ClientConfig() clientv3.Config {
	return clientConfig(c.Endpoints(), c.clientTLS)
}

// Client returns a client of the whole cluster. ctx becomes the client's default context:
// the client stops working when ctx is done. The caller closes the client.
func (c *Cluster) Client(ctx context.Context) (*clientv3.Client, error) {
	cfg := c.ClientConfig()
	cfg.Context = ctx
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("create client of etcd cluster: %w", err)
	}
	return cli, nil
}

// WaitHealthy waits until every member is running and answers a linearizable read and a
// status request that names a leader. It fails at once if a member is not running or exits,
// quoting the end of its log.
func (c *Cluster) WaitHealthy(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, m := range c.members {
		g.Go(func() error { return m.WaitHealthy(ctx) })
	}
	return g.Wait()
}

// Close kills every member (SIGKILL) and waits for them to exit. Data and log files stay.
// Close may be called more than once.
func (c *Cluster) Close() error {
	var errs []error
	for _, m := range append(slices.Clone(c.members), c.learners...) {
		errs = append(errs, m.Kill())
	}
	return errors.Join(errs...)
}

func clientConfig(endpoints []string, tlsConfig *tls.Config) clientv3.Config {
	cfg := clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: clientDialTimeout,
		Logger:      zap.NewNop(),
	}
	if tlsConfig != nil {
		cfg.TLS = tlsConfig.Clone()
	}
	return cfg
}

// AddLearner adds a member to the running cluster as a learner (etcdctl member add --learner)
// and starts it: it receives the data but does not vote. It is not one of Members or
// Endpoints (a client of the whole cluster must not send requests a learner refuses). It
// returns once the learner answers a status request.
func (c *Cluster) AddLearner(ctx context.Context) (*Member, error) {
	m := &Member{Name: "m" + strconv.Itoa(len(c.members)+len(c.learners)+1), cluster: c, learner: true}
	m.DataDir = filepath.Join(c.opts.Dir, m.Name)
	m.LogFile = filepath.Join(c.opts.Dir, m.Name+".log")
	ports, err := FreePorts(3)
	if err != nil {
		return nil, fmt.Errorf("add learner: %w", err)
	}
	c.setURLs(m, ports)
	if c.opts.TLS {
		if err := issueMemberCerts(c.PKI, m); err != nil {
			return nil, fmt.Errorf("add learner: %w", err)
		}
	}
	cli, err := c.Client(ctx)
	if err != nil {
		return nil, fmt.Errorf("add learner: %w", err)
	}
	defer cli.Close()
	// etcd refuses a new member until every member has been connected for five seconds.
	deadline := time.Now().Add(c.opts.StartTimeout)
	for {
		_, err := cli.MemberAddAsLearner(ctx, []string{m.PeerURL})
		if err == nil {
			break
		}
		if !errors.Is(err, rpctypes.ErrUnhealthy) || time.Now().After(deadline) {
			return nil, fmt.Errorf("add learner %s: %w", m.Name, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("add learner %s: %w", m.Name, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
	c.learners = append(c.learners, m)
	if err := m.start("existing"); err != nil {
		return nil, err
	}
	mcli, err := m.Client(ctx)
	if err != nil {
		return nil, err
	}
	defer mcli.Close()
	ctx, cancel := context.WithTimeout(ctx, c.opts.StartTimeout)
	defer cancel()
	for {
		cctx, ccancel := context.WithTimeout(ctx, healthCallTimeout)
		_, err := mcli.Status(cctx, m.ClientURL)
		ccancel()
		if err == nil {
			return m, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("learner %s does not answer: %w%s", m.Name, err, m.logTail(0))
		case <-time.After(healthPollInterval):
		}
	}
}
