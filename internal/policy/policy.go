// Package policy checks the 3-2-1 rule over the backups the targets hold: enough copies of a
// recent backup, on enough kinds of media, with a recent enough copy on an offline medium. An
// offline target (a tape, a removable disk) is often not mounted: its inventory, the backups it
// held the last time it was read, is kept in the state dir, so the check can still say how old
// its newest copy is, and since when the medium has not been seen.
//
// Evaluate is pure (the listing and the time are inputs); Check reads the targets and the
// inventories and records the inventories it could read.
package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/etcdguard/etcdguard/internal/atomicfile"
	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/snapshot"
)

// ErrBroken and ErrUnchecked are returned (wrapped) by `policy check` when a rule is broken, and
// when a rule could only be judged from a recorded inventory, a target could not be read, or an
// inventory could not be read or recorded.
var (
	ErrBroken    = errors.New("the 3-2-1 rule is broken")
	ErrUnchecked = errors.New("the 3-2-1 rule could not be fully checked")
)

// Rules are the 3-2-1 rule's numbers.
type Rules struct {
	// Copies is how many targets must hold the newest backup (an offline target counts when it
	// holds a backup no older than OfflineMaxAge: its copy may lag that much); Media how many
	// kinds of media those copies must span; Offline how many offline targets must hold a
	// backup no older than OfflineMaxAge.
	Copies, Media, Offline int
	OfflineMaxAge          time.Duration
}

// DefaultRules are 3 copies on 2 media, 1 of them offline and at most 7 days old.
var DefaultRules = Rules{Copies: 3, Media: 2, Offline: 1, OfflineMaxAge: 7 * 24 * time.Hour}

// Target is what the check knows of one target.
type Target struct {
	Name    string `json:"name"`
	Media   string `json:"media"`
	Offline bool   `json:"offline,omitempty"`
	// Seen says whether it was read now; when it was not, Backups is its inventory as of SeenAt
	// (zero when it was never read), and Error why it could not be read now.
	Seen    bool      `json:"seen"`
	SeenAt  time.Time `json:"seen_at,omitzero"`
	Error   string    `json:"error,omitempty"`
	Backups []Held    `json:"backups"`
	// InventoryError says why its recorded inventory could not be read or recorded (an offline
	// target's; a warning: the next check without the medium cannot judge it).
	InventoryError string `json:"inventory_error,omitempty"`
	// SameAs names an earlier target that is the same place (one folder by another path, one
	// bucket prefix): its backups are not a copy of their own and are not counted again.
	SameAs string `json:"same_as,omitempty"`
}

// Held is one backup a target holds.
type Held struct {
	ID      string    `json:"id"`
	Started time.Time `json:"started"`
}

// Backup is one backup and where its copies are.
type Backup struct {
	ID      string    `json:"id"`
	Started time.Time `json:"started"`
	Targets []string  `json:"targets"`
	Copies  int       `json:"copies"`
	Media   int       `json:"media"`
	Offline int       `json:"offline"`
	// Meets says whether this backup alone is 3-2-1: copies, media and offline copies enough.
	Meets bool `json:"meets"`
}

// Severity of a finding: a broken rule is critical; a rule the check could only judge from an
// offline medium's recorded inventory, or not at all, is a warning.
const (
	OK       = "ok"
	Warning  = "warning"
	Critical = "critical"
)

// Finding is the verdict on one rule.
type Finding struct {
	Rule     string `json:"rule"`
	Severity string `json:"severity"`
	Message  string `json:"message"`
	// Next is what to do about it, when it is not ok.
	Next string `json:"next,omitempty"`
}

// Report is the whole check.
type Report struct {
	At       time.Time `json:"at"`
	Rules    RulesJSON `json:"rules"`
	Targets  []Target  `json:"targets"`
	Backups  []Backup  `json:"backups"` // newest first
	Findings []Finding `json:"findings"`
	// Worst is the worst severity of the findings.
	Worst string `json:"worst"`
	// NewestOfflineAge is the age of the newest backup on any offline target (-1: none).
	NewestOfflineAge time.Duration `json:"-"`
}

