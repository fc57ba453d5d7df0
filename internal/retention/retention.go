// Package retention decides which full backups of a target to keep and which to remove, as pure
// policy: the backups, the policy and the time are its inputs, the decisions and their reasons
// its output; it reads no clock and touches no storage (the prune command and the agent carry
// the decisions out, under the exclusive lock, with the deletion protocol). A kept backup keeps
// its delta chain: the chain is the backup's point-in-time range, and goes only with it.
package retention

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Backup is one full backup of a target, as the policy sees it.
type Backup struct {
	ID string
	// Time is when its snapshot was taken (the manifest's started time).
	Time time.Time
	// Verified says its snapshot passed its checks (every stored backup's did: its manifest is
	// written after them; a later failed `snapshot verify` clears it).
	Verified bool
	// Locked says the storage refuses to remove it (S3 Object Lock, a legal hold): it is kept
	// whatever the policy says, and reported.
	Locked bool
}

// Policy is what a target keeps. A backup is kept if any rule keeps it; the zero Policy keeps
// only what is always kept (the newest verified backup, locked ones, any from the clock's future).
type Policy struct {
	// Last keeps the newest Last backups.
	Last int
	// Within keeps every backup taken less than Within before now.
	Within time.Duration
	// Hourly, Daily, Weekly, Monthly and Yearly keep the newest backup of each of the last N
	// hours, days, ISO weeks, months and years (UTC) that have one.
	Hourly, Daily, Weekly, Monthly, Yearly int
}

// Decision is what the policy says about one backup.
type Decision struct {
	Backup Backup
	Keep   bool
	// Reasons are the rules that keep it, or why it goes, in words for `prune --dry-run`.
	Reasons []string
}

// Apply decides, for every backup, whether the policy keeps it, at time now. Decisions come
// newest first. It is pure: the same inputs give the same decisions.
func Apply(backups []Backup, p Policy, now time.Time) []Decision {
	bs := append([]Backup(nil), backups...)
	sort.SliceStable(bs, func(i, j int) bool {
		if !bs[i].Time.Equal(bs[j].Time) {
			return bs[i].Time.After(bs[j].Time)
		}
		return bs[i].ID > bs[j].ID
	})
	out := make([]Decision, len(bs))
	for i, b := range bs {
		out[i].Backup = b
	}
	keep := func(i int, why string) { out[i].Keep, out[i].Reasons = true, append(out[i].Reasons, why) }

	newestVerified := -1
	for i, b := range bs {
		if b.Verified {
			newestVerified = i
			break
		}
	}
	if newestVerified >= 0 {
		keep(newestVerified, "the newest verified backup: always kept")
	}
	for i, b := range bs {
		if b.Locked {
			keep(i, "locked by the storage (object lock or legal hold): it cannot be removed")
		}
		if b.Time.After(now) {
			keep(i, fmt.Sprintf("taken %s after now by this clock: kept (is the clock behind?)", b.Time.Sub(now).Round(time.Second)))
		}
	}
	for i := 0; i < len(bs) && i < p.Last; i++ {
		keep(i, fmt.Sprintf("one of the last %d", p.Last))
	}
	if p.Within > 0 {
		for i, b := range bs {
			if !b.Time.After(now) && now.Sub(b.Time) < p.Within {
				keep(i, "within "+human(p.Within))
			}
		}
	}
	for _, bk := range []struct {
		n    int
		name string
		key  func(time.Time) string
	}{
		{p.Hourly, "hourly", func(t time.Time) string { return t.Format("2006-01-02T15") }},
		{p.Daily, "daily", func(t time.Time) string { return t.Format("2006-01-02") }},
		{p.Weekly, "weekly", func(t time.Time) string { y, w := t.ISOWeek(); return fmt.Sprintf("%04d-W%02d", y, w) }},
		{p.Monthly, "monthly", func(t time.Time) string { return t.Format("2006-01") }},
		{p.Yearly, "yearly", func(t time.Time) string { return t.Format("2006") }},
	} {
		if bk.n <= 0 {
			continue
		}
		seen := map[string]bool{}
		for i, b := range bs {
			if b.Time.After(now) {
				continue // kept already; it does not take a bucket of the past
			}
			k := bk.key(b.Time.UTC())
			if seen[k] {
				continue
			}
			if len(seen) == bk.n {
				break
			}
			seen[k] = true
			keep(i, fmt.Sprintf("%s %s (the newest of it; %d %s kept)", bk.name, k, bk.n, bucketNoun(bk.name, bk.n)))
		}
	}
	for i := range out {
		if !out[i].Keep {
			out[i].Reasons = []string{"no rule keeps it"}
		}
	}
	return out
}

func bucketNoun(name string, n int) string {
	noun := map[string]string{"hourly": "hour", "daily": "day", "weekly": "week", "monthly": "month", "yearly": "year"}[name]
	if n != 1 {
		noun += "s"
	}
	return noun
}

// human writes a duration in days when it is whole days ("7d"), as the config writes it.
func human(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}

// Summary writes decisions one per line, for golden files and `prune --dry-run`.
func Summary(ds []Decision) string {
	var b strings.Builder
	for _, d := range ds {
		verdict := "remove"
		if d.Keep {
			verdict = "keep"
		}
		fmt.Fprintf(&b, "%-6s %s %s: %s\n", verdict, d.Backup.Time.UTC().Format("2006-01-02T15:04Z"), d.Backup.ID, strings.Join(d.Reasons, "; "))
	}
	return b.String()
}
