package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

// zstdBomb compresses head followed by pad zero bytes: a few KiB that decode to far more.
func zstdBomb(t *testing.T, head []byte, pad int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf, zstd.WithEncoderLevel(zstd.SpeedFastest))
	require.NoError(t, err)
	_, err = zw.Write(head)
	require.NoError(t, err)
	_, err = io.CopyN(zw, zeroReader{}, pad)
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestDecodeBounded: a zstd stream that decodes to more than it may (61 KB once became 2 GB)
// is refused as corrupt (exit code 5) once the bound is reached: a backup's bound is its
// manifest's raw_size, a plain file's is --max-size (8 GiB by default).
func TestDecodeBounded(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			c := startCluster(t, version)
			loadData(t, c, 200, 100)
			repo := filepath.Join(t.TempDir(), "repo")
			target := "file://" + repo
			m := saveJSON(t, 0, append([]string{"--target", target}, tlsFlags(c)...)...)
			plain := filepath.Join(t.TempDir(), "snapshot.db")
			r := etcdguard(t, "snapshot", "get", m.ID, "--output", plain, "--target", target)
			require.Equal(t, 0, r.code, r.stderr)
			raw, err := os.ReadFile(plain)
			require.NoError(t, err)

			// The backup's data object replaced by a bomb, and its manifest's stored size and SHA-256
			// made to match it, so that only the decoded size is wrong.
			bomb := zstdBomb(t, raw, 256<<20)
			t.Logf("bomb: %d bytes decode to %d", len(bomb), int64(len(raw))+256<<20)
			require.NoError(t, os.WriteFile(filepath.Join(repo, filepath.FromSlash(m.Data)), bomb, 0o600))
			sum := sha256.Sum256(bomb)
			m.StoredSize, m.StoredSHA256 = int64(len(bomb)), hex.EncodeToString(sum[:])
			data, err := json.Marshal(m)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join(repo, filepath.FromSlash(repository.ManifestName(m.ID))), data, 0o600))
			bombFile := filepath.Join(t.TempDir(), "bomb.db.zst")
			require.NoError(t, os.WriteFile(bombFile, bomb, 0o600))

			cases := []struct {
				name string
				args []string
				want string
			}{
				{"verify a backup", []string{"snapshot", "verify", m.ID, "--target", target}, "decodes to more than " + itoa(int(m.RawSize)) + " bytes"},
				{"get a backup", []string{"snapshot", "get", m.ID, "--output", filepath.Join(t.TempDir(), "out.db"), "--target", target}, "decodes to more than " + itoa(int(m.RawSize)) + " bytes"},
				{"status of a plain file", []string{"snapshot", "status", bombFile, "--max-size", "64MiB"}, "decodes to more than 67108864 bytes"},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					work := t.TempDir()
					r := etcdguard(t, append(tc.args, "--work-dir", work)...)
					require.Equal(t, 5, r.code, r.stderr)
					require.Contains(t, r.stderr, tc.want)
					left, err := os.ReadDir(work)
					require.NoError(t, err)
					require.Empty(t, left, "no scratch file is left")
				})
			}
			t.Run("a bad --max-size is a usage error", func(t *testing.T) {
				r := etcdguard(t, "snapshot", "status", bombFile, "--max-size", "lots")
				require.Equal(t, 2, r.code, r.stderr)
			})
		})
	}
}