// RulesJSON is Rules as JSON writes them.
type RulesJSON struct {
	Copies        int    `json:"copies"`
	Media         int    `json:"media"`
	Offline       int    `json:"offline"`
	OfflineMaxAge string `json:"offline_max_age"`
}

// Evaluate judges the rules over what the targets hold, at now.
func Evaluate(targets []Target, r Rules, now time.Time) Report {
	rep := Report{At: now, Targets: targets, NewestOfflineAge: -1,
		Rules: RulesJSON{Copies: r.Copies, Media: r.Media, Offline: r.Offline, OfflineMaxAge: r.OfflineMaxAge.String()}}
	byID := map[string]*Backup{}
	media := map[string]map[string]bool{}
	var freshOffline []Target // offline targets holding a backup no older than the limit
	var newestOff time.Time
	var newestOffTarget string
	for _, t := range targets {
		if t.SameAs != "" {
			continue
		}
		var newest time.Time
		for _, h := range t.Backups {
			b := byID[h.ID]
			if b == nil {
				b = &Backup{ID: h.ID, Started: h.Started}
				byID[h.ID] = b
				media[h.ID] = map[string]bool{}
			}
			b.Targets = append(b.Targets, t.Name)
			b.Copies++
			media[h.ID][t.Media] = true
			if t.Offline {
				b.Offline++
			}
			if h.Started.After(newest) {
				newest = h.Started
			}
		}
		if t.Offline && !newest.IsZero() {
			if now.Sub(newest) <= r.OfflineMaxAge {
				freshOffline = append(freshOffline, t)
			}
			if newest.After(newestOff) {
				newestOff, newestOffTarget = newest, t.Name
			}
		}
	}
	for id, b := range byID {
		b.Media = len(media[id])
		b.Meets = b.Copies >= r.Copies && b.Media >= r.Media && b.Offline >= r.Offline
		rep.Backups = append(rep.Backups, *b)
	}
	sort.Slice(rep.Backups, func(i, j int) bool {
		if !rep.Backups[i].Started.Equal(rep.Backups[j].Started) {
			return rep.Backups[i].Started.After(rep.Backups[j].Started)
		}
		return rep.Backups[i].ID > rep.Backups[j].ID
	})
	if !newestOff.IsZero() {
		rep.NewestOfflineAge = now.Sub(newestOff)
	}

	unseen := map[string]Target{}
	for _, t := range targets {
		if !t.Seen {
			unseen[t.Name] = t
		}
	}
	add := func(f Finding) { rep.Findings = append(rep.Findings, f) }

	// The offline rule first: the copies rule counts the fresh offline copies.
	switch {
	case len(freshOffline) >= r.Offline:
		sev, msg := OK, fmt.Sprintf("%d offline target(s) hold a backup at most %s old", len(freshOffline), days(r.OfflineMaxAge))
		if len(freshOffline) > 0 && !newestOff.IsZero() {
			msg = fmt.Sprintf("the newest offline copy, on %s, is %s old (limit %s)", newestOffTarget, days(now.Sub(newestOff)), days(r.OfflineMaxAge))
		}
		for _, t := range freshOffline {
			if !t.Seen {
				sev = Warning
				msg += fmt.Sprintf("; %s is not mounted: judged from its inventory as read %s", t.Name, t.SeenAt.UTC().Format(time.RFC3339))
			}
		}
		add(Finding{Rule: "offline", Severity: sev, Message: msg})
	default:
		msg := fmt.Sprintf("%d offline target(s) hold a backup at most %s old; the rule asks for %d", len(freshOffline), days(r.OfflineMaxAge), r.Offline)
		if newestOff.IsZero() {
			msg += ": no offline target holds any backup"
		} else {
			msg += fmt.Sprintf(": the newest offline copy, on %s, is %s old", newestOffTarget, days(now.Sub(newestOff)))
		}
		newestID := "ID"
		if len(rep.Backups) > 0 {
			newestID = rep.Backups[0].ID
		}
		next := "mount the offline medium and copy the newest backup to it: etcdguard snapshot copy --to NAME " + newestID
		for _, t := range targets {
			if t.Offline && !t.Seen {
				if t.SeenAt.IsZero() {
					msg += fmt.Sprintf("; %s has never been read (is it mounted?)", t.Name)
				} else {
					msg += fmt.Sprintf("; %s has not been mounted since %s (%s ago)", t.Name, t.SeenAt.UTC().Format(time.RFC3339), days(now.Sub(t.SeenAt)))
				}
				next = fmt.Sprintf("mount %s and copy the newest backup to it: etcdguard snapshot copy --to %s %s", t.Name, t.Name, newestID)
			}
		}
		add(Finding{Rule: "offline", Severity: Critical, Message: msg, Next: next})
	}

	if len(rep.Backups) == 0 {
		add(Finding{Rule: "copies", Severity: Critical, Message: "no target holds any backup", Next: "take one: etcdguard snapshot save"})
		add(Finding{Rule: "media", Severity: Critical, Message: "no target holds any backup", Next: "take one: etcdguard snapshot save"})
	} else {
		newest := rep.Backups[0]
		holders := map[string]bool{}
		mediaOf := map[string]bool{}
		for _, n := range newest.Targets {
			holders[n] = true
		}
		for _, t := range targets {
			if holders[t.Name] {
				mediaOf[t.Media] = true
			}
		}
		for _, t := range freshOffline {
			if !holders[t.Name] {
				holders[t.Name] = true // its copy lags, by no more than the limit
				mediaOf[t.Media] = true
			}
		}
		copies, nMedia := len(holders), len(mediaOf)
		missing := []string{}
		for _, t := range targets {
			if !holders[t.Name] && !t.Offline && t.SameAs == "" {
				missing = append(missing, t.Name)
			}
		}
		sev, next := OK, ""
		msg := fmt.Sprintf("the newest backup, %s, has %d copies (the rule asks for %d; a fresh offline copy of an older backup counts)", newest.ID, copies, r.Copies)
		if copies < r.Copies {
			sev = Critical
			next = "add targets or copy the backup: etcdguard snapshot copy --to NAME " + newest.ID
			if len(missing) > 0 {
				msg += fmt.Sprintf("; not in %v", missing)
			}
		}
		add(Finding{Rule: "copies", Severity: sev, Message: msg, Next: next})
		sev, next = OK, ""
		if nMedia < r.Media {
			sev, next = Critical, "keep a copy on another kind of medium (media: disk, s3, tape, usb) and copy the backup there"
		}
		add(Finding{Rule: "media", Severity: sev, Message: fmt.Sprintf("the newest backup's copies are on %d kind(s) of media (the rule asks for %d)", nMedia, r.Media), Next: next})
	}
	for _, t := range targets {
		if t.SameAs != "" {
			add(Finding{Rule: "same-place", Severity: Warning,
				Message: fmt.Sprintf("targets %s and %s are the same place: their backups are one copy, counted once", t.SameAs, t.Name),
				Next:    "give each target a place of its own (another disk, bucket or medium), or remove one of them from the config"})
			continue
		}
		if t.InventoryError != "" {
			add(Finding{Rule: "inventory", Severity: Warning, Message: t.InventoryError,
				Next: "the check judges an unmounted medium by its inventory: make the state dir writable, or remove a damaged file and mount the medium once"})
		}
		if !t.Seen && !t.Offline {
			add(Finding{Rule: "readable", Severity: Warning, Message: fmt.Sprintf("target %s could not be read: %s", t.Name, t.Error),
				Next: "etcdguard doctor names the problem; the check counts nothing from it"})
		}
	}
	if f, ok := clockFinding(targets, now); ok {
		add(f)
	}
	rep.Worst = OK
	for _, f := range rep.Findings {
		rep.Worst = worse(rep.Worst, f.Severity)
	}
	return rep
}

