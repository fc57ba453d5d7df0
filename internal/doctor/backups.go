package doctor

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/snapshot"
)

// checkBackups reports the age of the newest verified backup against the RPO, and whether it is
// kept by the 3-2-1 rule: three copies, on two kinds of media, one of them offline.
func checkBackups(ctx context.Context, targets []repository.Target, rpo time.Duration, now time.Time) []Finding {
	if len(targets) == 0 {
		return []Finding{{Severity: Warning, Check: "backups", Subject: "targets",
			Summary: "no backup target configured: nothing protects this cluster's data",
			Next:    "etcdguard snapshot save --target file:///var/backups/etcd (and an S3 and an offline target)"}}
	}
	cat, err := snapshot.Load(ctx, targets)
	if cat != nil {
		defer cat.Close()
	}
	var fs []Finding
	names := make([]string, 0, len(cat.Unreadable))
	for n := range cat.Unreadable {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		sev := Warning
		for _, t := range targets {
			if t.Name == n && t.Offline {
				sev = OK // an offline medium is expected to be absent most of the time
			}
		}
		fs = append(fs, Finding{Severity: sev, Check: "backups", Subject: "target " + n, Summary: "cannot be read: " + cat.Unreadable[n]})
	}
	var latest snapshot.Choice
	if err == nil {
		latest, err = cat.Latest(ctx, snapshot.Query{})
	}
	if err != nil {
		return append(fs, Finding{Severity: Critical, Check: "backups", Subject: "backups",
			Summary: "no verified backup found in any target", Next: "etcdguard snapshot save --config CONFIG"})
	}
	newest := latest.Entry
	age := now.Sub(newest.Manifest.Created)
	f := Finding{Check: "backup-age", Subject: newest.Manifest.ID,
		Evidence: []string{fmt.Sprintf("created %s, revision %d", newest.Manifest.Created.Format(time.RFC3339), newest.Manifest.Revision)}}
	switch {
	case age > 2*rpo:
		f.Severity, f.Summary = Critical, fmt.Sprintf("the newest backup is %s old, more than twice the RPO of %s", age.Round(time.Minute), rpo)
		f.Next = "etcdguard snapshot save --config CONFIG, and check why scheduled backups stopped"
	case age > rpo:
		f.Severity, f.Summary = Warning, fmt.Sprintf("the newest backup is %s old, more than the RPO of %s", age.Round(time.Minute), rpo)
		f.Next = "etcdguard snapshot save --config CONFIG"
	default:
		f.Severity, f.Summary = OK, fmt.Sprintf("the newest backup is %s old (RPO %s)", age.Round(time.Second), rpo)
	}
	fs = append(fs, f)

	copies, offline := len(newest.Copies), 0
	media := map[string]bool{}
	var where []string
	for _, c := range newest.Copies {
		media[c.Repo.Target.Media] = true
		if c.Repo.Target.Offline {
			offline++
		}
		where = append(where, c.Repo.Target.Name+" ("+c.Repo.Target.Media+")")
	}
	r := Finding{Check: "3-2-1", Subject: newest.Manifest.ID, Evidence: []string{"copies: " + strings.Join(where, ", ")}}
	var missing []string
	if copies < 3 {
		missing = append(missing, fmt.Sprintf("%d copies, want 3", copies))
	}
	if len(media) < 2 {
		missing = append(missing, fmt.Sprintf("%d kind of media, want 2", len(media)))
	}
	if offline < 1 {
		missing = append(missing, "no offline copy")
	}
	if len(missing) == 0 {
		r.Severity, r.Summary = OK, fmt.Sprintf("kept by the 3-2-1 rule: %d copies, %d kinds of media, %d offline", copies, len(media), offline)
	} else {
		r.Severity, r.Summary = Warning, "not kept by the 3-2-1 rule: "+strings.Join(missing, "; ")
		r.Next = "add targets (S3, an offline medium) and run: etcdguard snapshot copy --to NAME"
	}
	return append(fs, r)
}
