package doctor

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestLayoutFindings(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etcd")
	for _, sub := range []string{"member/snap", "member/wal"} {
		require.NoError(t, os.MkdirAll(filepath.Join(dir, sub), 0o700))
	}
	require.NoError(t, os.Chmod(dir, 0o700))
	require.NoError(t, os.Chmod(filepath.Join(dir, "member"), 0o700))
	write := func(name string, mode os.FileMode) {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte("x"), mode))
		require.NoError(t, os.Chmod(p, mode))
	}
	write("member/snap/db", 0o600)
	write("member/wal/0000000000000000-0000000000000000.wal", 0o600)
	write("member/snap/0000000000000002-0000000000000064.snap", 0o644) // as etcd writes them
	require.Empty(t, layoutFindings(dir), "etcd's own modes")

	write("member/snap/db", 0o644)
	write("member/wal/0000000000000000-0000000000000000.wal.broken", 0o644) // etcd 3.5's repair copy
	require.NoError(t, os.Chmod(dir, 0o755))
	fs := layoutFindings(dir)
	require.Len(t, fs, 2)
	var summaries []string
	for _, f := range fs {
		require.Equal(t, Warning, f.Severity)
		summaries = append(summaries, f.Summary+" "+strings.Join(f.Evidence, " ")+" "+f.Next)
	}
	all := strings.Join(summaries, "\n")
	require.Contains(t, all, "data dir mode 0755: etcd wants 0700")
	require.Contains(t, all, filepath.Join(dir, "member/snap/db")+" (mode 0644)")
	require.Contains(t, all, "2 file(s)")
	require.Contains(t, all, ".wal.broken (mode 0644)")
	require.Contains(t, all, "chmod -R go-rwx "+dir)

	require.NoError(t, os.RemoveAll(filepath.Join(dir, "member", "wal")))
	fs = layoutFindings(dir)
	var missing bool
	for _, f := range fs {
		if f.Severity == Critical && strings.Contains(f.Summary, filepath.Join("member", "wal")+" is missing") {
			missing = true
		}
	}
	require.True(t, missing, "%+v", fs)
}
