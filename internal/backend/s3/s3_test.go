package s3_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/backend"
	"github.com/etcdguard/etcdguard/internal/backend/backendtest"
	"github.com/etcdguard/etcdguard/internal/backend/s3"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

const prefix = "etcd/prod"

func TestParseURL(t *testing.T) {
	tests := []struct {
		url     string
		want    s3.Config
		wantErr string
	}{
		{url: "s3://backups", want: s3.Config{Bucket: "backups"}},
		{url: "s3://backups/", want: s3.Config{Bucket: "backups"}},
		{url: "s3://backups/etcd/prod/", want: s3.Config{Bucket: "backups", Prefix: "etcd/prod"}},
		{
			url: "s3://backups/etcd?endpoint=http://127.0.0.1:9000&region=eu-west-1&storage-class=DEEP_ARCHIVE",
			want: s3.Config{Bucket: "backups", Prefix: "etcd", Endpoint: "http://127.0.0.1:9000", Region: "eu-west-1",
				StorageClass: "DEEP_ARCHIVE"},
		},
		{url: "s3://b-1.x/p?storage-class=standard_ia", want: s3.Config{Bucket: "b-1.x", Prefix: "p", StorageClass: "STANDARD_IA"}},
		{url: "s3://bkt?endpoint=https://s3.example.com/", want: s3.Config{Bucket: "bkt", Endpoint: "https://s3.example.com/"}},

		{url: "file:///backups", wantErr: `scheme "file" is not s3`},
		{url: "s3://AKIA:secret@backups/p", wantErr: "credentials do not belong in the URL"},
		{url: "s3:backups", wantErr: "want s3://bucket/prefix"},
		{url: "s3:///p", wantErr: "want s3://bucket/prefix"},
		{url: "s3://Bad_Bucket/p", wantErr: `bucket "Bad_Bucket"`},
		{url: "s3://bkt/p?storage-class=COLD", wantErr: `storage class "COLD" is not supported: use one of STANDARD, STANDARD_IA, GLACIER, DEEP_ARCHIVE`},
		{url: "s3://bkt/p?sotrage-class=GLACIER", wantErr: `unknown parameter "sotrage-class" (known: endpoint, region, storage-class, archive)`},
		{url: "s3://bkt/p?region=a&region=b", wantErr: "parameter region is given 2 times"},
		{url: "s3://bkt/p?endpoint=127.0.0.1:9000", wantErr: "want http://host[:port] or https://host[:port]"},
		{url: "s3://bkt/p?endpoint=ftp://host", wantErr: "want http://host[:port] or https://host[:port]"},
		{url: "s3://bkt/p?endpoint=http://k:s@host", wantErr: "credentials do not belong in the endpoint"},
		{url: "s3://bkt/p?endpoint=http://host/path", wantErr: "want only scheme, host and port"},
		{url: "s3://bkt/a//c", wantErr: `prefix "a//c"`},
		{url: "s3://bkt/a/../c", wantErr: `prefix "a/../c"`},
		// A parameter that cannot be unescaped was dropped, and with it the endpoint: the run
		// went to AWS with the credentials meant for another server.
		{url: "s3://bkt/p?endpoint=http://127.0.0.1:9000/%zzsecret", wantErr: "not validly escaped"},
		{url: "s3://bkt/p?region=eu-west-1&endpoint=http%3A%2F%2F127.0.0.1%3A9000%zz", wantErr: "not validly escaped"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			u, err := url.Parse(tt.url)
			require.NoError(t, err)
			got, err := s3.ParseURL(u)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				require.NotContains(t, err.Error(), "secret", "the message must not repeat credentials")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		name    string
		cfg     s3.Config
		wantErr string
	}{
		{"only access key", s3.Config{Bucket: "bkt", AccessKey: "a"}, "set both the access key and the secret key, or neither"},
		{"part too small", s3.Config{Bucket: "bkt", PartSize: 1 << 20}, "part size 1048576 is outside what S3 allows"},
		{"no bucket", s3.Config{}, `bucket ""`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s3.New(t.Context(), tt.cfg)
			require.ErrorContains(t, err, tt.wantErr)
		})
	}
}

