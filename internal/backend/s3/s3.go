// Package s3 keeps a backend's objects in an S3 bucket (AWS S3 or a compatible server such as
// MinIO), under an optional key prefix.
package s3

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"

	"github.com/etcdguard/etcdguard/internal/backend"
	"github.com/etcdguard/etcdguard/internal/redact"
)

const (
	// DefaultPartSize is the size of the parts Save uploads when Config.PartSize is zero. Save
	// holds at most (Concurrency+1)*PartSize bytes in memory, whatever the object's size.
	DefaultPartSize = 8 << 20

	// DefaultConcurrency is how many parts Save uploads at once when Config.Concurrency is
	// zero.
	DefaultConcurrency = 2

	// minPartSize and maxPartSize are the limits S3 puts on the parts of a multipart upload
	// (except the last one, which may be smaller).
	minPartSize = 5 << 20
	maxPartSize = 5 << 30

	// maxRetries is how many times the client tries one request. It covers brief failures of
	// one request; a longer outage is for the caller to handle.
	maxRetries = 3

	// dialTimeout bounds the time to open a connection to the endpoint.
	dialTimeout = 10 * time.Second

	// cleanupTimeout bounds the clean-up of an upload after its Save was cancelled.
	cleanupTimeout = 30 * time.Second

	// awsEndpoint is the endpoint used when the URL names none.
	awsEndpoint = "https://s3.amazonaws.com"

	// storageClassList is used in messages about invalid storage classes.
	storageClassList = "STANDARD, STANDARD_IA, GLACIER, DEEP_ARCHIVE"
)

// Config says where the backend keeps its objects and how it reaches them.
type Config struct {
	// Bucket is the bucket's name; it must exist.
	Bucket string
	// Prefix is prepended, with a slash, to every object name; empty for the bucket's root.
	Prefix string
	// Endpoint is the URL of the S3 server, such as "http://127.0.0.1:9000"; empty for AWS S3.
	// An http endpoint is used without TLS; custom endpoints use path-style addressing.
	Endpoint string
	// Region is the bucket's region; empty to let the client find it.
	Region string
	// StorageClass is the storage class of saved objects: one of STANDARD, STANDARD_IA,
	// GLACIER, DEEP_ARCHIVE, or empty for the bucket's default. Objects in GLACIER and
	// DEEP_ARCHIVE must be restored before Open can read them.
	StorageClass string
	// AccessKey and SecretKey, when set, are the credentials used. When both are empty the
	// credentials come from the standard AWS environment variables, then the shared
	// credentials file, then the instance's IAM role.
	AccessKey string
	SecretKey string
	// StorageClassApplies, when set, says which objects get StorageClass; the others are
	// stored in the bucket's default class. Repositories keep manifests and locks out of
	// archive classes, so they can be listed and read without first restoring them.
	StorageClassApplies func(name string) bool
	// PartSize is the size of the parts of a multipart upload, 5 MiB to 5 GiB; zero means
	// DefaultPartSize. Objects smaller than a part are uploaded in one request.
	PartSize uint64
	// Concurrency is how many parts Save uploads at once; zero means DefaultConcurrency.
	Concurrency uint
	// Archive marks every object StorageClass applies to as not readable at once, as GLACIER and
	// DEEP_ARCHIVE objects are (a gateway to tape, say): copies into it are checked by the
	// server's checksum instead of being read back.
	Archive bool
}

