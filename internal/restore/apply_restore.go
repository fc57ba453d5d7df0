package restore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/etcdguard/etcdguard/internal/atomicfile"
	"github.com/etcdguard/etcdguard/internal/cluster"
	"github.com/etcdguard/etcdguard/internal/deltalog"
	"github.com/etcdguard/etcdguard/internal/failpoint"
	"github.com/etcdguard/etcdguard/internal/snapshot"
)

func (r *Recoverer) applyRestore(ctx context.Context, p Plan, selected func(string) bool, st *stepper, rep *Report) error {
	if p.Source == nil {
		return errors.New("a restore plan without a source")
	}
	// The checked source is kept (in the state dir) until the recovery is verified, so that a
	// resumed run does not need the source again: a member source's data dir is quarantined by
	// then.
	src, cleanup, err := r.sourcePath(p)
	if err != nil {
		return err
	}
	defer cleanup()
	const skipHash = true // the source is checked completely once, when fetched
	if err := st.do("fetch source", "", func() (string, error) {
		if note, ok, err := r.keptSource(ctx, p, src); ok || err != nil {
			return note, err
		}
		var note string
		var err error
		if p.Source.Kind == SourceMember {
			note, err = r.copyMemberDB(ctx, p, src)
		} else {
			note, err = r.fetchBackup(ctx, p, src)
		}
		if err == nil {
			failpoint.Here("recover/source-copied")
			err = atomicfile.Write(src+".verified", []byte(p.ID+"\n"), 0o600)
		}
		return note, err
	}); err != nil {
		return err
	}

	var members []cluster.Member
	for _, m := range p.Cluster.Members {
		if selected(m.Name) {
			members = append(members, m)
		}
	}
	// Members already restored for this plan (an earlier, interrupted run) are not stopped.
	if err := r.parallel(members, func(m cluster.Member) error {
		if done, _ := readMarker(m.DataDir); done == p.ID {
			return nil
		}
		return st.do("stop", m.Name, func() (string, error) { return r.stopAndWait(ctx, m) })
	}); err != nil {
		return err
	}
	var replay func() (RevisionSource, func(), error)
	if d := p.Source.Delta; d != nil {
		cp, err := r.planChain(ctx, p)
		if err != nil {
			return err
		}
		replay = cp.Source(ctx, r.Identities)
	}
	var mu sync.Mutex
	if err := r.parallel(members, func(m cluster.Member) error {
		return st.do("restore", m.Name, func() (string, error) {
			if done, _ := readMarker(m.DataDir); done == p.ID {
				return "already restored for this plan", nil
			}
			cleanStaging(m.DataDir)
			res, err := RestoreDataDir(ctx, DataDirOptions{
				Snapshot: src, Name: m.Name, InitialCluster: p.Cluster.InitialCluster(), InitialClusterToken: p.Token,
				PeerURLs: []string{m.PeerURL}, DataDir: m.DataDir, Bump: p.Bump, Quarantine: true, SkipHashCheck: skipHash, Now: r.now(),
				Marker: func(staging string) error { return writeMarker(m.DataDir, p.ID, staging) },
				Replay: replay, ReplayTo: deltaUpTo(p.Source),
			})
			if res.Quarantined != "" {
				mu.Lock()
				rep.Quarantined[m.Name] = res.Quarantined
				mu.Unlock()
			}
			if err != nil {
				return "", err
			}
			note := ""
			if res.Quarantined != "" {
				note = "old data dir moved to " + res.Quarantined
			}
			return note, nil
		})
	}); err != nil {
		return err
	}
	if err := r.parallel(members, func(m cluster.Member) error {
		return st.do("start", m.Name, func() (string, error) {
			return "", r.controller(m).Start(ctx, cluster.StartEnv{State: "new", InitialCluster: p.Cluster.InitialCluster(), Token: p.Token})
		})
	}); err != nil {
		return err
	}
	if len(members) < len(p.Cluster.Members) {
		return nil // the other members are applied elsewhere; quorum comes when they are
	}
	return st.do("wait for quorum", "", func() (string, error) { return r.waitQuorum(ctx, p.Cluster, 2*time.Minute) })
}

// planChain finds the delta chain the plan replays: the chain of its backup in the target the
// plan names, which must reach the plan's revision.
func (r *Recoverer) planChain(ctx context.Context, p Plan) (*ChainPlan, error) {
	d := p.Source.Delta
	cat, err := snapshot.Load(ctx, r.Targets)
	if cat != nil {
		defer cat.Close()
	}
	if err != nil {
		return nil, err
	}
	e, err := cat.Find(p.Source.BackupID)
	if err != nil {
		return nil, err
	}
	for _, cp := range e.Copies {
		if cp.Repo.Target.Name != d.Target {
			continue
		}
		c, err := deltalog.LoadChain(ctx, cp.Repo, cp.Manifest)
		if err != nil {
			return nil, err
		}
		if c.Reach < d.UpTo && c.Open == 0 {
			return nil, fmt.Errorf("%w: the delta log of %s in target %s reaches revision %d; the plan replays it to %d", ErrPlanMismatch, e.Manifest.ID, d.Target, c.Reach, d.UpTo)
		}
		return &ChainPlan{Chain: c, Target: d.Target, Segments: len(c.Segments), Reach: c.Reach, Open: c.Open != 0, UpTo: d.UpTo}, nil
	}
	return nil, fmt.Errorf("%w: target %s holds no copy of backup %s, whose delta log the plan replays", ErrPlanMismatch, d.Target, p.Source.BackupID)
}

