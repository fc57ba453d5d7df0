package restore

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/etcdguard/etcdguard/internal/atomicfile"
	"github.com/etcdguard/etcdguard/internal/repository"
)

// Marker files record, beside a data dir, which plan restored it, so that a second run of the
// same plan does not restore (and quarantine) it again.
func markerPath(dataDir string) string {
	return filepath.Join(filepath.Dir(dataDir), "."+filepath.Base(dataDir)+".etcdguard-recovery")
}

// writeMarker records that the plan restored dataDir from the folder staging, which is about to
// be renamed into place: the marker holds the plan id and the folder's inode number, which the
// rename keeps.
func writeMarker(dataDir, planID, staging string) error {
	st, err := os.Stat(staging)
	if err != nil {
		return err
	}
	return atomicfile.Write(markerPath(dataDir), []byte(fmt.Sprintf("%s %d\n", planID, inode(st))), 0o600)
}

// readMarker returns the id of the plan that restored dataDir, or "" with an error. The marker
// counts only while the data dir is the very folder the plan built (same inode): a data dir put
// there since, by hand or by another tool, is nobody's restore of this plan.
func readMarker(dataDir string) (string, error) {
	st, err := os.Stat(dataDir)
	if err != nil {
		return "", err // a marker without its data dir means nothing
	}
	if _, err := os.Stat(filepath.Join(dataDir, "member")); err != nil {
		return "", err
	}
	b, err := os.ReadFile(markerPath(dataDir))
	if err != nil {
		return "", err
	}
	id, ino, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
	if ino != fmt.Sprint(inode(st)) {
		return "", fmt.Errorf("the marker of %s names another folder than the one there now", dataDir)
	}
	return id, nil
}

func inode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

// cleanStaging removes the half-built restores an interrupted run left beside a data dir: they
// are etcdguard's own scratch, never etcd data.
func cleanStaging(dataDir string) {
	dataDir = realDataDir(dataDir) // a restore is built beside the folder a symlink points to
	entries, _ := os.ReadDir(filepath.Dir(dataDir))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "."+filepath.Base(dataDir)+".etcdguard-restore-") {
			_ = os.RemoveAll(filepath.Join(filepath.Dir(dataDir), e.Name()))
		}
	}
}

// State files keep plans until their recovery is finished: recovery-ID.json while it runs,
// renamed recovery-ID.done.json once verified, or recovery-ID.superseded.json when the operator
// asks for a new plan instead. recovery-ID.touched lists, one per line, the members the plan has
// acted on, written before each action.
func (r *Recoverer) statePath(id string) string {
	return filepath.Join(r.StateDir, "recovery-"+id+".json")
}

func (r *Recoverer) saveState(p Plan) error {
	if r.StateDir == "" {
		return nil
	}
	if !repository.ValidID(p.ID) {
		return fmt.Errorf("%w: plan id %q is not an etcdguard id", ErrPlanMismatch, p.ID)
	}
	if err := os.MkdirAll(r.StateDir, 0o700); err != nil {
		return fmt.Errorf("create state dir %s: %w", r.StateDir, err)
	}
	if _, err := os.Stat(r.statePath(p.ID)); err == nil {
		return nil
	}
	return WritePlan(r.statePath(p.ID), p)
}

func (r *Recoverer) markDone(p Plan) {
	if r.StateDir == "" {
		return
	}
	src := filepath.Join(r.StateDir, "recovery-"+p.ID+"-source.db")
	_ = os.Remove(src) // a copy etcdguard made; the cluster now holds the data
	_ = os.Remove(src + ".verified")
	_ = os.Rename(r.statePath(p.ID), strings.TrimSuffix(r.statePath(p.ID), ".json")+".done.json")
}

// unfinishedFiles returns the plan files of recoveries neither finished nor superseded, oldest
// first.
func (r *Recoverer) unfinishedFiles() []string {
	if r.StateDir == "" {
		return nil
	}
	files, _ := filepath.Glob(filepath.Join(r.StateDir, "recovery-*.json"))
	sort.Strings(files)
	var out []string
	for _, f := range files {
		if strings.HasSuffix(f, ".done.json") || strings.HasSuffix(f, ".superseded.json") {
			continue
		}
		out = append(out, f)
	}
	return out
}

// Unfinished returns the plan of the newest recovery that was started and not finished, if any.
// A plan file that cannot be read, or whose id is not the one its name says, is an error that
// names the file; recover --new-plan sets it aside (Supersede).
func (r *Recoverer) Unfinished() (*Plan, error) {
	files := r.unfinishedFiles()
	if len(files) == 0 {
		return nil, nil
	}
	f := files[len(files)-1]
	p, err := ReadPlan(f)
	if err == nil && filepath.Base(f) != "recovery-"+p.ID+".json" {
		err = fmt.Errorf("plan %s holds plan id %s, not the one its name says", f, p.ID)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: an unfinished recovery's plan cannot be used: %w; run recover --new-plan to set it aside (it is kept, renamed .superseded.json) and assess the cluster again", ErrPlanMismatch, err)
	}
	return &p, nil
}

