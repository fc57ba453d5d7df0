package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// minioStartTimeout bounds how long StartMinIO waits for the server to answer its health check.
const minioStartTimeout = 30 * time.Second

// MinIOServer is a real MinIO server started for one test, listening on 127.0.0.1 with a data folder
// of its own and random root credentials.
type MinIOServer struct {
	// Endpoint is the server's URL, such as "http://127.0.0.1:41234".
	Endpoint string
	// AccessKey and SecretKey are the root user's credentials.
	AccessKey string
	SecretKey string
	// Dir is the server's data folder.
	Dir string

	cmd  *exec.Cmd
	log  *syncBuffer
	done chan struct{} // closed when the process has exited
	stop sync.Once
	args []string // the server's command line, for Restart
}

// StartMinIO starts a MinIO server on free ports of 127.0.0.1, waits until it is ready, and
// stops it when the test ends. It fails the test (with the server's log) if it cannot.
func StartMinIO(tb testing.TB) *MinIOServer {
	tb.Helper()
	bin := MinIO(tb)
	dir := tb.TempDir()
	// Picking a port and then binding it is racy: retry with fresh ports if MinIO lost the race.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		m, err := startMinIO(tb, bin, dir)
		if err == nil {
			return m
		}
		lastErr = err
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	tb.Fatalf("start MinIO: %v", lastErr)
	return nil
}

func startMinIO(tb testing.TB, bin, dir string) (*MinIOServer, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	m := &MinIOServer{
		Endpoint:  "http://" + addr,
		AccessKey: "etcdguard-" + randomHex(tb, 6),
		SecretKey: randomHex(tb, 20),
		Dir:       filepath.Join(dir, "data"),
		log:       &syncBuffer{},
		done:      make(chan struct{}),
	}
	m.args = []string{bin, "server", m.Dir,
		"--address", addr,
		"--console-address", net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1])),
		"--certs-dir", filepath.Join(dir, "certs"),
		"--quiet"}
	if err := m.start(dir); err != nil {
		return nil, err
	}
	tb.Cleanup(m.Stop)

	if err := m.waitReady(); err != nil {
		m.Stop()
		return nil, fmt.Errorf("%w; MinIO's output:\n%s", err, m.log.String())
	}
	return m, nil
}

// start runs the server's process.
func (m *MinIOServer) start(dir string) error {
	m.cmd = exec.Command(m.args[0], m.args[1:]...)
	m.cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+m.AccessKey,
		"MINIO_ROOT_PASSWORD="+m.SecretKey,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
		"MINIO_CI_CD=on",
		"HOME="+dir, // MinIO keeps state in $HOME/.minio; keep it with the test
	)
	m.cmd.Stdout = m.log
	m.cmd.Stderr = m.log
	if err := m.cmd.Start(); err != nil {
		return fmt.Errorf("run %s: %w", m.args[0], err)
	}
	done := m.done
	go func() {
		_ = m.cmd.Wait() // the exit status of a killed test server tells nothing
		close(done)
	}()
	return nil
}

// Restart starts a stopped server again, on the same address, data and credentials: an S3
// endpoint that comes back after an outage.
func (m *MinIOServer) Restart(tb testing.TB) {
	tb.Helper()
	m.Stop()
	m.done, m.stop = make(chan struct{}), sync.Once{}
	if err := m.start(filepath.Dir(m.Dir)); err != nil {
		tb.Fatalf("restart MinIO: %v", err)
	}
	if err := m.waitReady(); err != nil {
		tb.Fatalf("restart MinIO: %v; its output:\n%s", err, m.log.String())
	}
}

// waitReady polls MinIO's liveness endpoint until it answers 200.
func (m *MinIOServer) waitReady() error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(minioStartTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-m.done:
			return errors.New("MinIO exited before it was ready")
		default:
		}
		resp, err := client.Get(m.Endpoint + "/minio/health/live")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("MinIO at %s not ready after %s", m.Endpoint, minioStartTimeout)
}

// Stop kills the server and waits for it to exit, so that tests can see an endpoint that does
// not answer. It is safe to call more than once; StartMinIO registers it as a cleanup.
func (m *MinIOServer) Stop() {
	m.stop.Do(func() {
		if m.cmd.Process != nil {
			_ = m.cmd.Process.Kill() // fails only if it has already exited
		}
		<-m.done
	})
}

// Client returns a minio-go client logged in as the root user, for tests to look at the server
// behind the code under test.
func (m *MinIOServer) Client(tb testing.TB) *minio.Client {
	tb.Helper()
	u, err := url.Parse(m.Endpoint)
	if err != nil {
		tb.Fatalf("parse MinIO endpoint %s: %v", m.Endpoint, err)
	}
	c, err := minio.New(u.Host, &minio.Options{
		Creds:        credentials.NewStaticV4(m.AccessKey, m.SecretKey, ""),
		Secure:       false,
		BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		tb.Fatalf("MinIO client for %s: %v", m.Endpoint, err)
	}
	return c
}

// CreateBucket creates a bucket, failing the test if it cannot.
func (m *MinIOServer) CreateBucket(tb testing.TB, name string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(tb.Context(), 30*time.Second)
	defer cancel()
	if err := m.Client(tb).MakeBucket(ctx, name, minio.MakeBucketOptions{}); err != nil {
		tb.Fatalf("create bucket %s at %s: %v", name, m.Endpoint, err)
	}
}

// SetAWSEnv points the standard AWS credential variables at this server's root user for the
// rest of the test (with t.Setenv, so the test cannot run in parallel).
func (m *MinIOServer) SetAWSEnv(t testing.TB) {
	t.Helper()
	t.Setenv("AWS_ACCESS_KEY_ID", m.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", m.SecretKey)
	t.Setenv("AWS_SESSION_TOKEN", "")
}

// freePorts returns n distinct TCP ports that were free on 127.0.0.1 a moment ago.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func randomHex(tb testing.TB, n int) string {
	tb.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		tb.Fatalf("random bytes: %v", err)
	}
	return hex.EncodeToString(b)
}

// syncBuffer collects a process's output, written from os/exec's copying goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