func TestConformance(t *testing.T) {
	m := testenv.StartMinIO(t)
	n := 0
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		n++
		bucket := fmt.Sprintf("conformance-%d", n)
		m.CreateBucket(t, bucket)
		b := newS3(t, m, s3.Config{Bucket: bucket, Prefix: prefix})
		t.Cleanup(func() {
			requireNoIncompleteUploads(t, m, bucket)
			requireAllUnderPrefix(t, m, bucket, prefix+"/")
		})
		return b
	})
}

func TestLocation(t *testing.T) {
	m := testenv.StartMinIO(t)
	m.CreateBucket(t, "loc")
	b := newS3(t, m, s3.Config{Bucket: "loc", Prefix: prefix})
	require.Equal(t, "s3://loc/"+prefix+"?endpoint="+m.Endpoint, b.Location())
	require.NotContains(t, b.Location(), m.AccessKey)
	require.NotContains(t, b.Location(), m.SecretKey)

	// The location is a URL ParseURL reads back.
	u, err := url.Parse(b.Location())
	require.NoError(t, err)
	cfg, err := s3.ParseURL(u)
	require.NoError(t, err)
	require.Equal(t, s3.Config{Bucket: "loc", Prefix: prefix, Endpoint: m.Endpoint}, cfg)
}

// TestUnavailable checks that every way of not being able to use the bucket is reported up
// front by New, as backend.ErrUnavailable, with a message that says what to fix.
func TestUnavailable(t *testing.T) {
	m := testenv.StartMinIO(t)
	m.CreateBucket(t, "exists")
	stopped := testenv.StartMinIO(t)
	stopped.Stop()

	tests := []struct {
		name     string
		cfg      s3.Config
		wantMsgs []string
		wantKind string
	}{
		{
			name:     "no such bucket",
			wantKind: backend.KindUnavailable,
			cfg:      s3.Config{Bucket: "missing", Prefix: "p", Endpoint: m.Endpoint, AccessKey: m.AccessKey, SecretKey: m.SecretKey},
			wantMsgs: []string{fmt.Sprintf(`s3://missing/p: bucket "missing" does not exist at %s: create it or fix the URL`,
				m.Endpoint)},
		},
		{
			name:     "unknown access key",
			wantKind: backend.KindDenied,
			cfg:      s3.Config{Bucket: "exists", Endpoint: m.Endpoint, AccessKey: "nobody", SecretKey: m.SecretKey},
			wantMsgs: []string{m.Endpoint + " does not know the access key", "AWS_ACCESS_KEY_ID"},
		},
		{
			name:     "wrong secret key",
			wantKind: backend.KindDenied,
			cfg:      s3.Config{Bucket: "exists", Endpoint: m.Endpoint, AccessKey: m.AccessKey, SecretKey: "wrong-secret-key"},
			wantMsgs: []string{m.Endpoint + " refused the secret key", "AWS_SECRET_ACCESS_KEY"},
		},
		{
			name:     "server stopped",
			wantKind: backend.KindUnreachable,
			cfg:      s3.Config{Bucket: "exists", Endpoint: stopped.Endpoint, AccessKey: m.AccessKey, SecretKey: m.SecretKey},
			wantMsgs: []string{"cannot reach " + stopped.Endpoint + " (connection refused)", "S3 server is up"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			b, err := s3.New(t.Context(), tt.cfg)
			require.Nil(t, b)
			require.ErrorIs(t, err, backend.ErrUnavailable)
			require.Equal(t, tt.wantKind, backend.Kind(err))
			t.Logf("after %s: %v", time.Since(start).Round(time.Millisecond), err)
			for _, msg := range tt.wantMsgs {
				require.ErrorContains(t, err, msg)
			}
			require.NotContains(t, err.Error(), "\n")
			if tt.cfg.SecretKey != "" {
				require.NotContains(t, err.Error(), tt.cfg.SecretKey)
			}
		})
	}
}

