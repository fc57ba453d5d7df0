package restore

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
)

// DefaultMaxPlanAge is how long an unfinished recovery may be resumed: an interruption is
// carried on within hours; a plan older than this was made on a cluster that has most likely
// changed, and a new one is made instead (recover --new-plan).
const DefaultMaxPlanAge = 12 * time.Hour

// ResumeDiff compares what a plan recorded of its members with a fresh look at them. Members the
// plan already acted on (touched) are expected to differ and are skipped. It returns one line per
// member that differs, saying how it was and how it is; none means the plan still describes the
// cluster. It is pure.
func ResumeDiff(p Plan, now []Assessment, touched map[string]bool) []string {
	planned := map[string]Assessment{}
	for _, a := range p.Assessments {
		planned[a.Name] = a
	}
	var diffs []string
	for _, b := range now {
		if touched[b.Name] {
			continue
		}
		a, ok := planned[b.Name]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("member %s is not in the plan", b.Name))
			continue
		}
		if was, is := describeAssessment(a), describeAssessment(b); a.Online != b.Online || (!a.Online && !sameDisk(a.Disk, b.Disk)) {
			diffs = append(diffs, fmt.Sprintf("member %s: when planned %s; now %s", b.Name, was, is))
		}
	}
	return diffs
}

func sameDisk(a, b *DiskState) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	if a.Verdict == verdictLost {
		return true // declared lost when planned: what is there now is not used
	}
	return a.Verdict == b.Verdict && a.DBRevision == b.DBRevision && a.DBModTime.Equal(b.DBModTime) &&
		a.WALLastIndex == b.WALLastIndex && a.ClusterID == b.ClusterID && a.DBOK == b.DBOK
}

func describeAssessment(a Assessment) string {
	if a.Online {
		return fmt.Sprintf("it answered with a leader at revision %d", a.Revision)
	}
	d := a.Disk
	if d == nil {
		return "it did not answer and its data dir was not read"
	}
	s := fmt.Sprintf("it did not answer; data dir %s", d.Verdict)
	if d.DBRevision > 0 {
		s += fmt.Sprintf(", database at revision %d written %s", d.DBRevision, d.DBModTime.UTC().Format(time.RFC3339))
	}
	if d.WALLastIndex > 0 {
		s += fmt.Sprintf(", WAL to index %d", d.WALLastIndex)
	}
	return s
}

// CheckResume decides whether an unfinished plan may be carried on: it must be younger than
// MaxPlanAge, and every member it has not acted on yet must be as it was when planned (answering
// or not, the same data). Otherwise the cluster changed under the plan (a member brought back by
// hand, new writes) and carrying it on could stop a healthy member or restore old data over new:
// it is refused, showing how each member was and is, and the operator makes a new plan.
func (r *Recoverer) CheckResume(ctx context.Context, p Plan) error {
	maxAge := r.MaxPlanAge
	if maxAge == 0 {
		maxAge = DefaultMaxPlanAge
	}
	if age := r.now().Sub(p.Created); age > maxAge {
		return fmt.Errorf("%w: the unfinished recovery %s was planned %s ago (%s), more than %s: the cluster has most likely changed since; run recover --new-plan to assess it again",
			ErrPlanMismatch, p.ID, age.Round(time.Minute), p.Created.Format(time.RFC3339), maxAge)
	}
	touched := r.touched(p.ID)
	var mu sync.Mutex
	var now []Assessment
	var wg sync.WaitGroup
	for _, m := range p.Cluster.Members {
		if touched[m.Name] {
			continue
		}
		wg.Go(func() {
			a := r.assessMember(ctx, m)
			mu.Lock()
			now = append(now, a)
			mu.Unlock()
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	if diffs := ResumeDiff(p, now, touched); len(diffs) > 0 {
		return fmt.Errorf("%w: the cluster changed since the unfinished recovery %s was planned (%s), so it is not carried on: %s; run recover --new-plan to assess it again",
			ErrPlanMismatch, p.ID, p.Created.Format(time.RFC3339), strings.Join(diffs, "; "))
	}
	return nil
}