// clockSkew is how far after the check's time a backup or an inventory may be dated before the
// check calls the clocks wrong: a few minutes between hosts are usual.
const clockSkew = 5 * time.Minute

// clockFinding warns of a backup or an inventory dated after now: this host's clock went
// backwards (an RTC reset after a power cut), or the host that took it was ahead. Ages measured
// from such a time are negative, and a copy would pass for fresh for as long as that lasts.
func clockFinding(targets []Target, now time.Time) (Finding, bool) {
	var what string
	var at time.Time
	for _, t := range targets {
		for _, h := range t.Backups {
			if h.Started.After(now.Add(clockSkew)) && h.Started.After(at) {
				what, at = fmt.Sprintf("backup %s on %s was taken at %s", h.ID, t.Name, h.Started.UTC().Format(time.RFC3339)), h.Started
			}
		}
		if !t.Seen && t.SeenAt.After(now.Add(clockSkew)) && t.SeenAt.After(at) {
			what, at = fmt.Sprintf("the inventory of %s was read at %s", t.Name, t.SeenAt.UTC().Format(time.RFC3339)), t.SeenAt
		}
	}
	if at.IsZero() {
		return Finding{}, false
	}
	return Finding{Rule: "clock", Severity: Warning,
		Message: fmt.Sprintf("%s, %s after this check's time (%s): this host's clock went backwards, or the host that took it was ahead; the ages above are not to be trusted", what, days(at.Sub(now)), now.UTC().Format(time.RFC3339)),
		Next:    "set the clocks right (etcdguard doctor compares this host's with etcd's and S3's), then check again"}, true
}