// TestUnavailableLater checks the same errors from a backend whose storage goes away after New.
func TestUnavailableLater(t *testing.T) {
	m := testenv.StartMinIO(t)
	m.CreateBucket(t, "bkt")
	b := newS3(t, m, s3.Config{Bucket: "bkt"})
	ctx := t.Context()
	_, err := b.Save(ctx, "obj", strings.NewReader("x"))
	require.NoError(t, err)

	// The bucket is deleted.
	require.NoError(t, m.Client(t).RemoveObject(ctx, "bkt", "obj", minio.RemoveObjectOptions{}))
	require.NoError(t, m.Client(t).RemoveBucket(ctx, "bkt"))
	_, err = b.Save(ctx, "obj", strings.NewReader("x"))
	require.ErrorIs(t, err, backend.ErrUnavailable)
	require.ErrorContains(t, err, `bucket "bkt" does not exist`)
	_, err = b.Stat(ctx, "obj")
	require.ErrorIs(t, err, backend.ErrUnavailable)
	require.NotErrorIs(t, err, backend.ErrNotExist, "a missing bucket is not a missing object")
	err = b.List(ctx, "", func(backend.FileInfo) error { return nil })
	require.ErrorIs(t, err, backend.ErrUnavailable)

	// The server stops.
	m.Stop()
	for name, op := range map[string]func() error{
		"Save":   func() error { _, err := b.Save(ctx, "obj", strings.NewReader("x")); return err },
		"Open":   func() error { _, err := b.Open(ctx, "obj"); return err },
		"Stat":   func() error { _, err := b.Stat(ctx, "obj"); return err },
		"List":   func() error { return b.List(ctx, "", func(backend.FileInfo) error { return nil }) },
		"Remove": func() error { return b.Remove(ctx, "obj") },
	} {
		err := op()
		require.ErrorIs(t, err, backend.ErrUnavailable, name)
		require.ErrorIs(t, err, backend.ErrUnreachable, name)
		require.ErrorContains(t, err, "cannot reach "+m.Endpoint, name)
	}
}

// TestCredentialsFromEnvironment checks the default credential chain reads the standard AWS
// variables.
func TestCredentialsFromEnvironment(t *testing.T) {
	m := testenv.StartMinIO(t)
	m.CreateBucket(t, "env")
	m.SetAWSEnv(t)
	b, err := s3.New(t.Context(), s3.Config{Bucket: "env", Endpoint: m.Endpoint})
	require.NoError(t, err)
	defer b.Close()
	_, err = b.Save(t.Context(), "x", strings.NewReader("x"))
	require.NoError(t, err)
}

// TestNoCredentials checks the message when the credential chain finds nothing: the request is
// sent anonymously and refused.
func TestNoCredentials(t *testing.T) {
	m := testenv.StartMinIO(t)
	m.CreateBucket(t, "anon")
	t.Setenv("HOME", t.TempDir()) // no ~/.aws/credentials
	for _, v := range []string{"AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_SECRET_KEY",
		"AWS_SESSION_TOKEN", "AWS_SHARED_CREDENTIALS_FILE", "AWS_PROFILE"} {
		t.Setenv(v, "")
	}
	_, err := s3.New(t.Context(), s3.Config{Bucket: "anon", Endpoint: m.Endpoint})
	require.ErrorIs(t, err, backend.ErrUnavailable)
	require.ErrorIs(t, err, backend.ErrDenied)
	require.ErrorContains(t, err, `access to bucket "anon" denied at `+m.Endpoint+": no credentials were found")
}