// ParseURL reads a Config from a URL of the form
//
//	s3://bucket/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1&storage-class=STANDARD
//
// where every query parameter is optional. Credentials are refused in the URL: they come from
// the environment or Config.AccessKey and Config.SecretKey.
func ParseURL(u *url.URL) (Config, error) {
	redacted := redact.Parsed(u)
	if u.Scheme != "s3" {
		return Config{}, fmt.Errorf("parse S3 URL %s: scheme %q is not s3", redacted, u.Scheme)
	}
	if u.User != nil {
		return Config{}, fmt.Errorf("parse S3 URL %s: credentials do not belong in the URL: "+
			"set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or use the shared credentials file", redacted)
	}
	if u.Opaque != "" || u.Host == "" {
		return Config{}, fmt.Errorf("parse S3 URL %s: want s3://bucket/prefix", redacted)
	}
	if u.Fragment != "" {
		return Config{}, fmt.Errorf("parse S3 URL %s: a fragment (#...) has no meaning here", redacted)
	}
	// Not u.Query: it drops a parameter it cannot unescape, and a dropped endpoint sends the
	// run, and its credentials, to AWS. The parse error repeats the text: leave it out.
	query, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return Config{}, fmt.Errorf("parse S3 URL %s: a parameter is not validly escaped (a %% must start %%XX, two hex digits)", redacted)
	}
	cfg := Config{Bucket: u.Host, Prefix: strings.Trim(u.Path, "/")}
	for key, values := range query {
		if len(values) != 1 {
			return Config{}, fmt.Errorf("parse S3 URL %s: parameter %s is given %d times", redacted, key, len(values))
		}
		switch v := values[0]; key {
		case "endpoint":
			cfg.Endpoint = v
		case "region":
			cfg.Region = v
		case "storage-class":
			cfg.StorageClass = strings.ToUpper(v)
		case "archive":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return Config{}, fmt.Errorf("parse S3 URL %s: archive=%q is not true or false", redacted, v)
			}
			cfg.Archive = b
		default:
			return Config{}, fmt.Errorf("parse S3 URL %s: unknown parameter %q (known: endpoint, region, storage-class, archive)", redacted, key)
		}
	}
	if err := cfg.validate(); err != nil {
		return Config{}, fmt.Errorf("parse S3 URL %s: %w", redacted, err)
	}
	return cfg, nil
}

// validate checks the configuration without changing it.
func (c Config) validate() error {
	if err := s3utils.CheckValidBucketNameStrict(c.Bucket); err != nil {
		return fmt.Errorf("bucket %q: %w", c.Bucket, err)
	}
	if c.Prefix != "" && (!fs.ValidPath(c.Prefix) || c.Prefix == ".") {
		return fmt.Errorf("prefix %q: want a slash-separated path without empty, . or .. elements", c.Prefix)
	}
	if c.Endpoint != "" {
		if _, err := parseEndpoint(c.Endpoint); err != nil {
			return err
		}
	}
	switch c.StorageClass {
	case "", "STANDARD", "STANDARD_IA", "GLACIER", "DEEP_ARCHIVE":
	default:
		return fmt.Errorf("storage class %q is not supported: use one of %s", c.StorageClass, storageClassList)
	}
	if (c.AccessKey == "") != (c.SecretKey == "") {
		return errors.New("set both the access key and the secret key, or neither")
	}
	if c.PartSize != 0 && (c.PartSize < minPartSize || c.PartSize > maxPartSize) {
		return fmt.Errorf("part size %d is outside what S3 allows (%d to %d bytes)", c.PartSize, minPartSize, maxPartSize)
	}
	return nil
}

// parseEndpoint checks an endpoint URL: http or https, a host, and nothing else.
func parseEndpoint(endpoint string) (*url.URL, error) {
	e, err := url.Parse(endpoint)
	if err != nil {
		// The parse error repeats the endpoint, which might hold credentials: leave it out.
		return nil, errors.New("endpoint is not a valid URL: want http://host[:port] or https://host[:port]")
	}
	switch {
	case e.Scheme != "http" && e.Scheme != "https":
		return nil, fmt.Errorf("endpoint %s: want http://host[:port] or https://host[:port]", redact.Parsed(e))
	case e.User != nil:
		return nil, fmt.Errorf("endpoint %s: credentials do not belong in the endpoint: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or use the shared credentials file", redact.Parsed(e))
	case e.Host == "":
		return nil, fmt.Errorf("endpoint %s: no host", redact.Parsed(e))
	case e.Path != "" && e.Path != "/", e.RawQuery != "", e.Fragment != "":
		return nil, fmt.Errorf("endpoint %s: want only scheme, host and port", redact.Parsed(e))
	}
	return e, nil
}

// S3 is a backend.Backend that keeps objects in an S3 bucket. It is safe for concurrent use.
type S3 struct {
	client       *minio.Client
	creds        *credentials.Credentials
	transport    *http.Transport
	bucket       string
	prefix       string // "" or ending in "/"
	endpoint     string // scheme://host[:port], for messages
	location     string
	storageClass string
	classApplies func(name string) bool
	archive      bool
	partSize     uint64
	concurrency  uint
}

var (
	_ backend.Backend    = (*S3)(nil)
	_ backend.Archival   = (*S3)(nil)
	_ backend.Checksumer = (*S3)(nil)
	_ backend.Retainer   = (*S3)(nil)
)

// classOf is the storage class an object is saved in ("" for the bucket's default).
func (s *S3) classOf(name string) string {
	if s.classApplies != nil && !s.classApplies(name) {
		return ""
	}
	return s.storageClass
}

