package restore

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/cluster"
)

// stopRecorder is a member controller that only records what it was asked to do.
type stopRecorder struct{ stops *int }

func (c stopRecorder) Stop(context.Context) error                    { *c.stops++; return nil }
func (c stopRecorder) Start(context.Context, cluster.StartEnv) error { return nil }
func (c stopRecorder) Describe() string                              { return "recorder" }

// TestApplyRefusesMountPointFirst: a plan that would move aside a data dir that is a mount point
// (a disk mounted at /var/lib/etcd) is refused before any member is stopped or any state written.
func TestApplyRefusesMountPointFirst(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root; CI runs as root")
	}
	root := t.TempDir()
	mounted := filepath.Join(root, "etcd")
	require.NoError(t, os.Mkdir(mounted, 0o700))
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", mounted).CombinedOutput(); err != nil {
		t.Skipf("this machine refuses to mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", mounted).Run() })
	plain := filepath.Join(root, "plain")
	require.NoError(t, os.Mkdir(plain, 0o700))

	desc := cluster.Cluster{Members: []cluster.Member{
		{Name: "m1", PeerURL: "https://127.0.0.1:2380", ClientURL: "https://127.0.0.1:2379", DataDir: mounted, StartCommand: "true", StopCommand: "true"},
		{Name: "m2", PeerURL: "https://127.0.0.2:2380", ClientURL: "https://127.0.0.2:2379", DataDir: plain, StartCommand: "true", StopCommand: "true"},
	}}
	now := time.Now()
	for _, tt := range []struct {
		name    string
		path    string
		do      string
		refused bool
	}{
		{"restore", PathRestore, ActRestore, true},
		{"replace", PathReplace, ActReplace, true},
		{"start", PathStart, ActStart, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			stops := 0
			state := t.TempDir()
			r := &Recoverer{Cluster: desc, StateDir: state, Now: func() time.Time { return now },
				Controllers: map[string]cluster.Controller{"m1": stopRecorder{&stops}, "m2": stopRecorder{&stops}}}
			p := Plan{ID: NewPlanID(now), Created: now, Path: tt.path, Cluster: desc,
				Actions: []Action{{Member: "m1", Do: tt.do}, {Member: "m2", Do: ActKeep}}}
			if !tt.refused { // starting a member does not move its data dir
				require.NoError(t, r.checkMovable(p, nil))
				return
			}
			ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			defer cancel()
			_, err := r.Apply(ctx, p, nil)
			require.ErrorIs(t, err, ErrInput)
			require.ErrorContains(t, err, "mount point")
			require.ErrorContains(t, err, "nothing was changed")
			require.Zero(t, stops, "no member was stopped")
			entries, err := os.ReadDir(state)
			require.NoError(t, err)
			require.Empty(t, entries, "no plan or journal was written")
		})
	}
}