// TestChecksumAndParts checks what reaches the server: small objects in one request, larger
// ones in parts of the configured size, and a CRC32C checksum the server verified and stored.
func TestChecksumAndParts(t *testing.T) {
	m := testenv.StartMinIO(t)
	m.CreateBucket(t, "sums")
	b := newS3(t, m, s3.Config{Bucket: "sums"})
	tests := []struct {
		size      int64
		wantParts int // 0 for a single PUT
	}{
		{0, 0},
		{1000, 0},
		{s3.DefaultPartSize - 1, 0},
		{s3.DefaultPartSize, 1}, // a reader does not say it has ended until it is read past its end
		{backendtest.LargeSize, int((backendtest.LargeSize + s3.DefaultPartSize - 1) / s3.DefaultPartSize)},
	}
	for _, tt := range tests {
		name := fmt.Sprintf("size-%d", tt.size)
		t.Run(name, func(t *testing.T) {
			n, err := b.Save(t.Context(), name, io.LimitReader(zeros{}, tt.size))
			require.NoError(t, err)
			require.Equal(t, tt.size, n)
			info, err := m.Client(t).StatObject(t.Context(), "sums", name, minio.StatObjectOptions{Checksum: true})
			require.NoError(t, err)
			if tt.size > 0 { // minio-go sends no checksum with an empty body
				require.NotEmpty(t, info.ChecksumCRC32C, "the server stored a CRC32C checksum")
			}
			wantSuffix := ""
			if tt.wantParts > 0 {
				wantSuffix = fmt.Sprintf("-%d", tt.wantParts)
			}
			_, suffix, _ := strings.Cut(info.ETag, "-")
			if suffix != "" {
				suffix = "-" + suffix
			}
			require.Equal(t, wantSuffix, suffix, "ETag %s tells the number of parts", info.ETag)
		})
	}
}

// TestSaveMemoryIsBounded saves an object several times larger than the memory Save may use,
// and watches the heap meanwhile. Save holds the head it read plus one buffer per upload
// thread and one being filled: (Concurrency+2) parts live. The bound is twice that again for
// the garbage the collector lets accumulate (GOGC=100 lets the heap reach about twice what is
// live) and twice for the HTTP client's own buffers, so it holds on a loaded machine; it is
// still at most half the object's size, which a Save that buffered the object could not meet.
func TestSaveMemoryIsBounded(t *testing.T) {
	m := testenv.StartMinIO(t)
	m.CreateBucket(t, "mem")
	b := newS3(t, m, s3.Config{Bucket: "mem"})
	const size = 320 << 20
	const limit = 4 * (s3.DefaultConcurrency + 2) * s3.DefaultPartSize // 128 MiB
	require.LessOrEqual(t, 2*limit, size, "the object is far larger than the bound")

	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			peak.Store(max(peak.Load(), ms.HeapInuse))
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	})
	n, err := b.Save(t.Context(), "big", io.LimitReader(zeros{}, size))
	close(done)
	wg.Wait()
	require.NoError(t, err)
	require.Equal(t, int64(size), n)
	t.Logf("peak heap in use while saving %d MiB: %d MiB", size>>20, peak.Load()>>20)
	require.Less(t, peak.Load(), uint64(limit))
}

// TestFailedUploadIsAborted makes a multipart upload fail after some parts went up, by a reader
// error and by cancellation, and checks that the server holds no incomplete upload afterwards.
func TestFailedUploadIsAborted(t *testing.T) {
	m := testenv.StartMinIO(t)
	m.CreateBucket(t, "abort")
	b := newS3(t, m, s3.Config{Bucket: "abort", Prefix: prefix, PartSize: 5 << 20})
	var started int // incomplete uploads seen just before the failure

	tests := []struct {
		name    string
		reader  func(cancel context.CancelFunc) io.Reader
		wantErr error
	}{
		{
			name: "reader error",
			reader: func(context.CancelFunc) io.Reader {
				return io.MultiReader(io.LimitReader(zeros{}, 23<<20), uploadsProbe{t, m, &started}, errReader{errBroken})
			},
			wantErr: errBroken,
		},
		{
			name: "cancelled",
			reader: func(cancel context.CancelFunc) io.Reader {
				return io.MultiReader(io.LimitReader(zeros{}, 23<<20), uploadsProbe{t, m, &started}, cancelReader{cancel},
					io.LimitReader(zeros{}, 10<<20))
			},
			wantErr: context.Canceled,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			started = 0
			_, err := b.Save(ctx, "big", tt.reader(cancel))
			require.ErrorIs(t, err, tt.wantErr)
			t.Logf("Save: %v", err)
			require.Equal(t, 1, started, "a multipart upload was under way when the failure came")
			requireNoIncompleteUploads(t, m, "abort")
			_, err = b.Stat(t.Context(), "big")
			require.ErrorIs(t, err, backend.ErrNotExist)
		})
	}
}