// Archived reports whether an object saved under name cannot be read back at once: it is in an
// archive storage class (GLACIER, DEEP_ARCHIVE), or the target is marked archive=true.
func (s *S3) Archived(name string) bool {
	switch c := s.classOf(name); {
	case c == "GLACIER" || c == "DEEP_ARCHIVE":
		return true
	case s.archive:
		return s.classApplies == nil || s.classApplies(name)
	}
	return false
}

// ServerCRC32C returns the CRC-32C of the whole object that the server computed and checked when
// it was saved. It fails with backend.ErrNotExist when there is no such object, and when the
// server kept no full-object checksum (an object saved before etcdguard asked for one).
func (s *S3) ServerCRC32C(ctx context.Context, name string) (uint32, error) {
	key, err := s.key(name)
	if err != nil {
		return 0, fmt.Errorf("checksum of %s in %s: %w", name, s.bucketURL(), err)
	}
	doing := fmt.Sprintf("checksum of %s in %s", name, s.bucketURL())
	info, err := s.client.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{Checksum: true})
	if err != nil {
		return 0, s.mapErr(ctx, doing, err)
	}
	raw, err := base64.StdEncoding.DecodeString(info.ChecksumCRC32C)
	if err != nil || len(raw) != 4 || (info.ChecksumMode != "" && info.ChecksumMode != "FULL_OBJECT") {
		return 0, fmt.Errorf("%s: %w: the server kept no CRC-32C of the whole object (%q, %s)", doing, backend.ErrNotExist, info.ChecksumCRC32C, info.ChecksumMode)
	}
	return binary.BigEndian.Uint32(raw), nil
}

// New connects to the bucket cfg names and checks that it exists and that the credentials may
// use it. A bucket that does not exist, credentials the server refuses and an endpoint that
// does not answer are reported as errors wrapping backend.ErrUnavailable.
func New(ctx context.Context, cfg Config) (*S3, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("S3 backend s3://%s: %w", path.Join(cfg.Bucket, cfg.Prefix), err)
	}
	custom := cfg.Endpoint != ""
	endpoint := cfg.Endpoint
	if !custom {
		endpoint = awsEndpoint
	}
	e, err := parseEndpoint(endpoint)
	if err != nil {
		return nil, err
	}
	secure := e.Scheme == "https"

	s := &S3{
		bucket:       cfg.Bucket,
		endpoint:     e.Scheme + "://" + e.Host,
		location:     "s3://" + cfg.Bucket,
		storageClass: cfg.StorageClass,
		classApplies: cfg.StorageClassApplies,
		archive:      cfg.Archive,
		partSize:     cfg.PartSize,
		concurrency:  cfg.Concurrency,
	}
	if cfg.Prefix != "" {
		s.prefix = cfg.Prefix + "/"
		s.location += "/" + cfg.Prefix
	}
	if custom {
		s.location += "?endpoint=" + s.endpoint
	}
	if s.partSize == 0 {
		s.partSize = DefaultPartSize
	}
	if s.concurrency == 0 {
		s.concurrency = DefaultConcurrency
	}

	if cfg.AccessKey != "" {
		s.creds = credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, "")
	} else {
		s.creds = credentials.NewChainCredentials([]credentials.Provider{
			&credentials.EnvAWS{},
			&credentials.FileAWSCredentials{},
			&credentials.IAM{},
		})
	}
	s.transport, err = minio.DefaultTransport(secure)
	if err != nil {
		return nil, fmt.Errorf("S3 backend %s: HTTP transport: %w", s.location, err)
	}
	s.transport.DialContext = (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext

	lookup := minio.BucketLookupAuto
	if custom {
		lookup = minio.BucketLookupPath
	}
	s.client, err = minio.New(e.Host, &minio.Options{
		Creds:           s.creds,
		Secure:          secure,
		Transport:       s.transport,
		Region:          cfg.Region,
		BucketLookup:    lookup,
		TrailingHeaders: true, // lets the server verify a checksum of every part it receives
		MaxRetries:      maxRetries,
	})
	if err != nil {
		return nil, fmt.Errorf("S3 backend %s: create client: %w", s.location, err)
	}

	exists, err := s.client.BucketExists(ctx, s.bucket)
	if err == nil && !exists {
		err = s.noSuchBucket(s.bucketURL(), nil)
	} else if err != nil {
		err = s.mapErr(ctx, s.bucketURL(), err)
	}
	if err != nil {
		s.transport.CloseIdleConnections()
		return nil, err
	}
	return s, nil
}