// deltaUpTo is the revision a plan's replay goes to.
func deltaUpTo(s *Source) int64 {
	if s.Delta == nil {
		return 0
	}
	return s.Delta.UpTo
}

// keptSource looks at a source copy an earlier run of the plan left in the state dir. A copy
// with its .verified marker and the plan's SHA-256 is used as it is. A copy without the marker (a
// crash between the copy and the marker, or a marker removed by hand) is checked again: with the
// plan's SHA-256 and a database that passes its checks it is marked and used; otherwise it is
// etcdguard's own unverified scratch, removed so the source is fetched again. Neither case blames
// the backup's stored copies, which were never read.
func (r *Recoverer) keptSource(ctx context.Context, p Plan, src string) (string, bool, error) {
	if _, err := os.Lstat(src); err != nil {
		return "", false, nil
	}
	sum, err := fileSHA256(ctx, src)
	if err == nil && sum == p.Source.SHA256 {
		if _, err := os.Stat(src + ".verified"); err == nil {
			return "checked source kept from an earlier run of this plan", true, nil
		}
		if _, err := snapshot.ReadStatus(ctx, src); err == nil {
			if err := atomicfile.Write(src+".verified", []byte(p.ID+"\n"), 0o600); err != nil {
				return "", false, err
			}
			return "source kept from an earlier run of this plan, checked again (its SHA-256 is the plan's and its database passes bbolt's check)", true, nil
		}
	}
	if err := ctx.Err(); err != nil {
		return "", false, err
	}
	r.log().Warn("removing an unverified source copy left by an earlier run; fetching the source again", "path", src)
	if err := os.Remove(src); err != nil {
		return "", false, fmt.Errorf("remove the unverified source copy %s left by an earlier run: %w", src, err)
	}
	_ = os.Remove(src + ".verified")
	return "", false, nil
}

// sourcePath returns where the checked source snapshot is kept, and what removes it when the
// recovery no longer needs it.
func (r *Recoverer) sourcePath(p Plan) (string, func(), error) {
	if r.StateDir != "" {
		if err := os.MkdirAll(r.StateDir, 0o700); err != nil {
			return "", nil, err
		}
		return filepath.Join(r.StateDir, "recovery-"+p.ID+"-source.db"), func() {}, nil
	}
	parent := r.WorkDir
	if parent == "" {
		parent = filepath.Dir(p.Cluster.Members[0].DataDir)
	}
	dir, err := os.MkdirTemp(parent, ".etcdguard-recover-")
	if err != nil {
		return "", nil, fmt.Errorf("create a scratch folder in %s (set --work-dir): %w", parent, err)
	}
	return filepath.Join(dir, "snapshot.db"), func() { os.RemoveAll(dir) }, nil
}

// copyMemberDB copies the source member's database, read-only, and checks it is the one the plan
// was made on and that it passes bbolt's check.
func (r *Recoverer) copyMemberDB(ctx context.Context, p Plan, dst string) (string, error) {
	in, err := snapshot.OpenFile(p.Source.DBPath) // a plan file may name a device or a FIFO
	if err != nil {
		return "", fmt.Errorf("open the source database: %w", err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	if err := copyContext(ctx, io.MultiWriter(out, h), in); err != nil {
		out.Close()
		return "", fmt.Errorf("copy the source database: %w", err)
	}
	if err := out.Close(); err != nil {
		return "", err
	}
	if sum := hex.EncodeToString(h.Sum(nil)); p.Source.SHA256 != "" && sum != p.Source.SHA256 {
		return "", fmt.Errorf("%w: the database of member %s now has SHA-256 %s, the plan was made on %s: make a new plan", ErrPlanMismatch, p.Source.Member, sum, p.Source.SHA256)
	}
	status, err := snapshot.ReadStatus(ctx, dst)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("member %s's database: revision %d, %d keys", p.Source.Member, status.Revision, status.TotalKey), nil
}

// fetchBackup fetches and checks the plan's backup, and refuses one whose SHA-256 differs.
func (r *Recoverer) fetchBackup(ctx context.Context, p Plan, dst string) (string, error) {
	cat, err := snapshot.Load(ctx, r.Targets)
	if cat != nil {
		defer cat.Close()
	}
	if err != nil {
		return "", err
	}
	e, err := cat.Find(p.Source.BackupID)
	if err != nil {
		return "", err
	}
	if e.Manifest.SHA256 != p.Source.SHA256 {
		return "", fmt.Errorf("%w: backup %s has SHA-256 %s, the plan says %s", ErrPlanMismatch, e.Manifest.ID, e.Manifest.SHA256, p.Source.SHA256)
	}
	cr, _, err := snapshot.FetchBest(ctx, r.log(), e, r.Identities, dst)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("backup %s from target %s, verified", e.Manifest.ID, cr.Target), nil
}

// copyContext copies src to dst, 1 MiB at a time, checking ctx before each read.
func copyContext(ctx context.Context, dst io.Writer, src io.Reader) error {
	buf := make([]byte, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
