// Package restore turns a verified snapshot into etcd member data dirs without losing anything:
// existing data dirs are moved aside (quarantined), never deleted, and restores are made
// Kubernetes-safe by raising the revision above anything clients may have seen.
package restore

import (
	"fmt"
	"math"
	"sort"
	"time"
)

// MinBump is the smallest revision bump applied to a Kubernetes-safe restore. Revisions are
// 64-bit, so a generous bump costs nothing, while too small a bump lets revisions go backwards
// under watch caches and informers (kubernetes/kubernetes#118501).
const MinBump = 1_000_000

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
// MinBump. It is pure: the inputs are all it looks at.
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
		if est < math.MaxInt64/4 && uint64(est) > b.Amount {
			b.Amount = uint64(est)
		}
	} else {
		b.Reasons = append(b.Reasons, "no revision rate known (fewer than two backups of this cluster)")
	}
	if hw := in.HighWater.Revision; hw > in.Backup.Revision {
		need := uint64(hw-in.Backup.Revision) * 2
		b.Reasons = append(b.Reasons, fmt.Sprintf("high-water mark %d is %d above the backup, x2 = %d", hw, hw-in.Backup.Revision, need))
		if need > b.Amount {
			b.Amount = need
		}
	}
	return b
}
