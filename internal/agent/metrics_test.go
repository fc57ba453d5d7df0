package agent

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/etcdguard/etcdguard/internal/backend"
	"github.com/etcdguard/etcdguard/internal/deltalog"
	"github.com/etcdguard/etcdguard/internal/etcdx"
	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/snapshot"
)

func TestFailureReason(t *testing.T) {
	for err, want := range map[error]string{
		fmt.Errorf("save: %w", etcdx.ErrUnavailable):                                   ReasonEtcdUnavailable,
		fmt.Errorf("%w: stored in 1 of 2: %w", snapshot.ErrPartial, backend.ErrDenied): ReasonPartial,
		fmt.Errorf("x: %w", snapshot.ErrCorrupt):                                       ReasonIntegrity,
		fmt.Errorf("x: %w", repository.ErrWrongKey):                                    ReasonIntegrity,
		fmt.Errorf("x: %w", repository.ErrLocked):                                      ReasonLocked,
		fmt.Errorf("%w: %w", snapshot.ErrNoTarget, backend.ErrNoSpace):                 ReasonStorageFull,
		fmt.Errorf("%w: %w", snapshot.ErrNoTarget, backend.ErrDenied):                  ReasonStorageDenied,
		fmt.Errorf("%w: %w", snapshot.ErrNoTarget, backend.ErrUnreachable):             ReasonStorageUnreachable,
		fmt.Errorf("x: %w", snapshot.ErrNoTarget):                                      ReasonStorageUnreachable,
		errors.New("something else"):                                                   ReasonOther,
	} {
		got := FailureReason(err)
		if got != want {
			t.Errorf("FailureReason(%v) = %s, want %s", err, got, want)
		}
		found := false
		for _, r := range FailureReasons {
			found = found || r == got
		}
		if !found {
			t.Errorf("%s is not one of FailureReasons", got)
		}
	}
}

func TestRecoveryPoint(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	caught := now.Add(-3 * time.Second)
	elected := now.Add(-time.Minute)
	running := func(rev, head int64, watchErr error) deltaState {
		return deltaState{running: true, base: "b", baseRev: 50, electedAt: elected, caughtUpAt: caught,
			progress: deltalog.Progress{Base: "b", Revision: rev, Head: head, WatchErr: watchErr}}
	}
	for _, tc := range []struct {
		name string
		d    deltaState
		want time.Duration
	}{
		{"caught up", running(100, 100, nil), 0},
		{"behind the head", running(90, 100, nil), 3 * time.Second},
		{"the watch fails", running(100, 100, errors.New("unavailable")), 3 * time.Second},
		{"between chains", deltaState{base: "c", electedAt: elected, caughtUpAt: caught, progress: deltalog.Progress{Base: "b", Revision: 100, Head: 100}}, 3 * time.Second},
		{"elected, never caught up", deltaState{running: true, base: "b", electedAt: elected}, time.Minute},
		{"nothing written since the base, etcd idle", deltaState{running: true, base: "b", baseRev: 50, electedAt: elected, progress: deltalog.Progress{Base: "b", Head: 50}}, 0},
		{"nothing written since the base, etcd ahead", deltaState{running: true, base: "b", baseRev: 50, electedAt: elected, progress: deltalog.Progress{Base: "b", Head: 60}}, time.Minute},
	} {
		if got := recoveryPoint(now, tc.d); got != tc.want {
			t.Errorf("%s: recovery point %s, want %s", tc.name, got, tc.want)
		}
	}
}