// Location returns the backend's URL, without credentials: "s3://bucket/prefix", followed by
// "?endpoint=..." for a server other than AWS S3.
func (s *S3) Location() string { return s.location }

// Save uploads rd under name. An object smaller than a part goes up in one request; a larger
// one in a multipart upload of parts of the configured size, a few at a time, so memory stays
// bounded whatever the size. The server verifies a CRC32C checksum of every request's data.
// If the upload fails or is cancelled, the multipart upload is aborted so no parts remain.
func (s *S3) Save(ctx context.Context, name string, rd io.Reader) (int64, error) {
	key, err := s.key(name)
	if err != nil {
		return 0, fmt.Errorf("save %s to %s: %w", name, s.bucketURL(), err)
	}
	doing := fmt.Sprintf("save %s to %s", name, s.bucketURL())
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("%s: %w", doing, err)
	}

	cr := &ctxReader{ctx: ctx, r: rd}
	head, eof, err := readHead(cr, int(s.partSize))
	if err != nil {
		return 0, s.saveErr(ctx, doing, cr, key, false, err)
	}
	opts := minio.PutObjectOptions{
		ContentType:  "application/octet-stream",
		StorageClass: s.classOf(name),
		// A CRC-32C of the whole object, checked by the server when the upload completes and
		// kept with the object: ServerCRC32C returns it.
		Checksum: minio.ChecksumFullObjectCRC32C,
		PartSize: s.partSize,
	}
	var info minio.UploadInfo
	if eof {
		info, err = s.client.PutObject(ctx, s.bucket, key, bytes.NewReader(head), int64(len(head)), opts)
	} else {
		opts.NumThreads = s.concurrency
		opts.ConcurrentStreamParts = s.concurrency > 1
		info, err = s.client.PutObject(ctx, s.bucket, key, io.MultiReader(bytes.NewReader(head), cr), -1, opts)
	}
	if err != nil {
		return 0, s.saveErr(ctx, doing, cr, key, !eof, err)
	}
	return info.Size, nil
}

// saveErr explains why Save failed. When the context was cancelled during a multipart upload,
// it also aborts any upload of key left behind: minio-go aborts the uploads it knows of, but
// one whose creation was cancelled may exist on the server without the client having seen it.
func (s *S3) saveErr(ctx context.Context, doing string, cr *ctxReader, key string, multipart bool, err error) error {
	if cr.err != nil {
		return fmt.Errorf("%s: read data: %w", doing, cr.err)
	}
	if ctx.Err() != nil {
		if multipart {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
			defer cancel()
			if aerr := s.client.RemoveIncompleteUpload(cctx, s.bucket, key); aerr != nil {
				return fmt.Errorf("%s: %w (and aborting its multipart upload failed: %v)", doing, ctx.Err(), aerr)
			}
		}
		return fmt.Errorf("%s: %w", doing, ctx.Err())
	}
	return s.mapErr(ctx, doing, err)
}

// Open returns a reader of the object.
func (s *S3) Open(ctx context.Context, name string) (io.ReadCloser, error) {
	doing := fmt.Sprintf("open %s in %s", name, s.bucketURL())
	key, err := s.key(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", doing, err)
	}
	obj, err := s.client.GetObject(ctx, s.bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, s.mapErr(ctx, doing, err)
	}
	// GetObject is lazy: Stat sends the request, so that a missing object is reported here.
	if _, err := obj.Stat(); err != nil {
		_ = obj.Close()
		return nil, s.mapErr(ctx, doing, err)
	}
	return &object{Object: obj, s: s, ctx: ctx, doing: "read " + name + " in " + s.bucketURL()}, nil
}

// object is an opened object whose read errors are mapped as every other error of the backend:
// the first read sends a request of its own, and the object may be gone by then (a lock
// released between Open and the read is ErrNotExist, not an unknown failure).
type object struct {
	*minio.Object
	s     *S3
	ctx   context.Context
	doing string
}

func (o *object) Read(p []byte) (int, error) {
	n, err := o.Object.Read(p)
	if err != nil && err != io.EOF {
		err = o.s.mapErr(o.ctx, o.doing, err)
	}
	return n, err
}

