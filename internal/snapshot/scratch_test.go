package snapshot

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestSweepScratch: only scratch folders whose run is known to be gone are removed.
func TestSweepScratch(t *testing.T) {
	me := parseOwner(scratchOwner())
	require.NotNil(t, me, "this host has a boot id and a PID namespace")
	dead := exec.Command("true")
	require.NoError(t, dead.Run())
	live := exec.Command("sleep", "600")
	require.NoError(t, live.Start())
	t.Cleanup(func() { _ = live.Process.Kill(); _ = live.Wait() })
	name := func(kind, host, boot, ns string, pid int) string {
		return fmt.Sprintf("etcdguard-%s-h%s-b%s-n%s-p%d-123456", kind, host, boot, ns, pid)
	}
	cases := []struct {
		name  string
		dir   string
		swept bool
	}{
		{"dead run here", name("save", me.host, me.boot, me.ns, dead.Process.Pid), true},
		{"dead verify run here", name("verify", me.host, me.boot, me.ns, dead.Process.Pid), true},
		{"live run here", name("save", me.host, me.boot, me.ns, live.Process.Pid), false},
		{"this process", name("status", me.host, me.boot, me.ns, os.Getpid()), false},
		{"earlier boot of this host", name("save", me.host, "000000000000", me.ns, live.Process.Pid), true},
		{"another PID namespace", name("save", me.host, me.boot, "1", dead.Process.Pid), false},
		{"another host", name("save", "00000000", "000000000000", me.ns, dead.Process.Pid), false},
		{"an older etcdguard's name", "etcdguard-save-1234567", false},
		{"not etcdguard's", "something-else", false},
	}
	work := t.TempDir()
	for _, tc := range cases {
		require.NoError(t, os.Mkdir(filepath.Join(work, tc.dir), 0o700))
		require.NoError(t, os.WriteFile(filepath.Join(work, tc.dir, "snapshot.db"), []byte("plain"), 0o600))
	}
	SweepScratch(work, slog.New(slog.DiscardHandler))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := os.Stat(filepath.Join(work, tc.dir))
			if tc.swept {
				require.ErrorIs(t, err, os.ErrNotExist)
			} else {
				require.NoError(t, err)
			}
		})
	}
}
