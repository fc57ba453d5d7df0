package repository

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/backend/local"
)

func newRepo(t *testing.T) (*Repository, string) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "repo")
	be, err := local.New(root, local.Options{})
	require.NoError(t, err)
	return New(Target{Name: "local", URL: "file://" + root}, be), root
}

func TestCleanupIncomplete(t *testing.T) {
	repo, root := newRepo(t)
	ctx := t.Context()
	complete := Manifest{Format: FormatVersion, ID: "20261124T030000Z-0000000a", Kind: KindFull, DataObject: DataObject{Compression: CompressionZstd, Data: "snapshots/20261124T030000Z-0000000a/snapshot.db.zst"}}
	_, err := repo.Save(ctx, complete.Data, strings.NewReader("data"))
	require.NoError(t, err)
	require.NoError(t, repo.SaveManifest(ctx, complete))
	// An upload that failed before its manifest, and one a crash left half-written.
	_, err = repo.Save(ctx, "snapshots/20261124T031000Z-0000000b/snapshot.db.zst", strings.NewReader("data"))
	require.NoError(t, err)
	crashed := filepath.Join(root, "snapshots", "20261124T032000Z-0000000c")
	require.NoError(t, os.MkdirAll(crashed, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(crashed, "snapshot.db.zst.partial-42"), []byte("half"), 0o600))

	holdLock(t, repo, LockShared)
	removed, odd, err := repo.CleanupIncomplete(ctx)
	require.NoError(t, err)
	require.Empty(t, odd)
	require.Equal(t, []string{
		"snapshots/20261124T031000Z-0000000b/snapshot.db.zst",
		"snapshots/20261124T032000Z-0000000c/snapshot.db.zst.partial-42",
	}, removed)
	ms, skipped, err := repo.Manifests(ctx)
	require.Empty(t, skipped)
	require.NoError(t, err)
	require.Len(t, ms, 1)
	require.Equal(t, complete.ID, ms[0].ID)
	require.FileExists(t, filepath.Join(root, filepath.FromSlash(complete.Data)))
	dirs, _ := os.ReadDir(filepath.Join(root, "snapshots"))
	require.Len(t, dirs, 1)
}

