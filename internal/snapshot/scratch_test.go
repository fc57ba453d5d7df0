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

// TestSweepScratch: only scratch folders whose run is known to be gone are removed. A folder
// named after this process's PID that this process did not make is an earlier process's with the
// same PID (a service killed and restarted inside a container gets its predecessor's PID).
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
	work := t.TempDir()
	made, remove, err := MakeScratch(work, "save")
	require.NoError(t, err)
	t.Cleanup(remove)
	cases := []struct {
		name  string
		dir   string
		swept bool
	}{
		{"made by this process", filepath.Base(made), false},
		{"dead run here", name("save", me.host, me.boot, me.ns, dead.Process.Pid), true},
		{"dead verify run here", name("verify", me.host, me.boot, me.ns, dead.Process.Pid), true},
		{"live run here", name("save", me.host, me.boot, me.ns, live.Process.Pid), false},
		{"an earlier process with this process's PID", name("status", me.host, me.boot, me.ns, os.Getpid()), true},
		{"earlier boot of this host", name("save", me.host, "000000000000", me.ns, live.Process.Pid), true},
		{"another PID namespace", name("save", me.host, me.boot, "1", dead.Process.Pid), false},
		{"another host", name("save", "00000000", "000000000000", me.ns, dead.Process.Pid), false},
		{"an older etcdguard's name", "etcdguard-save-1234567", false},
		{"not etcdguard's", "something-else", false},
	}
	for _, tc := range cases[1:] {
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

// TestMakeScratch: a scratch folder is this process's own until it is removed; the folder left
// behind by an earlier process with this PID is swept by the next run.
func TestMakeScratch(t *testing.T) {
	work := t.TempDir()
	dir, remove, err := MakeScratch(work, "verify")
	require.NoError(t, err)
	st, err := os.Stat(dir)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), st.Mode().Perm())
	require.NoError(t, os.WriteFile(filepath.Join(dir, "snapshot.db"), []byte("plain"), 0o600))
	require.Empty(t, SweepScratch(work, slog.New(slog.DiscardHandler)), "in use by this process")
	remove()
	_, err = os.Stat(dir)
	require.ErrorIs(t, err, os.ErrNotExist)

	// The same name, made again as an earlier process with this PID would have left it (it
	// was killed before it could remove it): this process no longer holds it.
	require.NoError(t, os.Mkdir(dir, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "snapshot.db"), []byte("plain"), 0o600))
	require.Equal(t, []string{dir}, SweepScratch(work, slog.New(slog.DiscardHandler)))
}

// TestSweepPartials: a partial file of this process is left while it is written; one named after
// this process's PID that this process did not create is an earlier process's and is removed.
func TestSweepPartials(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "snapshot.db")
	f, release, err := createPartial(dst)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close(); release() })
	earlier := filepath.Join(filepath.Dir(dst), partialPrefix(dst)+scratchOwner()+"-0123456789")
	require.NoError(t, os.WriteFile(earlier, []byte("plain"), 0o600))
	require.Equal(t, []string{earlier}, SweepPartials(dst, slog.New(slog.DiscardHandler)))
	_, err = os.Stat(f.Name())
	require.NoError(t, err, "this process's partial file is left")
}