func worse(a, b string) string {
	rank := map[string]int{OK: 0, Warning: 1, Critical: 2}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

// days writes a duration in days, or hours under two days.
func days(d time.Duration) string {
	if d < 48*time.Hour {
		return d.Round(time.Minute).String()
	}
	return fmt.Sprintf("%.1fd", d.Hours()/24)
}

// Options configure Check.
type Options struct {
	Targets []repository.Target
	Rules   Rules
	// StateDir keeps the inventories of offline targets (<state-dir>/inventory/<target>.json).
	// Empty: inventories are neither read nor kept.
	StateDir string
	Now      func() time.Time
}

// Check lists every target, keeps the inventory of each offline target it could read, reads the
// recorded inventory of each it could not, and evaluates the rules.
func Check(ctx context.Context, opts Options) (Report, error) {
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	c, err := snapshot.Load(ctx, opts.Targets)
	if c != nil {
		defer c.Close()
	}
	// No target read is a report too (the unmounted media by their inventories, the others
	// unreadable), unless the check itself was stopped.
	if err != nil && (c == nil || ctx.Err() != nil) {
		return Report{}, err
	}
	at := now()
	held := map[string][]Held{}
	for _, e := range c.Entries {
		for _, cp := range e.Copies {
			n := cp.Repo.Target.Name
			held[n] = append(held[n], Held{ID: cp.Manifest.ID, Started: cp.Manifest.Started})
		}
	}
	var ts []Target
	places := map[string]string{} // place -> the first target there
	for _, t := range opts.Targets {
		pt := Target{Name: t.Name, Media: t.Media, Offline: t.Offline, Backups: held[t.Name]}
		why, unreadable := c.Unreadable[t.Name]
		var inv inventory
		if t.Offline && opts.StateDir != "" && (unreadable || len(pt.Backups) == 0) {
			var err error
			inv, err = readInventory(opts.StateDir, t.Name)
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				pt.InventoryError = err.Error()
			}
		}
		if !unreadable && len(pt.Backups) == 0 && len(inv.Backups) > 0 {
			// A medium's mount point is an empty folder while nothing is mounted on it: an
			// empty listing of a medium that held backups is not a reading of it.
			unreadable = true
			why = fmt.Sprintf("it lists no backup, but held %d when read at %s: is the medium mounted? (an unmounted mount point is an empty folder)", len(inv.Backups), inv.SeenAt.UTC().Format(time.RFC3339))
		}
		if unreadable {
			pt.Error = why
			pt.SeenAt, pt.Backups = inv.SeenAt, inv.Backups
		} else {
			pt.Seen, pt.SeenAt = true, at
			if t.Offline && opts.StateDir != "" {
				if err := writeInventory(opts.StateDir, t.Name, inventory{SeenAt: at, Backups: pt.Backups}); err != nil {
					pt.InventoryError = err.Error()
				}
			}
		}
		if pt.Backups == nil {
			pt.Backups = []Held{}
		}
		if first, ok := places[place(t)]; ok {
			pt.SameAs = first
		} else {
			places[place(t)] = t.Name
		}
		ts = append(ts, pt)
	}
	return Evaluate(ts, opts.Rules, at), nil
}

