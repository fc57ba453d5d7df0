package restore

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrVersionSkew is returned (wrapped) when a restore is refused because the etcd version the
// restored member will run cannot safely read the backup: a downgrade (a 3.6 backup for etcd
// 3.5), a change of major version, or more than one minor version up.
var ErrVersionSkew = errors.New("the backup's etcd version does not fit the member's")

// SkewVerdict is what CheckVersionSkew decides about restoring a backup for an etcd version.
type SkewVerdict string

// Verdicts, from harmless to refused.
const (
	// SkewOK: the same minor version.
	SkewOK SkewVerdict = "ok"
	// SkewUnknown: one of the two versions is not known; the restore goes on with a note.
	SkewUnknown SkewVerdict = "unknown"
	// SkewWarning: one minor version up (a 3.5 backup for etcd 3.6), which etcd supports, or a
	// refused skew that was explicitly allowed.
	SkewWarning SkewVerdict = "warning"
	// SkewRefused: a downgrade, another major version, or more than one minor version up.
	SkewRefused SkewVerdict = "refused"
)

// VersionSkew is the verdict on restoring a backup of one etcd version for a member that will
// run another, and why.
type VersionSkew struct {
	Verdict SkewVerdict `json:"verdict"`
	// Backup and Target are the two versions compared, as given ("" when not known).
	Backup string `json:"backup_version,omitempty"`
	Target string `json:"target_version,omitempty"`
	Reason string `json:"reason"`
	// Next is what to do about a refused (or allowed) skew.
	Next string `json:"next,omitempty"`
}

// Err is ErrVersionSkew, wrapped with the reason and the next step, when the verdict is
// SkewRefused; else nil.
func (s VersionSkew) Err() error {
	if s.Verdict != SkewRefused {
		return nil
	}
	return fmt.Errorf("%w: %s: %s", ErrVersionSkew, s.Reason, s.Next)
}

// CheckVersionSkew decides whether a backup taken at etcd version backup (its storage version,
// else its cluster version, else the server version it was taken from: "3.5.0", "v3.6.16")
// may be restored for a member that will run etcd version target. Only major and minor
// versions count. The same minor is ok; one minor up is a warning (etcd upgrades the data when
// it starts, and the member cannot go back); a downgrade, another major version or more than
// one minor up is refused, or only a warning when allow is set. A version that is empty or not
// a version gives SkewUnknown. It is pure: the arguments are all it looks at.
func CheckVersionSkew(backup, target string, allow bool) VersionSkew {
	s := VersionSkew{Backup: backup, Target: target}
	bMaj, bMin, bOK := majorMinor(backup)
	tMaj, tMin, tOK := majorMinor(target)
	switch {
	case !bOK && !tOK:
		s.Verdict, s.Reason = SkewUnknown, "neither the backup's etcd version nor the member's is known: check that the member runs the backup's minor version or the next one"
		return s
	case !bOK:
		s.Verdict, s.Reason = SkewUnknown, fmt.Sprintf("the backup's etcd version is not known: check that it is %d.%d or %d.%d (the member runs %s)", tMaj, tMin-1, tMaj, tMin, target)
		if tMin == 0 {
			s.Reason = fmt.Sprintf("the backup's etcd version is not known: check that it is %d.%d (the member runs %s)", tMaj, tMin, target)
		}
		return s
	case !tOK:
		s.Verdict, s.Reason = SkewUnknown, fmt.Sprintf("the etcd version the member will run is not known (no data dir to read it from; --etcd-version tells it): run etcd %d.%d or %d.%d on it, never an older one", bMaj, bMin, bMaj, bMin+1)
		return s
	}
	from, to := fmt.Sprintf("%d.%d", bMaj, bMin), fmt.Sprintf("%d.%d", tMaj, tMin)
	switch {
	case bMaj == tMaj && bMin == tMin:
		s.Verdict, s.Reason = SkewOK, fmt.Sprintf("the backup and the member are both etcd %s", to)
		return s
	case bMaj == tMaj && tMin == bMin+1:
		s.Verdict, s.Reason = SkewWarning, fmt.Sprintf("an etcd %s backup restored for etcd %s: etcd %s upgrades the data when it starts, and the member cannot go back to %s; run every member of the restored cluster on %s", from, to, to, from, to)
		return s
	case bMaj == tMaj && tMin < bMin:
		s.Verdict = SkewRefused
		s.Reason = fmt.Sprintf("an etcd %s backup restored for etcd %s is a downgrade: etcd %s may not read data written by %s correctly", from, to, to, from)
		s.Next = fmt.Sprintf("run etcd %s on the restored member (give --etcd-version %s when the data dir replaced is not what it will run), or add --allow-version-skew to restore anyway", from, from)
	case bMaj == tMaj:
		s.Verdict = SkewRefused
		s.Reason = fmt.Sprintf("an etcd %s backup restored for etcd %s skips minor versions, and etcd moves one minor version at a time", from, to)
		s.Next = fmt.Sprintf("restore it for etcd %d.%d first, or add --allow-version-skew to restore anyway", bMaj, bMin+1)
	default:
		s.Verdict = SkewRefused
		s.Reason = fmt.Sprintf("an etcd %s backup restored for etcd %s changes the major version, which etcd does not support", from, to)
		s.Next = "add --allow-version-skew to restore anyway"
	}
	if allow {
		s.Verdict, s.Next = SkewWarning, "allowed by --allow-version-skew"
		s.Reason += " (allowed by --allow-version-skew)"
	}
	return s
}

// majorMinor reads the major and minor numbers of "3.6", "3.6.16", "v3.5.0" or "3.6.0-rc.1".
func majorMinor(v string) (int, int, bool) {
	parts := strings.SplitN(strings.TrimPrefix(strings.TrimSpace(v), "v"), ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	maj, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(strings.SplitN(parts[1], "-", 2)[0])
	if err1 != nil || err2 != nil || maj < 0 || minor < 0 {
		return 0, 0, false
	}
	return maj, minor, true
}

// ValidVersion reports whether v reads as an etcd version for CheckVersionSkew ("3.6",
// "3.5.35", "v3.6.0").
func ValidVersion(v string) bool {
	_, _, ok := majorMinor(v)
	return ok
}