// TestStorageClass saves with every storage class the backend accepts; the pinned MinIO accepts
// only some of them, and the others must fail with a message naming the class.
func TestStorageClass(t *testing.T) {
	m := testenv.StartMinIO(t)
	m.CreateBucket(t, "classes")
	for _, class := range []string{"STANDARD", "STANDARD_IA", "GLACIER", "DEEP_ARCHIVE"} {
		t.Run(class, func(t *testing.T) {
			b := newS3(t, m, s3.Config{Bucket: "classes", StorageClass: class, PartSize: 5 << 20})
			for _, size := range []int{10, 6 << 20} { // one request, and multipart
				_, err := b.Save(t.Context(), class, bytes.NewReader(make([]byte, size)))
				if err != nil {
					t.Logf("%s, %d bytes: %v", class, size, err)
					require.NotEqual(t, "STANDARD", class)
					require.ErrorIs(t, err, backend.ErrUnavailable)
					require.ErrorContains(t, err, fmt.Sprintf("does not accept storage class %q", class))
					continue
				}
				info, err := m.Client(t).StatObject(t.Context(), "classes", class, minio.StatObjectOptions{})
				require.NoError(t, err)
				t.Logf("%s, %d bytes: accepted, stored as %q", class, size, info.StorageClass)
			}
			requireNoIncompleteUploads(t, m, "classes")
		})
	}
}

func newS3(t *testing.T, m *testenv.MinIOServer, cfg s3.Config) *s3.S3 {
	t.Helper()
	cfg.Endpoint = m.Endpoint
	cfg.AccessKey = m.AccessKey
	cfg.SecretKey = m.SecretKey
	b, err := s3.New(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, b.Close()) })
	return b
}

// requireNoIncompleteUploads fails the test if bucket holds parts of an unfinished multipart
// upload. It runs in cleanups, after t.Context is done.
func requireNoIncompleteUploads(t *testing.T, m *testenv.MinIOServer, bucket string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var uploads []string
	for u := range m.Client(t).ListIncompleteUploads(ctx, bucket, "", true) {
		require.NoError(t, u.Err)
		uploads = append(uploads, u.Key+" "+u.UploadID)
	}
	require.Empty(t, uploads, "incomplete multipart uploads left in bucket %s", bucket)
}

// requireAllUnderPrefix fails the test if bucket holds an object outside prefix.
func requireAllUnderPrefix(t *testing.T, m *testenv.MinIOServer, bucket, prefix string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for obj := range m.Client(t).ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true}) {
		require.NoError(t, obj.Err)
		require.True(t, strings.HasPrefix(obj.Key, prefix), "object %q outside the prefix %q", obj.Key, prefix)
	}
}

var errBroken = errors.New("snapshot stream broke")

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// cancelReader cancels a context when it is read, and then reads nothing.
type cancelReader struct{ cancel context.CancelFunc }

