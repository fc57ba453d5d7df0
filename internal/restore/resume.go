package restore

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/etcdguard/etcdguard/internal/cluster"
	"github.com/etcdguard/etcdguard/internal/datadir"
)

// DefaultMaxPlanAge is how long an unfinished recovery may be resumed: an interruption is
// carried on within hours; a plan older than this was made on a cluster that has most likely
// changed, and a new one is made instead (recover --new-plan).
const DefaultMaxPlanAge = 12 * time.Hour

// planClockSlack is how far in the future a plan's time may be before the clock is taken to have
// moved back (plans made on another host carry its clock).
const planClockSlack = 5 * time.Minute

// ResumeDiff compares what a plan recorded of its members with a fresh look at them (now). It is
// pure, and returns one line per member that differs, saying how it was and how it is; none means
// the plan still describes the cluster. The rules:
//   - a member the plan has restored (restored: its marker holds the plan's id) is the plan's own;
//   - on a start or replace path, a member the plan has acted on (touched) may differ: those
//     steps repeat safely (a serving member is left alone, a quarantine moves data aside);
//   - on a restore path, a member the plan has only stopped must still be down, with its data as
//     recorded or moved aside (absent): one that answers, or whose data changed, was brought back
//     by somebody else, and restoring over it would lose what it holds;
//   - any other member must be as recorded: answering or not, and a member that was down with the
//     same data (when its data dir was read at all).
func ResumeDiff(p Plan, now []cluster.Assessment, touched, restored map[string]bool) []string {
	planned := map[string]cluster.Assessment{}
	for _, a := range p.Assessments {
		planned[a.Name] = a
	}
	var diffs []string
	for _, b := range now {
		a, ok := planned[b.Name]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("member %s is not in the plan", b.Name))
			continue
		case restored[b.Name]:
			continue
		case touched[b.Name] && p.Path != PathRestore:
			continue
		case touched[b.Name]:
			if !b.Online && (b.Disk == nil || b.Disk.Verdict == string(datadir.VerdictMissing) || sameDisk(a.Disk, b.Disk)) {
				continue
			}
			diffs = append(diffs, fmt.Sprintf("member %s: stopped by this plan and not restored by it, but now %s (when planned %s)", b.Name, describeAssessment(b), describeAssessment(a)))
			continue
		}
		if a.Online != b.Online || (!a.Online && !sameDisk(a.Disk, b.Disk)) {
			diffs = append(diffs, fmt.Sprintf("member %s: when planned %s; now %s", b.Name, describeAssessment(a), describeAssessment(b)))
		}
	}
	return diffs
}

// sameDisk reports whether a data dir is as planned. A data dir the plan did not read (another
// host's, seen from where the plan was made) or declared lost is not compared.
func sameDisk(a, b *cluster.DiskState) bool {
	if a == nil || a.Verdict == cluster.VerdictLost {
		return true
	}
	if b == nil {
		return false
	}
	return a.Verdict == b.Verdict && a.DBRevision == b.DBRevision && a.DBModTime.Equal(b.DBModTime) &&
		a.WALLastIndex == b.WALLastIndex && a.ClusterID == b.ClusterID && a.DBOK == b.DBOK
}

func describeAssessment(a cluster.Assessment) string {
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

// CheckResume decides whether a plan may be carried on, by recover (an unfinished plan, only nil)
// or by recover apply (a plan file, for the members in only, all when empty): it must be younger
// than MaxPlanAge and not from the future, made for the cluster this Recoverer describes, and the
// members of this host it is to act on must be as ResumeDiff requires.
// Otherwise the cluster changed under the plan (a member brought back by hand, new writes, a
// newer recovery) and carrying it on could stop a healthy member or restore old data over new: it
// is refused, showing how each member was and is, and the operator makes a new plan. Members of
// other hosts are checked where they are, by their own recover apply.
func (r *Recoverer) CheckResume(ctx context.Context, p Plan, only []string) error {
	maxAge := r.MaxPlanAge
	if maxAge == 0 {
		maxAge = DefaultMaxPlanAge
	}
	if diffs := cluster.DescriptionDiff(p.Cluster, r.Cluster); len(diffs) > 0 {
		return fmt.Errorf("%w: the unfinished recovery %s was planned for another description of the cluster (%s): run recover with the description it was made for, or --new-plan to set it aside and plan for this one",
			ErrPlanMismatch, p.ID, strings.Join(diffs, "; "))
	}
	if ahead := p.Created.Sub(r.now()); ahead > planClockSlack {
		return fmt.Errorf("%w: the recovery plan %s was made %s from now (%s): this host's clock moved back since (check it: timedatectl, chronyc tracking); make a new plan once it is right",
			ErrPlanMismatch, p.ID, ahead.Round(time.Minute), p.Created.Format(time.RFC3339))
	}
	if age := r.now().Sub(p.Created); age > maxAge {
		return fmt.Errorf("%w: the recovery plan %s was made %s ago (%s), more than %s (--max-plan-age): the cluster has most likely changed since; make a new plan (recover --new-plan, or recover plan)",
			ErrPlanMismatch, p.ID, age.Round(time.Minute), p.Created.Format(time.RFC3339), maxAge)
	}
	touched := r.touched(p.ID)
	restored := map[string]bool{}
	var mu sync.Mutex
	var now []cluster.Assessment
	var wg sync.WaitGroup
	for _, m := range p.Cluster.Members {
		if !r.local(m) || (len(only) > 0 && !containsString(only, m.Name)) {
			continue
		}
		if marker, _ := readMarker(m.DataDir); marker == p.ID {
			restored[m.Name] = true
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
	sort.Slice(now, func(i, j int) bool { return now[i].Name < now[j].Name })
	if diffs := ResumeDiff(p, now, touched, restored); len(diffs) > 0 {
		return fmt.Errorf("%w: the cluster changed since the recovery plan %s was made (%s), so it is not carried on: %s; make a new plan (recover --new-plan, or recover plan)",
			ErrPlanMismatch, p.ID, p.Created.Format(time.RFC3339), strings.Join(diffs, "; "))
	}
	return nil
}
