package repository

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Keep is what a target keeps, as the config file writes it under the target
// (`keep: {within: 7d}`, `keep: {monthly: 60}`): plain data, checked with the target by Normalize.
// A target whose Keep is nil is never pruned.
//
// It lives here, not in internal/retention, because the target is what carries it: every command
// passes []Target around, `--target NAME` picks a configured target with its policy, and the
// repository layer cannot import retention (a capability, above it). internal/prune turns it into
// a retention.Policy; the rules themselves are retention's.
type Keep struct {
	// Last keeps the newest Last backups.
	Last int `yaml:"last,omitempty" json:"last,omitempty"`
	// Within keeps every backup younger than it: a Go duration (36h, 90m) or a number of days
	// (7d, 30d), or both (1d12h). See ParseKeepDuration.
	Within string `yaml:"within,omitempty" json:"within,omitempty"`
	// Hourly, Daily, Weekly, Monthly and Yearly keep the newest backup of each of the last N
	// hours, days, ISO weeks, months and years (UTC) that have one.
	Hourly  int `yaml:"hourly,omitempty" json:"hourly,omitempty"`
	Daily   int `yaml:"daily,omitempty" json:"daily,omitempty"`
	Weekly  int `yaml:"weekly,omitempty" json:"weekly,omitempty"`
	Monthly int `yaml:"monthly,omitempty" json:"monthly,omitempty"`
	Yearly  int `yaml:"yearly,omitempty" json:"yearly,omitempty"`
}

// WithinDuration returns Within as a duration; 0 when it is empty. Normalize has checked it.
func (k Keep) WithinDuration() time.Duration {
	if k.Within == "" {
		return 0
	}
	d, _ := ParseKeepDuration(k.Within)
	return d
}

// String writes the policy as people read it: "within 7d, monthly 60".
func (k Keep) String() string {
	var parts []string
	add := func(name string, n int) {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", name, n))
		}
	}
	add("last", k.Last)
	if k.Within != "" {
		parts = append(parts, "within "+k.Within)
	}
	add("hourly", k.Hourly)
	add("daily", k.Daily)
	add("weekly", k.Weekly)
	add("monthly", k.Monthly)
	add("yearly", k.Yearly)
	return strings.Join(parts, ", ")
}

// check refuses what cannot be a policy: negative counts, a duration that does not parse or is
// not positive, and a keep: that names no rule (it would keep the newest backup only, which is
// more likely a mistake than a wish; `last: 1` says it).
func (k Keep) check() error {
	for _, c := range []struct {
		name string
		n    int
	}{{"last", k.Last}, {"hourly", k.Hourly}, {"daily", k.Daily}, {"weekly", k.Weekly}, {"monthly", k.Monthly}, {"yearly", k.Yearly}} {
		if c.n < 0 {
			return fmt.Errorf("keep: %s is %d: give a count of 0 or more", c.name, c.n)
		}
	}
	if k.Within != "" {
		if _, err := ParseKeepDuration(k.Within); err != nil {
			return fmt.Errorf("keep: within: %w", err)
		}
	}
	if k.String() == "" {
		return errors.New("keep: names no rule: give one or more of last, within, hourly, daily, weekly, monthly, yearly (leave keep: out and the target is never pruned)")
	}
	return nil
}

// ParseKeepDuration reads a keep-within duration: a Go duration (36h, 90m), a number of days
// (7d), or days followed by a Go duration (1d12h). It must be positive.
func ParseKeepDuration(s string) (time.Duration, error) {
	bad := fmt.Errorf("%q is not a duration such as 7d, 30d, 36h or 1d12h", s)
	var d time.Duration
	rest := s
	if days, after, ok := strings.Cut(s, "d"); ok {
		// Go's durations have no unit with a d in it, so the first d ends the days.
		n, err := strconv.ParseInt(days, 10, 64)
		if err != nil || days == "" || days[0] == '+' || days[0] == '-' {
			if strings.HasPrefix(days, "-") {
				return 0, fmt.Errorf("%q is negative: give a positive duration such as 7d", s)
			}
			return 0, bad
		}
		if n > math.MaxInt64/int64(24*time.Hour)-1 {
			return 0, fmt.Errorf("%q is too long", s)
		}
		d, rest = time.Duration(n)*24*time.Hour, after
	}
	if rest != "" {
		r, err := time.ParseDuration(rest)
		if err != nil || strings.HasPrefix(rest, "+") || (rest != s && strings.HasPrefix(rest, "-")) {
			return 0, bad
		}
		if r < 0 {
			return 0, fmt.Errorf("%q is negative: give a positive duration such as 7d", s)
		}
		if d+r < d {
			return 0, fmt.Errorf("%q is too long", s)
		}
		d += r
	}
	if d <= 0 {
		return 0, fmt.Errorf("%q keeps nothing: give a positive duration such as 7d, or leave within out", s)
	}
	return d, nil
}