// TestManifestChecks writes manifests that do not fit their folder: each is skipped (reported,
// never used), and the good one beside them is still read.
func TestManifestChecks(t *testing.T) {
	const id, other = "20261124T030000Z-0000000a", "20261124T031000Z-0000000b"
	good := Manifest{Format: FormatVersion, ID: id, Kind: KindFull, DataObject: DataObject{Compression: CompressionZstd, Data: "snapshots/" + id + "/snapshot.db.zst"}}
	age := &Encryption{Scheme: "age", Recipients: []string{"sha256:0011223344556677"}}
	cases := []struct {
		name    string
		edit    func(m *Manifest)
		wantErr string
	}{
		{"good", func(m *Manifest) {}, ""},
		{"good, encrypted", func(m *Manifest) { m.Encryption, m.Data = age, m.Data+".age" }, ""},
		{"good, plain", func(m *Manifest) { m.Compression, m.Data = CompressionNone, "snapshots/"+id+"/snapshot.db" }, ""},
		{"id of another backup", func(m *Manifest) { m.ID, m.Data = other, "snapshots/"+other+"/snapshot.db.zst" }, "has the id " + other + " of another backup"},
		{"data of another backup", func(m *Manifest) { m.Data = "snapshots/" + other + "/snapshot.db.zst" }, "names the data object"},
		{"data outside the repository", func(m *Manifest) { m.Data = "../../etc/passwd" }, "names the data object"},
		{"data name of another codec", func(m *Manifest) { m.Data = "snapshots/" + id + "/snapshot.db" }, "names the data object"},
		{"encrypted, unencrypted data name", func(m *Manifest) { m.Encryption = age }, "names the data object"},
		{"unknown compression", func(m *Manifest) { m.Compression = "lz4" }, `unknown compression "lz4"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			repo, _ := newRepo(t)
			m := good
			tc.edit(&m)
			data, err := json.Marshal(m)
			require.NoError(t, err)
			_, err = repo.Save(t.Context(), ManifestName(id), bytes.NewReader(data))
			require.NoError(t, err)
			ms, skipped, err := repo.Manifests(t.Context())
			require.NoError(t, err)
			_, merr := repo.Manifest(t.Context(), id)
			if tc.wantErr == "" {
				require.NoError(t, merr)
				require.Empty(t, skipped)
				require.Len(t, ms, 1)
				return
			}
			require.ErrorContains(t, merr, tc.wantErr)
			require.Empty(t, ms)
			require.Len(t, skipped, 1)
			require.Equal(t, id, skipped[0].ID)
			require.ErrorContains(t, skipped[0], tc.wantErr)
		})
	}
}

// TestCleanupKeepsOddManifests: a backup whose manifest.json is a symlink, a folder or has
// something beside it is not incomplete: nothing of it is removed, and it is reported.
func TestCleanupKeepsOddManifests(t *testing.T) {
	const id = "20261124T030000Z-0000000a"
	cases := []struct {
		name string
		make func(t *testing.T, dir string)
	}{
		{"symlink to a manifest", func(t *testing.T, dir string) {
			real := filepath.Join(t.TempDir(), "manifest.json")
			require.NoError(t, os.WriteFile(real, []byte("{}"), 0o600))
			require.NoError(t, os.Symlink(real, filepath.Join(dir, "manifest.json")))
		}},
		{"dangling symlink", func(t *testing.T, dir string) {
			require.NoError(t, os.Symlink("/nonexistent/manifest.json", filepath.Join(dir, "manifest.json")))
		}},
		{"folder named manifest.json", func(t *testing.T, dir string) {
			require.NoError(t, os.Mkdir(filepath.Join(dir, "manifest.json"), 0o700))
		}},
		{"a file inside a folder named manifest.json", func(t *testing.T, dir string) {
			require.NoError(t, os.Mkdir(filepath.Join(dir, "manifest.json"), 0o700))
			require.NoError(t, os.WriteFile(filepath.Join(dir, "manifest.json", "x"), []byte("{}"), 0o600))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			repo, root := newRepo(t)
			data := "snapshots/" + id + "/snapshot.db.zst"
			_, err := repo.Save(t.Context(), data, strings.NewReader("data"))
			require.NoError(t, err)
			tc.make(t, filepath.Join(root, "snapshots", id))
			holdLock(t, repo, LockExclusive)
			removed, odd, err := repo.CleanupIncomplete(t.Context())
			require.NoError(t, err)
			require.Empty(t, removed)
			require.Len(t, odd, 1)
			require.Contains(t, odd[0], id)
			require.FileExists(t, filepath.Join(root, filepath.FromSlash(data)))
		})
	}
}

func TestParseTarget(t *testing.T) {
	cases := []struct {
		spec    string
		want    Target
		wantErr string
	}{
		{"file:///backup/etcd", Target{Name: "local", URL: "file:///backup/etcd", Media: "disk"}, ""},
		{"file:///mnt/ltfs/etcd?offline=true&media=tape", Target{Name: "tape", URL: "file:///mnt/ltfs/etcd", Media: "tape", Offline: true}, ""},
		{"file:///mnt/usb?offline=1&name=usb", Target{Name: "usb", URL: "file:///mnt/usb", Media: "offline", Offline: true}, ""},
		{"s3://bkt/p?endpoint=http://127.0.0.1:9000&name=minio", Target{Name: "minio", URL: "s3://bkt/p?endpoint=http%3A%2F%2F127.0.0.1%3A9000", Media: "s3"}, ""},
		{"file://relative/path", Target{}, "needs an absolute path"},
		{"file:///x?offline=maybe", Target{}, "not true or false"},
		{"gs://bucket", Target{}, `unknown scheme "gs"`},
		{"s3:///prefix", Target{}, "name the bucket"},
		// A parameter that cannot be unescaped was dropped when the query was written back, and
		// with it the endpoint: the run went to AWS with the credentials meant for another server.
		{"s3://bkt/p?endpoint=http://127.0.0.1:9000/%zz", Target{}, "not validly escaped"},
		{"s3://bkt/p?endpoint=http%3A%2F%2F127.0.0.1%3A9000&name=minio%zz", Target{}, "not validly escaped"},
		// What the S3 backend refuses when it opens the target is refused here, with the
		// settings, and the message never shows the credentials.
		{"s3://AKIDLEAKED:SECRETLEAKED@host/bkt", Target{}, "credentials do not belong in the URL"},
		{"s3://bkt/p?endpoint=http://AKIDLEAKED:SECRETLEAKED@127.0.0.1:9000", Target{}, "credentials do not belong in the endpoint"},
		{"s3://bkt/p?secret-key=SECRETLEAKED&access-key=AKIDLEAKED", Target{}, "unknown parameter"},
		{"s3://bkt/p?endpoint=ftp://127.0.0.1:9000", Target{}, "want http://host[:port]"},
		{"s3://Bad_Bucket/p", Target{}, `bucket "Bad_Bucket"`},
		{"s3://bkt/p?storage-class=COLD", Target{}, `storage class "COLD" is not supported`},
	}
	for _, tc := range cases {
		t.Run(tc.spec, func(t *testing.T) {
			got, err := ParseTarget(tc.spec)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				require.NotContains(t, err.Error(), "SECRETLEAKED")
				require.NotContains(t, err.Error(), "AKIDLEAKED")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
	ts, err := NormalizeTargets([]Target{{URL: "file:///a"}, {URL: "file:///b"}})
	require.NoError(t, err)
	require.Equal(t, "local", ts[0].Name)
	require.Equal(t, "local-2", ts[1].Name)
	// A default name never lands on a name given: two targets named alike would count as one
	// copy in the 3-2-1 check and share one inventory.
	ts, err = NormalizeTargets([]Target{{URL: "file:///a"}, {URL: "file:///b", Name: "local-2"}, {URL: "file:///c"}})
	require.NoError(t, err)
	require.Equal(t, []string{"local", "local-2", "local-3"}, []string{ts[0].Name, ts[1].Name, ts[2].Name})
	ts, err = NormalizeTargets([]Target{{URL: "file:///a"}, {URL: "file:///b", Name: "local"}})
	require.NoError(t, err)
	require.Equal(t, []string{"local-2", "local"}, []string{ts[0].Name, ts[1].Name}, "the name given is kept")
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }
