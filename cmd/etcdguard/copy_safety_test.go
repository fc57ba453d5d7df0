package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

// objectSum returns the SHA-256 of one object of a target, read through its backend.
func objectSum(t *testing.T, targetURL, name string) []byte {
	t.Helper()
	sum := sha256.Sum256(readObject(t, targetURL, name))
	return sum[:]
}

// readObject returns one object of a target.
func readObject(t *testing.T, targetURL, name string) []byte {
	t.Helper()
	tg, err := repository.ParseTarget(targetURL)
	require.NoError(t, err)
	repo, err := repository.Open(t.Context(), tg)
	require.NoError(t, err)
	defer repo.Close()
	rc, err := repo.Backend().Open(t.Context(), name)
	require.NoError(t, err)
	defer rc.Close()
	data, err := io.ReadAll(rc)
	require.NoError(t, err)
	return data
}

// putObject stores data under name in a target, replacing what is there (test set-up only).
func putObject(t *testing.T, targetURL, name string, data []byte) {
	t.Helper()
	tg, err := repository.ParseTarget(targetURL)
	require.NoError(t, err)
	repo, err := repository.Open(t.Context(), tg)
	require.NoError(t, err)
	defer repo.Close()
	_, err = repo.Save(t.Context(), name, bytes.NewReader(data))
	require.NoError(t, err)
}

// TestCopyNeverOverwrites: `snapshot copy` into a local disk and into S3 (MinIO), from a real
// cluster's backups. A source manifest whose data field names another backup's data object is
// rejected (it once made the copy write over that backup in the destination), and a destination
// manifest that cannot be read is never replaced (it was taken for absent, and both the data and
// the manifest were written over).
func TestCopyNeverOverwrites(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			c := startCluster(t, version)
			loadData(t, c, 300, 100)
			_, s3URL := startS3(t)
			dsts := []struct {
				name string
				url  func(t *testing.T) string
			}{
				{"local", func(t *testing.T) string { return "file://" + filepath.Join(t.TempDir(), "dst") + "?name=dst" }},
				{"s3", func(t *testing.T) string {
					return s3URL[:len("s3://etcd-backups/")] + testenv.Prefix(t) + s3URL[len("s3://etcd-backups/prod"):] + "&name=dst"
				}},
			}
			for _, d := range dsts {
				t.Run(d.name, func(t *testing.T) {
					src := "file://" + filepath.Join(t.TempDir(), "src") + "?name=src"
					dst := d.url(t)
					both := []string{"--target", src, "--target", dst}
					x := saveJSON(t, 0, append([]string{"--target", dst}, tlsFlags(c)...)...)
					xSum := objectSum(t, dst, x.Data)

					t.Run("source manifest naming another backup's data", func(t *testing.T) {
						// In src, backup y's manifest names the data object of backup x (which src does
						// not hold), and y's data is stored under that name: what y's manifest says of
						// the stored bytes is true, so only the name check can catch it.
						y := saveJSON(t, 0, append([]string{"--target", src}, tlsFlags(c)...)...)
						forged := y
						forged.Data = x.Data
						data, err := json.Marshal(forged)
						require.NoError(t, err)
						putObject(t, src, repository.ManifestName(y.ID), data)
						putObject(t, src, x.Data, readObject(t, src, y.Data))

						r := etcdguard(t, append([]string{"snapshot", "copy", "--to", "dst"}, both...)...)
						require.Contains(t, r.stderr, "names the data object")
						require.Equal(t, xSum, objectSum(t, dst, x.Data), "backup %s in dst is untouched", x.ID)
						r = etcdguard(t, "snapshot", "verify", "--all", "--target", dst)
						require.Equal(t, 0, r.code, r.stderr)
						l := list(t, "--target", dst)
						require.Len(t, l.Backups, 1, "the forged backup was not copied")
						require.Equal(t, x.ID, l.Backups[0].ID)
					})

					t.Run("destination manifest that cannot be read", func(t *testing.T) {
						z := saveJSON(t, 0, append(both, tlsFlags(c)...)...)
						garbage := []byte("{\"format\": 1, \"id\": \"" + z.ID + "\", cut short by a crash")
						putObject(t, dst, repository.ManifestName(z.ID), garbage)
						zSum := objectSum(t, dst, z.Data)

						r := etcdguard(t, append([]string{"snapshot", "copy", "--to", "dst"}, both...)...)
						require.NotEqual(t, 0, r.code, "the copy of %s fails", z.ID)
						require.Contains(t, r.stderr, "not replaced")
						sum := sha256.Sum256(garbage)
						require.Equal(t, sum[:], objectSum(t, dst, repository.ManifestName(z.ID)), "the unreadable manifest is left as it is")
						require.Equal(t, zSum, objectSum(t, dst, z.Data), "its data object is left as it is")
						require.Equal(t, xSum, objectSum(t, dst, x.Data))
					})
				})
			}
		})
	}
}