// Supersede sets every unfinished plan aside (renamed .superseded.json, never deleted), so that
// a new plan is made and no older one is ever resumed after it. It returns the files renamed.
func (r *Recoverer) Supersede() ([]string, error) {
	var done []string
	for _, f := range r.unfinishedFiles() {
		to := strings.TrimSuffix(f, ".json") + ".superseded.json"
		if err := os.Rename(f, to); err != nil {
			return done, fmt.Errorf("set aside the unfinished plan %s: %w", f, err)
		}
		done = append(done, to)
	}
	if len(done) > 0 {
		if err := atomicfile.SyncDir(r.StateDir); err != nil {
			return done, err
		}
	}
	return done, nil
}

func (r *Recoverer) touchedPath(id string) string {
	return filepath.Join(r.StateDir, "recovery-"+id+".touched")
}

// touch records, durably and before the action, that the plan acts on a member: a resumed run
// expects such a member to differ from what the plan recorded, and any other difference means
// somebody else changed the cluster.
func (r *Recoverer) touch(id, member string) error { return r.journal(id, member) }

// stepDone records, durably, that a step on a member finished, so that a resumed run does not
// repeat a step whose effect it would undo (a replaced member quarantined and re-added again).
func (r *Recoverer) stepDone(id, member, step string) error {
	return r.journal(id, member+"\tdone "+step)
}

// journal appends one line to the plan's progress file, recovery-ID.touched: "NAME" before a step
// acts on member NAME, "NAME<TAB>done STEP" once it has finished.
func (r *Recoverer) journal(id, line string) error {
	if r.StateDir == "" || line == "" {
		return nil
	}
	f, err := os.OpenFile(r.touchedPath(id), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("record progress in %s: %w", r.StateDir, err)
	}
	if _, err := f.WriteString(line + "\n"); err != nil {
		f.Close()
		return fmt.Errorf("record progress in %s: %w", r.StateDir, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("record progress in %s: %w", r.StateDir, err)
	}
	return f.Close()
}

// progress reads the plan's progress file: the members it has acted on, and the steps finished
// on each.
func (r *Recoverer) progress(id string) (touched map[string]bool, done map[string]map[string]bool) {
	touched, done = map[string]bool{}, map[string]map[string]bool{}
	if r.StateDir == "" {
		return touched, done
	}
	b, _ := os.ReadFile(r.touchedPath(id))
	for _, l := range strings.Split(string(b), "\n") {
		name, rest, _ := strings.Cut(strings.TrimSpace(l), "\t")
		if name == "" {
			continue
		}
		touched[name] = true
		if step, ok := strings.CutPrefix(rest, "done "); ok {
			if done[name] == nil {
				done[name] = map[string]bool{}
			}
			done[name][step] = true
		}
	}
	return touched, done
}

// touched returns the members a plan has acted on.
func (r *Recoverer) touched(id string) map[string]bool {
	t, _ := r.progress(id)
	return t
}

// WritePlan writes a plan file atomically.
func WritePlan(path string, p Plan) error {
	data, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, append(data, '\n'), 0o600)
}

// ReadPlan reads a plan file. Its id must be an etcdguard id (it names files in --state-dir) and
// its paths are cleaned.
func ReadPlan(path string) (Plan, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Plan{}, fmt.Errorf("read plan: %w", err)
	}
	var p Plan
	if err := json.Unmarshal(data, &p); err != nil {
		return Plan{}, fmt.Errorf("plan %s is not valid JSON: %w", path, err)
	}
	if p.Format != PlanFormat {
		return Plan{}, fmt.Errorf("plan %s has format %d; this etcdguard reads format %d", path, p.Format, PlanFormat)
	}
	if !repository.ValidID(p.ID) {
		return Plan{}, fmt.Errorf("plan %s has an id that is not an etcdguard id (%d characters; expected a time and 8 hex digits, such as 20261124T035532Z-1a2b3c4d)", path, len(p.ID))
	}
	if len(p.Actions) != len(p.Cluster.Members) || len(p.Assessments) != len(p.Cluster.Members) {
		return Plan{}, fmt.Errorf("plan %s is damaged: %d members, %d actions, %d assessments", path, len(p.Cluster.Members), len(p.Actions), len(p.Assessments))
	}
	p.Cluster = p.Cluster.Clean()
	if err := p.Cluster.Validate(); err != nil {
		return Plan{}, fmt.Errorf("plan %s: %w", path, err)
	}
	return p, nil
}

// ErrRecoveryRunning is returned (wrapped) when another recover or recover apply holds the state
// dir: two recoveries of one cluster at once would undo each other's steps.
var ErrRecoveryRunning = errors.New("another recovery is running")

// LockState takes the state dir's lock for this run, so that one recovery at a time uses it. The
// lock is an flock on STATE/recover.lock, which the kernel releases when the process ends,
// however it ends: a crashed run never leaves it held. The returned function releases it.
func (r *Recoverer) LockState() (func(), error) {
	if r.StateDir == "" {
		return func() {}, nil
	}
	if err := os.MkdirAll(r.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state dir %s: %w", r.StateDir, err)
	}
	path := filepath.Join(r.StateDir, "recover.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open the state dir's lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: another etcdguard recover (%s) holds %s: wait for it to finish, or give it its own --state-dir if it recovers another cluster",
				ErrRecoveryRunning, strings.TrimSpace(string(holder)), path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(fmt.Sprintf("pid %d\n", os.Getpid())), 0)
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
