package repository

import (
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/etcdguard/etcdguard/internal/backend"
	"github.com/etcdguard/etcdguard/internal/backend/local"
	"github.com/etcdguard/etcdguard/internal/backend/s3"
	"github.com/etcdguard/etcdguard/internal/redact"
)

// Target is a place backups are copied to: a local directory, an S3 bucket, or an offline medium
// (a directory that is only there while a tape or removable disk is mounted).
type Target struct {
	// Name identifies the target in messages, manifests and --to/--target flags.
	Name string `yaml:"name" json:"name"`
	// URL is file:///path or s3://bucket/prefix?endpoint=...&region=...&storage-class=...
	URL string `yaml:"url" json:"url"`
	// Offline marks a medium that may be absent; an absent offline target is skipped with a
	// warning, and `snapshot copy --to NAME` fills it in later.
	Offline bool `yaml:"offline,omitempty" json:"offline,omitempty"`
	// Media names the kind of medium (disk, s3, tape, usb); the 3-2-1 rule counts media kinds.
	Media string `yaml:"media,omitempty" json:"media,omitempty"`
	// Keep is what `etcdguard prune` keeps in the target; nil: the target is never pruned.
	// Only the config file sets it: a target given by URL on the command line has none.
	Keep *Keep `yaml:"keep,omitempty" json:"keep,omitempty"`
}

// ParseTarget reads a target from a --target value: a URL whose query may carry name=, offline=
// and media= (these are removed from the URL kept in Target.URL).
//
// Messages name the URL in its redacted form (redact.URL): a URL may carry credentials.
func ParseTarget(spec string) (Target, error) {
	u, err := redact.Parse(spec)
	if err != nil {
		return Target{}, fmt.Errorf("target %s: %w: check its syntax (credentials never belong in it)", redact.URL(spec), err)
	}
	// Not u.Query: it drops a parameter it cannot unescape, and a dropped endpoint sends the
	// run, and its credentials, to AWS. The parse error repeats the text: leave it out.
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return Target{}, fmt.Errorf("target %s: a parameter is not validly escaped (a %% must start %%XX, two hex digits)", redact.Parsed(u))
	}
	t := Target{Name: q.Get("name"), Media: q.Get("media")}
	if v := q.Get("offline"); v != "" {
		t.Offline, err = strconv.ParseBool(v)
		if err != nil {
			return Target{}, fmt.Errorf("target %s: offline=%q is not true or false", redact.Parsed(u), v)
		}
	}
	q.Del("name")
	q.Del("media")
	q.Del("offline")
	u.RawQuery = q.Encode()
	t.URL = u.String()
	return t, t.Normalize()
}

// Normalize checks the target and fills in its default name and media.
func (t *Target) Normalize() error {
	u, err := redact.Parse(t.URL)
	if err != nil {
		return fmt.Errorf("target %q: URL %s: %w: check its syntax (credentials never belong in it)", t.Name, t.Redacted(), err)
	}
	switch u.Scheme {
	case "file":
		if u.User != nil {
			return fmt.Errorf("target URL %s: credentials do not belong in a file URL: file:///backup/etcd", t.Redacted())
		}
		if u.Host != "" && u.Host != "localhost" {
			return fmt.Errorf("target URL %s: a file URL needs an absolute path: file:///backup/etcd", t.Redacted())
		}
		if !filepath.IsAbs(u.Path) {
			return fmt.Errorf("target URL %s: the path must be absolute: file:///backup/etcd", t.Redacted())
		}
		if t.Media == "" {
			t.Media = "disk"
			if t.Offline {
				t.Media = "offline"
			}
		}
		if t.Name == "" {
			t.Name = "local"
			if t.Offline {
				t.Name = t.Media
			}
		}
	case "s3":
		if u.Host == "" {
			return fmt.Errorf("target URL %s: name the bucket: s3://bucket/prefix", t.Redacted())
		}
		// The S3 backend's own reading of the URL, so that what it would refuse when the target
		// is opened (credentials in the URL or its endpoint, a parameter it does not know, which
		// may carry a secret, a bad bucket name or endpoint) is refused with the settings (exit
		// code 2) instead of failing a run later. Its messages show the URL redacted.
		if _, err := s3.ParseURL(u); err != nil {
			return fmt.Errorf("target %q: %w", t.Name, err)
		}
		if t.Media == "" {
			t.Media = "s3"
		}
		if t.Name == "" {
			t.Name = "s3"
		}
	default:
		scheme := u.Scheme
		if u.Opaque != "" || u.User != nil {
			scheme = redact.Placeholder // "KEY:SECRET@host" parses as scheme KEY
		}
		return fmt.Errorf("target URL %s: unknown scheme %q: use file:///path or s3://bucket/prefix", t.Redacted(), scheme)
	}
	if t.Keep != nil {
		if err := t.Keep.check(); err != nil {
			return fmt.Errorf("target %q: %w", t.Name, err)
		}
	}
	return nil
}

// IsLocal reports whether the target is a folder of this host's file system (a file:// URL):
// a local disk, a network mount or a removable medium.
func (t Target) IsLocal() bool { return strings.HasPrefix(t.URL, "file:") }

// Redacted returns the target's URL with no credentials in it (redact.URL), for messages,
// logs and manifests.
func (t Target) Redacted() string { return redact.URL(t.URL) }

// NormalizeTargets normalizes every target and makes the names unique by adding -2, -3, ...
// A name given is kept: a default name (local, s3) steps over it.
func NormalizeTargets(ts []Target) ([]Target, error) {
	out := make([]Target, 0, len(ts))
	given := map[string]bool{}
	for _, t := range ts {
		if t.Name != "" {
			given[t.Name] = true
		}
	}
	taken := map[string]bool{}
	for _, t := range ts {
		named := t.Name != ""
		if err := t.Normalize(); err != nil {
			return nil, err
		}
		base := t.Name
		for n := 2; taken[t.Name] || (!named && given[t.Name]); n++ {
			t.Name = base + "-" + strconv.Itoa(n)
		}
		taken[t.Name] = true
		out = append(out, t)
	}
	return out, nil
}

// OpenBackend opens the target's storage. An offline target whose directory is absent, an S3
// bucket that cannot be reached or refuses the credentials: these fail with an error wrapping
// backend.ErrUnavailable.
func (t Target) OpenBackend(ctx context.Context) (backend.Backend, error) {
	u, err := redact.Parse(t.URL)
	if err != nil {
		return nil, fmt.Errorf("target %s: %s: %w", t.Name, t.Redacted(), err)
	}
	switch u.Scheme {
	case "file":
		be, err := local.New(u.Path, local.Options{MustExist: t.Offline})
		if err != nil {
			return nil, fmt.Errorf("target %s: %w", t.Name, err)
		}
		return be, nil
	case "s3":
		cfg, err := s3.ParseURL(u)
		if err != nil {
			return nil, fmt.Errorf("target %s: %w", t.Name, err)
		}
		cfg.StorageClassApplies = IsDataObject
		be, err := s3.New(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("target %s: %w", t.Name, err)
		}
		return be, nil
	}
	return nil, fmt.Errorf("target %s: unknown scheme in %s", t.Name, t.Redacted())
}