// TestSaveKeepsOddBackups: a backup whose manifest.json is a symlink or a folder (local target)
// was taken for an incomplete upload and its data deleted by the next save. Now it is left as it
// is and reported.
func TestSaveKeepsOddBackups(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			c := startCluster(t, version)
			loadData(t, c, 100, 10)
			cases := []struct {
				name string
				odd  func(t *testing.T, manifest string)
			}{
				{"symlink", func(t *testing.T, manifest string) {
					moved := filepath.Join(t.TempDir(), "manifest.json")
					require.NoError(t, os.Rename(manifest, moved))
					require.NoError(t, os.Symlink(moved, manifest))
				}},
				{"folder", func(t *testing.T, manifest string) {
					require.NoError(t, os.Remove(manifest))
					require.NoError(t, os.Mkdir(manifest, 0o700))
				}},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					repo := filepath.Join(t.TempDir(), "repo")
					m := saveJSON(t, 0, append([]string{"--target", "file://" + repo}, tlsFlags(c)...)...)
					data := filepath.Join(repo, filepath.FromSlash(m.Data))
					before, err := os.ReadFile(data)
					require.NoError(t, err)
					tc.odd(t, filepath.Join(repo, filepath.FromSlash(repository.ManifestName(m.ID))))

					r := etcdguard(t, append([]string{"snapshot", "save", "--target", "file://" + repo}, tlsFlags(c)...)...)
					require.Equal(t, 0, r.code, r.stderr)
					require.Contains(t, r.stderr, "odd backup folder left as it is")
					require.Contains(t, r.stderr, m.ID)
					after, err := os.ReadFile(data)
					require.NoError(t, err, "the data of backup %s is still there", m.ID)
					require.Equal(t, before, after)
				})
			}
		})
	}
}

// TestCopyToArchive: a copy into an archive target (S3 GLACIER or DEEP_ARCHIVE, whose objects
// cannot be read back at once; MinIO refuses those classes, so the target is marked archive=true)
// is checked by the server's CRC-32C of the whole object instead of a read-back, and says so; a
// copy into an ordinary target is still read back.
func TestCopyToArchive(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			c := startCluster(t, version)
			loadData(t, c, 300, 100)
			_, s3URL := startS3(t)
			src := "file://" + filepath.Join(t.TempDir(), "src") + "?name=src"
			prefix := "archive-" + version
			archive := strings.Replace(s3URL, "/prod?", "/"+prefix+"?", 1) + "&archive=true&name=deep"
			plain := strings.Replace(s3URL, "/prod?", "/"+prefix+"-plain?", 1) + "&name=plain"
			m := saveJSON(t, 0, append([]string{"--target", src}, tlsFlags(c)...)...)
			all := []string{"--target", src, "--target", archive, "--target", plain}

			for _, tc := range []struct{ to, check, says string }{
				{"deep", "server-crc32c", "verified by the server's CRC-32C of the whole object"},
				{"plain", "read-back", "read back and verified"},
			} {
				r := etcdguard(t, append([]string{"snapshot", "copy", "--to", tc.to}, all...)...)
				require.Equal(t, 0, r.code, r.stderr)
				require.Contains(t, r.stdout, tc.says)
				var copied repository.Manifest
				to := archive
				if tc.to == "plain" {
					to = plain
				}
				require.NoError(t, json.Unmarshal(readObject(t, to, repository.ManifestName(m.ID)), &copied))
				found := false
				for _, tr := range copied.Targets {
					if tr.Name == tc.to {
						found = true
						require.Equal(t, tc.check, tr.Check)
						require.Equal(t, "src", tr.CopiedFrom)
					}
				}
				require.True(t, found, "the copy's manifest records how it was checked")
				r = etcdguard(t, "snapshot", "verify", m.ID, "--target", to)
				require.Equal(t, 0, r.code, r.stderr)
			}
		})
	}
}
