// Package restore turns a verified snapshot into etcd member data dirs without losing anything:
// existing data dirs are moved aside (quarantined), never deleted, and restores are made
// Kubernetes-safe by raising the revision above anything clients may have seen.
package restore

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"time"
)

// MinBump is the smallest revision bump applied to a Kubernetes-safe restore. Revisions are
// 64-bit, so a generous bump costs nothing, while too small a bump lets revisions go backwards
// under watch caches and informers (kubernetes/kubernetes#118501).
const MinBump = 1_000_000

// MaxBumpedRevision is the highest revision a bump may lead to: 2^53. etcd's revisions are
// int64, and a bump past 2^63-1 wraps them around so that they go down, the very failure the
// bump exists to prevent. 2^53 is far below that and still leaves 9e15 revisions (285 years of a
// million writes a second); below it, revisions stay exact in the tools that read JSON numbers
// as doubles (jq, JavaScript), such as `etcdctl -w json` piped to jq.
const MaxBumpedRevision int64 = 1 << 53

// ErrBumpTooLarge is returned (wrapped) by CheckBump for a bump that would raise the revision
// above MaxBumpedRevision.
var ErrBumpTooLarge = errors.New("revision bump too large")

// MaxBumpFor is the largest bump a snapshot at revision may get: what keeps it at or below
// MaxBumpedRevision (zero when it is already there or above).
func MaxBumpFor(revision int64) uint64 {
	if revision >= MaxBumpedRevision {
		return 0
	}
	return uint64(MaxBumpedRevision - max(revision, 0))
}

// CheckBump refuses a bump that, added to the snapshot's revision, would pass
// MaxBumpedRevision (and so could wrap around past 2^63-1). A zero bump always passes.
func CheckBump(revision int64, bump uint64) error {
	if bump == 0 || bump <= MaxBumpFor(revision) {
		return nil
	}
	reach := "past 2^63-1, where revisions wrap around and go down"
	if bump <= uint64(math.MaxInt64-max(revision, 0)) {
		reach = fmt.Sprint(revision + int64(bump))
	}
	if MaxBumpFor(revision) == 0 {
		return fmt.Errorf("%w: the snapshot's revision %d is already at or above %d, the highest etcdguard bumps to: no bump fits (restore without one, and restart every kube-apiserver)",
			ErrBumpTooLarge, revision, MaxBumpedRevision)
	}
	return fmt.Errorf("%w: %d on revision %d would reach %s, above %d (2^53), the highest etcdguard bumps to: the largest bump for this snapshot is %d",
		ErrBumpTooLarge, bump, revision, reach, MaxBumpedRevision, MaxBumpFor(revision))
}

// safetyFactor multiplies the estimated number of revisions written since the backup.
const safetyFactor = 10

// RevisionPoint is a revision observed at a time: a backup's revision and creation time, or a
// high-water mark.
type RevisionPoint struct {
	Revision int64
	At       time.Time
}

// BumpInputs is what is known when sizing a bump.
type BumpInputs struct {
	// Backup is the snapshot being restored.
	Backup RevisionPoint
	// History holds other known points (the other backups of the same cluster), in any order.
	History []RevisionPoint
	// HighWater is the highest revision known to have been served, if recorded (zero if not).
	HighWater RevisionPoint
	// Now is the time of the restore.
	Now time.Time
}

// Bump is a sized revision bump and the reasoning behind it, for the operator.
type Bump struct {
	Amount  uint64
	Reasons []string
}

// SizeBump estimates how far revisions may have moved since the backup and returns a bump that
// covers it with a wide margin: the revision rate between known points, times the backup's age,
// times a safety factor; at least the distance to a recorded high-water mark; never below
// MinBump; never above MaxBumpFor the backup's revision (an estimate that large is capped, and
// the reasons say so), so the result always passes CheckBump. It is pure: the inputs are all it
// looks at.
func SizeBump(in BumpInputs) Bump {
	b := Bump{Amount: MinBump}
	b.Reasons = append(b.Reasons, fmt.Sprintf("floor %d", MinBump))

	points := append([]RevisionPoint{in.Backup}, in.History...)
	if in.HighWater.Revision > 0 {
		points = append(points, in.HighWater)
	}
	sort.Slice(points, func(i, j int) bool { return points[i].At.Before(points[j].At) })
	var rate float64 // revisions per second, the highest seen between consecutive points
	for i := 1; i < len(points); i++ {
		dt := points[i].At.Sub(points[i-1].At).Seconds()
		dr := float64(points[i].Revision - points[i-1].Revision)
		if dt > 0 && dr > 0 {
			rate = math.Max(rate, dr/dt)
		}
	}
	age := in.Now.Sub(in.Backup.At)
	if rate > 0 && age > 0 {
		est := rate * age.Seconds() * safetyFactor
		b.Reasons = append(b.Reasons, fmt.Sprintf("peak rate %.1f revisions/s between backups x backup age %s x %d = %.0f",
			rate, age.Round(time.Second), safetyFactor, est))
		switch {
		case est > float64(MaxBumpedRevision):
			// Too large to be a revision (or past uint64 altogether): the cap below applies.
			b.Amount = math.MaxUint64
		case uint64(est) > b.Amount:
			b.Amount = uint64(est)
		}
	} else {
		b.Reasons = append(b.Reasons, "no revision rate known (fewer than two backups of this cluster)")
	}
	if hw := in.HighWater.Revision; hw > in.Backup.Revision {
		gap := uint64(hw) - uint64(max(in.Backup.Revision, 0)) // both non-negative: no overflow
		need := uint64(math.MaxUint64)
		if gap <= math.MaxUint64/2 {
			need = gap * 2
		}
		b.Reasons = append(b.Reasons, fmt.Sprintf("high-water mark %d is %d above the backup, x2 = %d", hw, gap, need))
		if need > b.Amount {
			b.Amount = need
		}
	}
	if limit := MaxBumpFor(in.Backup.Revision); b.Amount > limit {
		if limit == 0 {
			b.Reasons = append(b.Reasons, fmt.Sprintf("no bump fits: the backup's revision %d is already at or above %d (2^53), the highest etcdguard bumps to; restore with --no-bump and restart every kube-apiserver",
				in.Backup.Revision, MaxBumpedRevision))
		} else {
			b.Reasons = append(b.Reasons, fmt.Sprintf("the estimate is too large: capped at %d, which raises the revision to %d (2^53), the highest etcdguard bumps to",
				limit, MaxBumpedRevision))
		}
		b.Amount = limit
	}
	return b
}
