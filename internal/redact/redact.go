// Package redact removes credentials from URLs before they are shown in a message, a log line
// or a manifest. Target URLs are the only place a user may paste credentials by mistake
// (s3://KEY:SECRET@bucket, endpoint=http://user:pass@host, secret-key=...); every message that
// names a target URL shows URL's form of it.
package redact

import (
	"errors"
	"net/url"
	"strings"
)

// Placeholder replaces what is removed.
const Placeholder = "REDACTED"

// safeParams are the query parameters whose values are shown: the ones etcdguard's target URLs
// know, none of which holds a secret. Any other parameter's value is replaced, whatever its
// name, since its name cannot tell whether it holds one.
var safeParams = map[string]bool{
	"endpoint": true, "region": true, "storage-class": true, "archive": true, "name": true, "media": true, "offline": true,
}

// knownSchemes are the schemes shown in front of an opaque part.
var knownSchemes = map[string]bool{"file": true, "s3": true, "http": true, "https": true}

// ErrInvalidURL is returned (wrapped) by Parse for a string that is not a URL.
var ErrInvalidURL = errors.New("not a valid URL")

// Parse is url.Parse with an error that does not repeat its input: url.Parse's errors quote
// the whole string, credentials included, and some quote the part of it that is wrong.
func Parse(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, ErrInvalidURL
	}
	return u, nil
}

// URL returns raw without credentials: no user information, the values of unknown query
// parameters replaced, and a URL given as a parameter value (endpoint=) redacted the same way.
// A string that does not parse as a URL is shown as its scheme alone.
func URL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		scheme, _, ok := strings.Cut(raw, "://")
		if !ok || strings.ContainsAny(scheme, "@:/?#") {
			return "(" + ErrInvalidURL.Error() + ")"
		}
		return scheme + "://" + Placeholder + " (" + ErrInvalidURL.Error() + ")"
	}
	return Parsed(u)
}

// Parsed is URL for a parsed URL; u is not modified.
func Parsed(u *url.URL) string {
	c := *u
	if c.User != nil {
		c.User = url.User(Placeholder)
	}
	if c.Opaque != "" {
		// "KEY:SECRET@host" parses as scheme KEY with an opaque part: show neither.
		if !knownSchemes[c.Scheme] {
			return Placeholder
		}
		c.Opaque = Placeholder
	}
	if c.RawQuery != "" {
		q, err := url.ParseQuery(c.RawQuery)
		if err != nil {
			c.RawQuery = Placeholder
		} else {
			for key, values := range q {
				for i, v := range values {
					switch {
					case !safeParams[strings.ToLower(key)]:
						values[i] = Placeholder
					case strings.Contains(v, "://") || strings.Contains(v, "@"):
						values[i] = URL(v)
					}
				}
			}
			c.RawQuery = q.Encode()
		}
	}
	c.Fragment, c.RawFragment = "", ""
	return c.String()
}