// Stat describes the object.
func (s *S3) Stat(ctx context.Context, name string) (backend.FileInfo, error) {
	doing := fmt.Sprintf("stat %s in %s", name, s.bucketURL())
	key, err := s.key(name)
	if err != nil {
		return backend.FileInfo{}, fmt.Errorf("%s: %w", doing, err)
	}
	info, err := s.client.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return backend.FileInfo{}, s.mapErr(ctx, doing, err)
	}
	return backend.FileInfo{Name: name, Size: info.Size, ModTime: info.LastModified}, nil
}

// List lists the keys under the backend's prefix followed by prefix; S3 returns them in
// lexical order.
func (s *S3) List(ctx context.Context, prefix string, fn func(backend.FileInfo) error) error {
	doing := fmt.Sprintf("list %q in %s", prefix, s.bucketURL())
	lctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the listing if fn stops early
	for obj := range s.client.ListObjectsIter(lctx, s.bucket, minio.ListObjectsOptions{
		Prefix:    s.prefix + prefix,
		Recursive: true,
	}) {
		if obj.Err != nil {
			return s.mapErr(ctx, doing, obj.Err)
		}
		name := strings.TrimPrefix(obj.Key, s.prefix)
		if strings.HasSuffix(name, "/") {
			continue // a "folder" marker made by some tools, not an object
		}
		if err := fn(backend.FileInfo{Name: name, Size: obj.Size, ModTime: obj.LastModified}); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", doing, err)
	}
	return nil
}

// Remove deletes the object; S3 does not report deleting a missing key as an error.
//
// It sends no version id and never asks to bypass a governance retention. On a versioned bucket
// (every Object Lock bucket is one) S3 then writes a delete marker and succeeds, even for an
// object under Object Lock: the object disappears from listings while its bytes stay as a
// noncurrent version, until the bucket's lifecycle rule removes them. Callers that remove
// backups ask Locked first (backend.Retainer).
func (s *S3) Remove(ctx context.Context, name string) error {
	doing := fmt.Sprintf("remove %s from %s", name, s.bucketURL())
	key, err := s.key(name)
	if err != nil {
		return fmt.Errorf("%s: %w", doing, err)
	}
	err = s.client.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{})
	if err != nil {
		if err := s.mapErr(ctx, doing, err); !errors.Is(err, backend.ErrNotExist) {
			return err
		}
	}
	return nil
}

// Close closes the idle connections to the endpoint.
func (s *S3) Close() error {
	s.transport.CloseIdleConnections()
	return nil
}