// place names where a target's backups are, so that two targets naming one place (a folder by
// two paths or through a symlink, one bucket prefix) count as one copy: a file target's folder
// with symlinks resolved (as far as it exists), an S3 target's endpoint, bucket and prefix.
func place(t repository.Target) string {
	u, err := url.Parse(t.URL)
	if err != nil {
		return t.URL
	}
	if u.Scheme == "file" {
		p := filepath.Clean(u.Path)
		if r, err := filepath.EvalSymlinks(p); err == nil {
			p = r
		}
		return "file:" + p
	}
	return u.Scheme + "://" + u.Query().Get("endpoint") + "/" + u.Host + "/" + strings.Trim(path.Clean("/"+u.Path), "/")
}

// inventory is what an offline target held when it was last read.
type inventory struct {
	Target  string    `json:"target"`
	SeenAt  time.Time `json:"seen_at"`
	Backups []Held    `json:"backups"`
}

func inventoryPath(stateDir, target string) string {
	return filepath.Join(stateDir, "inventory", url.PathEscape(target)+".json") // a name never leaves the folder
}

// maxInventory bounds what is read of an inventory: a million backups' ids and times.
const maxInventory = 64 << 20

func readInventory(stateDir, target string) (inventory, error) {
	var inv inventory
	data, err := readRegular(inventoryPath(stateDir, target), maxInventory)
	if err != nil {
		return inv, fmt.Errorf("the recorded inventory of offline target %s: %w", target, err)
	}
	if err := json.Unmarshal(data, &inv); err != nil {
		return inv, fmt.Errorf("the recorded inventory of offline target %s, %s, does not read (%v): remove it, and mount the target once to record it again", target, inventoryPath(stateDir, target), err)
	}
	return inv, nil
}

// readRegular reads a regular file of at most limit bytes: never a symbolic link, a FIFO (that
// would block) or a device.
func readRegular(path string, limit int64) ([]byte, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (%s): remove it, and mount the target once to record it again", path, fi.Mode().Type())
	}
	if fi.Size() > limit {
		return nil, fmt.Errorf("%s is %d bytes, more than an inventory holds (%d): remove it, and mount the target once to record it again", path, fi.Size(), limit)
	}
	return os.ReadFile(path)
}

func writeInventory(stateDir, target string, inv inventory) error {
	inv.Target = target
	data, err := json.MarshalIndent(inv, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(inventoryPath(stateDir, target))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("record the inventory of offline target %s: %w", target, err)
	}
	if err := atomicfile.Write(inventoryPath(stateDir, target), data, 0o600); err != nil {
		return fmt.Errorf("record the inventory of offline target %s: %w", target, err)
	}
	return nil
}