func (r cancelReader) Read([]byte) (int, error) {
	r.cancel()
	return 0, io.EOF
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// uploadsProbe counts the incomplete multipart uploads on the server when it is read, then
// reads nothing.
type uploadsProbe struct {
	t     *testing.T
	m     *testenv.MinIOServer
	count *int
}

func (p uploadsProbe) Read([]byte) (int, error) {
	for u := range p.m.Client(p.t).ListIncompleteUploads(p.t.Context(), "abort", "", true) {
		require.NoError(p.t, u.Err)
		*p.count++
	}
	return 0, io.EOF
}

// TestSweepPartial aborts an incomplete multipart upload, as a process killed mid-upload
// leaves, under the prefix only.
func TestSweepPartial(t *testing.T) {
	m := testenv.StartMinIO(t)
	m.CreateBucket(t, "sweep")
	b := newS3(t, m, s3.Config{Bucket: "sweep", Prefix: "repo"})
	core := minio.Core{Client: m.Client(t)}
	_, err := core.NewMultipartUpload(t.Context(), "sweep", "repo/snapshots/x/snapshot.db", minio.PutObjectOptions{})
	require.NoError(t, err)
	_, err = core.NewMultipartUpload(t.Context(), "sweep", "other/snapshots/y", minio.PutObjectOptions{})
	require.NoError(t, err)

	removed, err := b.SweepPartial(t.Context(), "snapshots/")
	require.NoError(t, err)
	require.Equal(t, []string{"snapshots/x/snapshot.db (incomplete upload)"}, removed)
	var left []string
	for u := range m.Client(t).ListIncompleteUploads(t.Context(), "sweep", "", true) {
		require.NoError(t, u.Err)
		left = append(left, u.Key)
	}
	require.Equal(t, []string{"other/snapshots/y"}, left)
}

// TestStorageClassApplies keeps objects the filter excludes out of the archive class. The
// pinned MinIO refuses DEEP_ARCHIVE, which makes the class of each save visible.
func TestStorageClassApplies(t *testing.T) {
	m := testenv.StartMinIO(t)
	m.CreateBucket(t, "filtered")
	b := newS3(t, m, s3.Config{Bucket: "filtered", StorageClass: "DEEP_ARCHIVE",
		StorageClassApplies: func(name string) bool { return name == "data" }})
	_, err := b.Save(t.Context(), "manifest", strings.NewReader("{}"))
	require.NoError(t, err, "saved in the default class")
	_, err = b.Save(t.Context(), "data", strings.NewReader("bytes"))
	require.ErrorContains(t, err, `does not accept storage class "DEEP_ARCHIVE"`)
}

// TestServerCRC32C: the server keeps a CRC-32C of each whole object, single-part or multipart,
// equal to the one computed over the bytes sent; objects of an archive storage class (or of an
// archive=true target) are the ones that cannot be read back at once.
func TestServerCRC32C(t *testing.T) {
	m := testenv.StartMinIO(t)
	m.CreateBucket(t, "crc")
	b := newS3(t, m, s3.Config{Bucket: "crc", PartSize: 5 << 20})
	table := crc32.MakeTable(crc32.Castagnoli)
	for _, size := range []int{1000, 12 << 20} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			data := make([]byte, size)
			_, _ = rand.Read(data)
			name := fmt.Sprintf("snapshots/x/snapshot.db-%d", size)
			_, err := b.Save(t.Context(), name, bytes.NewReader(data))
			require.NoError(t, err)
			got, err := b.ServerCRC32C(t.Context(), name)
			require.NoError(t, err)
			require.Equal(t, crc32.Checksum(data, table), got)
		})
	}
	_, err := b.ServerCRC32C(t.Context(), "snapshots/none")
	require.ErrorIs(t, err, backend.ErrNotExist)

	isData := func(name string) bool { return strings.HasSuffix(name, ".db") }
	cases := []struct {
		cfg  s3.Config
		name string
		want bool
	}{
		{s3.Config{}, "a.db", false},
		{s3.Config{StorageClass: "STANDARD_IA", StorageClassApplies: isData}, "a.db", false},
		{s3.Config{StorageClass: "DEEP_ARCHIVE", StorageClassApplies: isData}, "a.db", true},
		{s3.Config{StorageClass: "GLACIER", StorageClassApplies: isData}, "a.db", true},
		{s3.Config{StorageClass: "GLACIER", StorageClassApplies: isData}, "manifest.json", false},
		{s3.Config{Archive: true, StorageClassApplies: isData}, "a.db", true},
		{s3.Config{Archive: true, StorageClassApplies: isData}, "manifest.json", false},
	}
	for _, tc := range cases {
		cfg := tc.cfg
		cfg.Bucket = "crc"
		require.Equal(t, tc.want, newS3(t, m, cfg).Archived(tc.name), "%+v %s", tc.cfg, tc.name)
	}
}
