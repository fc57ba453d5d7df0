package scratch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Member is one etcd member of a Cluster: a child process with its own data folder, log file
// and ports. Its methods are safe for concurrent use, but starting and stopping one member
// from two goroutines at once gives no useful result.
type Member struct {
	// Name is the member's etcd name: m1, m2, ...
	Name string
	// ClientURL is the URL clients connect to (https with TLS).
	ClientURL string
	// PeerURL is the URL the other members connect to.
	PeerURL string
	// MetricsURL serves the member's /metrics and /health, always over plain http.
	MetricsURL string
	// DataDir is the member's --data-dir.
	DataDir string
	// LogFile receives everything the member writes to stdout and stderr, across restarts.
	LogFile string

	cluster                   *Cluster
	learner                   bool // added to a running cluster by AddLearner
	certFile, keyFile         string
	peerCertFile, peerKeyFile string

	mu   sync.Mutex
	proc *process // nil before the first start
}

// process is one run of a member.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and err is set
	err  error         // what Wait returned
	// logStart is where this run's output begins in the member's log file.
	logStart int64
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Running reports whether the member's process is running.
func (m *Member) Running() bool {
	p := m.current()
	return p != nil && !p.exited()
}

// PID returns the process id of the running member, or 0 when it is not running; tests use it
// to send other signals (SIGSTOP, say).
func (m *Member) PID() int {
	p := m.current()
	if p == nil || p.exited() {
		return 0
	}
	return p.cmd.Process.Pid
}

// Kill kills the member with SIGKILL, as a crash or power loss would, and waits for it to
// exit. Killing a member that is not running does nothing. If it was the leader, writes fail
// until the others elect a new one: wait for that with WaitHealthy of a remaining member.
func (m *Member) Kill() error {
	p := m.current()
	if p == nil || p.exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill etcd member %s: %w", m.Name, err)
	}
	<-p.done
	m.cluster.logger.Info("etcd member killed", "member", m.Name)
	return nil
}

// Stop asks the member to shut down (SIGTERM) and waits for it to exit; after a short grace
// period, or when ctx is done, it kills it instead. Stopping a member that is not running does
// nothing.
func (m *Member) Stop(ctx context.Context) error {
	p := m.current()
	if p == nil || p.exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop etcd member %s: %w", m.Name, err)
	}
	grace := time.NewTimer(stopGrace)
	defer grace.Stop()
	select {
	case <-p.done:
		m.cluster.logger.Info("etcd member stopped", "member", m.Name)
		return nil
	case <-grace.C:
	case <-ctx.Done():
	}
	return m.Kill()
}

// Restart stops the member if it is running, starts it again on the same data folder and
// ports (with --initial-cluster-state existing) and waits until it is healthy, as Start does.
func (m *Member) Restart(ctx context.Context) error {
	if err := m.Stop(ctx); err != nil {
		return fmt.Errorf("restart etcd member %s: %w", m.Name, err)
	}
	if err := m.start("existing"); err != nil {
		return fmt.Errorf("restart etcd member %s: %w", m.Name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, m.cluster.opts.StartTimeout)
	defer cancel()
	if err := m.WaitHealthy(ctx); err != nil {
		return fmt.Errorf("restart etcd member %s: %w", m.Name, err)
	}
	return nil
}

// ClientConfig returns a client configuration for this member alone, with the cluster's default
// client certificate when TLS is on.
func (m *Member) ClientConfig() clientv3.Config {
	return clientConfig([]string{m.ClientURL}, m.cluster.clientTLS)
}

// Client returns a client that talks to this member only. ctx becomes the client's default
// context: the client stops working when ctx is done. The caller closes the client.
func (m *Member) Client(ctx context.Context) (*clientv3.Client, error) {
	cfg := m.ClientConfig()
	cfg.Context = ctx
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("create client of etcd member %s: %w", m.Name, err)
	}
	return cli, nil
}