// key returns the S3 key of an object name.
func (s *S3) key(name string) (string, error) {
	if !fs.ValidPath(name) || name == "." || strings.Contains(name, `\`) {
		return "", fmt.Errorf("invalid object name %q: want a relative slash-separated path without . or .. elements", name)
	}
	return s.prefix + name, nil
}

// bucketURL is the short form of the location used at the start of messages.
func (s *S3) bucketURL() string {
	return "s3://" + path.Join(s.bucket, s.prefix)
}

// mapErr explains an error of the S3 client in one line that says what to do, and marks it
// with the backend's sentinel errors: a missing key is backend.ErrNotExist, a missing bucket,
// refused credentials and an unreachable endpoint are backend.ErrUnavailable (refused
// credentials and denied access also backend.ErrDenied, an unreachable endpoint also
// backend.ErrUnreachable), and a full server is backend.ErrNoSpace. The client's error stays in
// the chain, for errors.As.
func (s *S3) mapErr(ctx context.Context, doing string, err error) error {
	if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return fmt.Errorf("%s: %w", doing, ctx.Err())
	}
	var resp minio.ErrorResponse
	if errors.As(err, &resp) {
		switch resp.Code {
		case minio.NoSuchKey:
			return wrap(doing, "object does not exist", backend.ErrNotExist, err)
		case minio.NoSuchBucket:
			return s.noSuchBucket(doing, err)
		case "InvalidAccessKeyId":
			return wrap(doing, fmt.Sprintf("%s does not know the access key: check AWS_ACCESS_KEY_ID or the shared credentials file",
				s.endpoint), denied, err)
		case "SignatureDoesNotMatch":
			return wrap(doing, fmt.Sprintf("%s refused the secret key for this access key: check AWS_SECRET_ACCESS_KEY or the shared credentials file",
				s.endpoint), denied, err)
		case "ExpiredToken", "InvalidToken", "TokenRefreshRequired":
			return wrap(doing, fmt.Sprintf("%s refused the session token (%s): refresh the credentials", s.endpoint, resp.Code),
				denied, err)
		case minio.AccessDenied, "AllAccessDisabled":
			hint := "check the credentials and the bucket's policy"
			if v, cerr := s.creds.GetWithContext(nil); cerr == nil && v.SignerType.IsAnonymous() {
				hint = "no credentials were found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, use the shared credentials file or an IAM role"
			}
			return wrap(doing, fmt.Sprintf("access to bucket %q denied at %s: %s", s.bucket, s.endpoint, hint),
				denied, err)
		case "InvalidStorageClass":
			return wrap(doing, fmt.Sprintf("%s does not accept storage class %q: choose another storage-class (MinIO accepts STANDARD)",
				s.endpoint, s.storageClass), backend.ErrUnavailable, err)
		case "AuthorizationHeaderMalformed", "InvalidRegion", "PermanentRedirect", "IllegalLocationConstraintException":
			hint := "set region= to the bucket's region"
			if resp.Region != "" {
				hint = fmt.Sprintf("set region=%s", resp.Region)
			}
			return wrap(doing, fmt.Sprintf("bucket %q at %s is in another region: %s", s.bucket, s.endpoint, hint),
				backend.ErrUnavailable, err)
		case "InvalidObjectState":
			return wrap(doing, "the object is archived (GLACIER or DEEP_ARCHIVE): restore it before reading it", nil, err)
		case "XMinioStorageFull", "XMinioAdminBucketQuotaExceeded":
			return wrap(doing, fmt.Sprintf("%s is full", s.endpoint), backend.ErrNoSpace, err)
		}
		return fmt.Errorf("%s: %s: %w", doing, s.endpoint, err)
	}
	if reason := networkProblem(err); reason != "" {
		return wrap(doing, fmt.Sprintf("cannot reach %s (%s): check the endpoint URL and that the S3 server is up and reachable",
			s.endpoint, reason), unreachable, err)
	}
	return fmt.Errorf("%s: %w", doing, err)
}

// noSuchBucket reports a bucket that does not exist; cause may be nil.
func (s *S3) noSuchBucket(doing string, cause error) error {
	return wrap(doing, fmt.Sprintf("bucket %q does not exist at %s: create it or fix the URL", s.bucket, s.endpoint),
		backend.ErrUnavailable, cause)
}

// networkProblem describes in a few words why a request could not reach the server, or returns
// "" if err is not about the network.
func networkProblem(err error) string {
	var dnsErr *net.DNSError
	var netErr net.Error
	var urlErr *url.Error
	var opErr *net.OpError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "no route to host"
	case errors.As(err, &dnsErr):
		return "host name not found"
	case errors.As(err, &netErr) && netErr.Timeout():
		return "timed out"
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "connection closed"
	case errors.As(err, &opErr):
		return opErr.Err.Error()
	case errors.As(err, &urlErr):
		return urlErr.Err.Error()
	}
	return ""
}

// mappedError is an error with a message written for people, which still matches both the
// backend sentinel error and the client's error.
type mappedError struct {
	msg      string
	sentinel error // nil, a backend sentinel, or several joined (denied, unreachable)
	cause    error
}

// denied and unreachable are the sentinels of refused access and of an endpoint that does not
// answer: the target is unavailable, and why.
var (
	denied      = errors.Join(backend.ErrUnavailable, backend.ErrDenied)
	unreachable = errors.Join(backend.ErrUnavailable, backend.ErrUnreachable)
)

func wrap(doing, msg string, sentinel, cause error) error {
	return &mappedError{msg: doing + ": " + msg, sentinel: sentinel, cause: cause}
}

func (e *mappedError) Error() string { return e.msg }

func (e *mappedError) Unwrap() []error {
	var errs []error
	for _, err := range []error{e.sentinel, e.cause} {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// readHead reads up to max bytes of r, growing its buffer as data arrives so that small objects
// use little memory. eof reports that r ended within those bytes.
func readHead(r io.Reader, max int) (head []byte, eof bool, err error) {
	buf := make([]byte, 0, min(max, 64<<10))
	for len(buf) < max {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(len(buf), max-len(buf)))
		}
		n, err := r.Read(buf[len(buf):min(cap(buf), max)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, true, nil
		}
		if err != nil {
			return nil, false, err
		}
	}
	return buf, false, nil
}

// ctxReader stops reading once its context is done, and remembers the error of the reader it
// wraps, to tell it apart from an error of the upload. It keeps a context because io.Reader has
// no place for one.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
	err error
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	if err != nil && err != io.EOF {
		c.err = err
	}
	return n, err
}
