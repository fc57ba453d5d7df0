package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/testenv"

	"github.com/etcdguard/etcdguard/internal/config"
	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/snapshot"
)

func TestProtected(t *testing.T) {
	now := time.Date(2026, 12, 2, 1, 10, 0, 0, time.UTC)
	every30m, err := config.ParseSchedule("*/30 * * * *")
	require.NoError(t, err)
	daily, err := config.ParseSchedule("0 3 * * *")
	require.NoError(t, err)
	// ParseSchedule refuses a schedule that never fires (30 February); Protected still copes
	// with a Schedule that has no next slot.
	var never config.Schedule = noSlot{}
	cases := []struct {
		name   string
		newest time.Time
		sched  config.Schedule
		ok     bool
		reason string
	}{
		{"no backup", time.Time{}, every30m, false, "no verified backup in the targets yet"},
		{"fresh", now.Add(-10 * time.Minute), every30m, true, "is 10m0s old, within two schedule intervals (1h0m0s)"},
		{"one slot missed", now.Add(-59 * time.Minute), every30m, true, "within two"},
		{"two slots missed", now.Add(-time.Hour), every30m, false, "is 1h0m0s old: older than two schedule intervals (1h0m0s)"},
		{"a daily schedule", now.Add(-30 * time.Hour), daily, true, "(48h0m0s)"},
		{"the backup's clock ahead of ours", now.Add(time.Minute), every30m, true, "is 0s old"},
		{"a schedule that never comes", now.Add(-time.Minute), never, false, "the snapshot schedule has no next slot"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ok, reason := Protected(now, "20261202T004000Z-1a2b3c4d", tc.newest, tc.sched)
			require.Equal(t, tc.ok, ok)
			require.Contains(t, reason, tc.reason)
			require.NotContains(t, reason, "\n")
		})
	}
}

// noSlot is a schedule that never comes.
type noSlot struct{}

func (noSlot) Next(time.Time) time.Time { return time.Time{} }

// fakeSave plays scheduled runs: the first is slow, the second fails, the others succeed. It
// records how many runs were ever in progress at once.
type fakeSave struct {
	calls, inFlight, maxInFlight atomic.Int32
}

func (f *fakeSave) save(ctx context.Context, o snapshot.SaveOptions) (snapshot.SaveResult, error) {
	n := f.calls.Add(1)
	cur := f.inFlight.Add(1)
	defer f.inFlight.Add(-1)
	for m := f.maxInFlight.Load(); cur > m && !f.maxInFlight.CompareAndSwap(m, cur); m = f.maxInFlight.Load() {
	}
	switch n {
	case 1:
		select {
		case <-time.After(2500 * time.Millisecond):
		case <-ctx.Done():
			return snapshot.SaveResult{}, ctx.Err()
		}
	case 2:
		return snapshot.SaveResult{}, fmt.Errorf("%w: no member could be used", errUnavailable)
	}
	now := o.Now()
	return snapshot.SaveResult{Manifest: repository.Manifest{ID: repository.NewID(now), Started: now, Revision: int64(n)}}, nil
}

var errUnavailable = errors.New("etcd unavailable")

func classify(err error) (int, string) {
	if errors.Is(err, errUnavailable) {
		return 4, "etcd unavailable"
	}
	return 1, "any other failure"
}

// TestSchedule runs the scheduler on a schedule of seconds with a fake save: runs never
// overlap (slots during the slow one are skipped with a log line), a failed run is logged with
// its exit-code class and the next slot succeeds, /-/ready follows, and a reload with a config
// that does not load keeps the old schedule.
func TestSchedule(t *testing.T) {
	logs := &testenv.Logs{}
	var loads atomic.Int32
	broken := errors.New(`usage error: config file x.yml: agent: snapshot-schedule "every now and then" is not a cron schedule`)
	load := func() (Settings, error) {
		if loads.Add(1) > 1 {
			return Settings{}, broken
		}
		sched, err := config.ParseSchedule("* * * * * *")
		require.NoError(t, err)
		return Settings{Schedule: sched, ScheduleSpec: "* * * * * *", ListenAddress: "127.0.0.1:0"}, nil
	}
	fake := &fakeSave{}
	reload := make(chan os.Signal, 1)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	a, err := New(ctx, Options{Load: load, Reload: reload, Logger: slog.New(slog.NewTextHandler(logs, nil)), Classify: classify, Save: fake.save})
	require.NoError(t, err)
	url := "http://" + a.Addr().String()
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

	code, body := get(t, url+"/-/healthy")
	require.Equal(t, http.StatusOK, code, body)
	code, body = get(t, url+"/-/ready")
	require.Equal(t, http.StatusServiceUnavailable, code, body)
	require.Equal(t, "not ready: no verified backup in the targets yet\n", body)

	require.Eventually(t, func() bool { return logs.Count("scheduled snapshot failed") > 0 }, 10*time.Second, 50*time.Millisecond, logs.String())
	require.Contains(t, logs.String(), "exit_code=4")
	require.Contains(t, logs.String(), `class="etcd unavailable"`)
	require.GreaterOrEqual(t, logs.Count("scheduled snapshot skipped: the previous run is still going"), 1, logs.String())

	reload <- syscall.SIGHUP
	require.Eventually(t, func() bool { return logs.Count("config reload rejected") > 0 }, 5*time.Second, 20*time.Millisecond)
	stored := logs.Count("scheduled snapshot stored and verified")
	require.Eventually(t, func() bool { return logs.Count("scheduled snapshot stored and verified") >= stored+2 }, 5*time.Second, 50*time.Millisecond,
		"the old schedule goes on after a rejected reload")
	code, body = get(t, url+"/-/ready")
	require.Equal(t, http.StatusOK, code, body)
	require.True(t, strings.HasPrefix(body, "ready: the newest backup, "), body)

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("the agent did not stop within 5 s of its context ending")
	}
	require.Equal(t, int32(1), fake.maxInFlight.Load(), "runs overlapped")
	require.Contains(t, logs.String(), "agent stopped")
	_, err = http.Get(url + "/-/healthy")
	require.Error(t, err, "the HTTP server is closed")
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}