// WaitHealthy waits until the member answers a linearizable read and a status request that
// names a leader. It fails at once if the member is not running or exits, quoting the end of
// its log, and when ctx is done.
func (m *Member) WaitHealthy(ctx context.Context) error {
	cli, err := clientv3.New(m.ClientConfig())
	if err != nil {
		return fmt.Errorf("check health of etcd member %s: create client: %w", m.Name, err)
	}
	defer cli.Close()
	for {
		p := m.current()
		if p == nil {
			return fmt.Errorf("check health of etcd member %s: never started", m.Name)
		}
		if p.exited() {
			return m.exitError(p)
		}
		callCtx, cancel := context.WithTimeout(ctx, healthCallTimeout)
		go func() { // a member that exits fails the check at once
			select {
			case <-p.done:
				cancel()
			case <-callCtx.Done():
			}
		}()
		last := m.checkHealth(callCtx, cli)
		cancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("etcd member %s did not become healthy: %w (last check: %v)%s", m.Name, ctx.Err(), last, m.logTail(p.logStart))
		case <-p.done:
			return m.exitError(p)
		case <-time.After(healthPollInterval):
		}
	}
}

// checkHealth does what `etcdctl endpoint health` does, and checks that the member knows a leader.
func (m *Member) checkHealth(ctx context.Context, cli *clientv3.Client) error {
	// A linearizable read goes through raft: it fails without a quorum. Permission denied
	// (auth on) still proves that.
	if _, err := cli.Get(ctx, "health"); err != nil && !errors.Is(err, rpctypes.ErrPermissionDenied) {
		return fmt.Errorf("linearizable read: %w", err)
	}
	st, err := cli.Status(ctx, m.ClientURL)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	if st.Leader == 0 {
		return errors.New("status: no leader")
	}
	return nil
}

// exitError describes a member that exited while it was expected to run.
func (m *Member) exitError(p *process) error {
	tail := m.logTail(p.logStart)
	err := fmt.Errorf("etcd member %s exited (%v)", m.Name, p.err)
	if strings.Contains(tail, "address already in use") {
		err = fmt.Errorf("%w: %w", err, errPortInUse)
	}
	return fmt.Errorf("%w%s", err, tail)
}

// current returns the member's latest process, or nil.
func (m *Member) current() *process {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.proc
}

// start starts the member's process with --initial-cluster-state state; it does not wait.
func (m *Member) start(state string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc != nil && !m.proc.exited() {
		return fmt.Errorf("start etcd member %s: already running", m.Name)
	}
	c := m.cluster
	logf, err := os.OpenFile(m.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("start etcd member %s: open log file: %w", m.Name, err)
	}
	defer logf.Close() // the child has its own copy of the descriptor
	args := append(slices.Clone(c.opts.Command[1:]), m.flags(state)...)
	if _, err := fmt.Fprintf(logf, "--- scratch: %s starting %s at %s: %s %s\n",
		m.Name, state, time.Now().Format(time.RFC3339Nano), c.opts.Command[0], strings.Join(args, " ")); err != nil {
		return fmt.Errorf("start etcd member %s: write log file: %w", m.Name, err)
	}
	logStart, err := logf.Seek(0, io.SeekCurrent)
	if err != nil {
		return fmt.Errorf("start etcd member %s: find end of log file: %w", m.Name, err)
	}

	cmd := exec.Command(c.opts.Command[0], args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(childEnv(), c.opts.Env...)
	// The member dies with this process. Pdeathsig fires when the *thread* that forked the
	// child exits, so the goroutine below keeps its thread locked for the child's lifetime.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p := &process{cmd: cmd, done: make(chan struct{}), logStart: logStart}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if c.opts.Nice > 0 || c.opts.IdleIO {
			// The child inherits the priorities of the thread that forks it, from its first
			// instruction on (etcd's threads included). This thread keeps them, lowered for
			// good, and is never unlocked: Go ends a thread whose goroutine exits locked to it,
			// so no other goroutine of this process runs at the lowered priority.
			if err := lowerPriority(c.opts.Nice, c.opts.IdleIO); err != nil {
				started <- fmt.Errorf("lower the priority of the member's process: %w", err)
				return
			}
		} else {
			defer runtime.UnlockOSThread()
		}
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("start etcd member %s: %w", m.Name, err)
	}
	m.proc = p
	c.logger.Info("etcd member started", "member", m.Name, "pid", cmd.Process.Pid, "state", state, "log_file", m.LogFile)
	return nil
}

// flags returns the etcd flags of the member.
func (m *Member) flags(state string) []string {
	c := m.cluster
	f := []string{
		"--name=" + m.Name,
		"--data-dir=" + m.DataDir,
		"--listen-client-urls=" + m.ClientURL,
		"--advertise-client-urls=" + m.ClientURL,
		"--listen-peer-urls=" + m.PeerURL,
		"--initial-advertise-peer-urls=" + m.PeerURL,
		"--listen-metrics-urls=" + m.MetricsURL,
		"--initial-cluster=" + m.initialCluster(),
		"--initial-cluster-state=" + state,
		"--initial-cluster-token=" + c.token,
	}
	if c.opts.SnapshotCount > 0 {
		f = append(f, "--snapshot-count="+strconv.FormatUint(c.opts.SnapshotCount, 10))
	}
	if c.opts.QuotaBackendBytes > 0 {
		f = append(f, "--quota-backend-bytes="+strconv.FormatInt(c.opts.QuotaBackendBytes, 10))
	}
	if c.opts.TLS {
		f = append(f,
			"--cert-file="+m.certFile,
			"--key-file="+m.keyFile,
			"--trusted-ca-file="+c.CAFile,
			"--client-cert-auth",
			"--peer-cert-file="+m.peerCertFile,
			"--peer-key-file="+m.peerKeyFile,
			"--peer-trusted-ca-file="+c.CAFile,
			"--peer-client-cert-auth",
		)
	}
	return append(f, c.opts.ExtraArgs...)
}

// initialCluster is the cluster's --initial-cluster, and a learner's own entry after it.
func (m *Member) initialCluster() string {
	if m.learner {
		return m.cluster.InitialCluster() + "," + m.Name + "=" + m.PeerURL
	}
	return m.cluster.InitialCluster()
}

// childEnv is this process's environment without etcd's ETCD_* settings, which would otherwise
// add to or clash with the flags the member is given.
func childEnv() []string {
	return slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "ETCD_")
	})
}

// LogSize is the size of the member's log file now: what LogSince reads from.
func (m *Member) LogSize() (int64, error) {
	fi, err := os.Stat(m.LogFile)
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// LogSince returns what the member logged after its log file had size from (see LogSize).
func (m *Member) LogSince(from int64) (string, error) {
	b, err := os.ReadFile(m.LogFile)
	if err != nil {
		return "", err
	}
	return string(b[min(max(from, 0), int64(len(b))):]), nil
}

// logTail returns the last lines the member logged after offset from in its log file, formatted
// to end an error message.
func (m *Member) logTail(from int64) string {
	f, err := os.Open(m.LogFile)
	if err != nil {
		return fmt.Sprintf("\n(no log: %v)", err)
	}
	defer f.Close()
	const maxBytes = 16 << 10
	if st, err := f.Stat(); err == nil && st.Size()-from > maxBytes {
		from = st.Size() - maxBytes
	}
	if _, err := f.Seek(from, io.SeekStart); err != nil {
		return fmt.Sprintf("\n(cannot read log %s: %v)", m.LogFile, err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return fmt.Sprintf("\n(cannot read log %s: %v)", m.LogFile, err)
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > logTailLines {
		lines = lines[len(lines)-logTailLines:]
	}
	return fmt.Sprintf("\n--- last lines of %s ---\n%s", m.LogFile, bytes.Join(lines, []byte("\n")))
}

// StartArgs returns the etcd flags of the member without --initial-cluster-state,
// --initial-cluster and --initial-cluster-token, for tests that start members with their own
// commands and pass those three through etcd's ETCD_* environment variables, as etcdguard
// recover does.
func (m *Member) StartArgs() []string {
	var out []string
	for _, f := range m.flags("new") {
		if strings.HasPrefix(f, "--initial-cluster-state=") || strings.HasPrefix(f, "--initial-cluster=") || strings.HasPrefix(f, "--initial-cluster-token=") {
			continue
		}
		out = append(out, f)
	}
	return out
}

// Command returns the program and leading arguments that run the member.
func (m *Member) Command() []string { return append([]string(nil), m.cluster.opts.Command...) }
