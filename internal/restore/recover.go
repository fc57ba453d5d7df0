package restore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"filippo.io/age"

	"github.com/etcdguard/etcdguard/internal/cluster"
	"github.com/etcdguard/etcdguard/internal/etcdx"
	"github.com/etcdguard/etcdguard/internal/repository"
)

// ErrPlanMismatch is returned (wrapped) when what apply finds differs from what the plan was
// made on: a snapshot whose SHA-256 is not the plan's, a member the plan does not know.
var ErrPlanMismatch = errors.New("does not match the plan")

// Recoverer assesses, plans and carries out the recovery of one cluster.
type Recoverer struct {
	// Etcd holds the TLS settings and timeouts used to talk to the members; its endpoints are
	// replaced by the members' client URLs.
	Etcd    etcdx.Config
	Cluster cluster.Cluster
	// Targets hold the backups; Identities open encrypted ones.
	Targets    []repository.Target
	Identities []age.Identity
	// StateDir keeps plan files and progress, so that an interrupted recovery can be finished.
	StateDir string
	// WorkDir holds the scratch copy of the source snapshot; empty means beside the data dirs.
	WorkDir string
	// NoBump restores without raising revisions.
	NoBump bool
	// Lost names members whose data the operator declares lost (checked with doctor on their
	// own hosts): they are neither read nor waited for, and a restore may replace them.
	Lost []string
	// StopControlPlane moves the Cluster's ControlPlaneManifests out of the kubelet's folder
	// before a restore and back after it is verified, so that no kube-apiserver serves or caches
	// data while etcd is replaced under it.
	StopControlPlane bool
	Logger           *slog.Logger
	Now              func() time.Time
	// Controllers overrides how members are stopped and started, by member name (the demo runs
	// its members itself); members not in it use cluster.NewController.
	Controllers map[string]cluster.Controller
	// MaxPlanAge is how old an unfinished plan may be and still be resumed (zero:
	// DefaultMaxPlanAge).
	MaxPlanAge time.Duration
	// EtcdVersion is the etcd version the members will run, when no readable database records
	// it; AllowVersionSkew restores a backup of another etcd version anyway.
	EtcdVersion      string
	AllowVersionSkew bool
	// Hostname is this host's name, compared with members' host fields; empty means the
	// operating system's.
	Hostname string
	// Point is where a restore goes: the newest durable point of the backups' delta log (the
	// zero Point), a revision or a moment (then only the backup and its log are sources), or the
	// backup alone.
	Point Point
}

func (r *Recoverer) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Recoverer) log() *slog.Logger {
	if r.Logger != nil {
		return r.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func (r *Recoverer) controller(m cluster.Member) cluster.Controller {
	if c, ok := r.Controllers[m.Name]; ok {
		return c
	}
	return cluster.NewController(m)
}

func (r *Recoverer) etcdFor(urls ...string) etcdx.Config {
	c := r.Etcd
	c.Endpoints = urls
	return c
}

// Plan assesses the cluster and decides what to do.
func (r *Recoverer) Plan(ctx context.Context) (Plan, error) {
	as, backup, history, err := r.Assess(ctx)
	if err != nil {
		return Plan{}, err
	}
	now := r.now()
	p, err := Decide(DecideInputs{Cluster: r.Cluster, Assessments: as, Backup: backup, History: history, NoBump: r.NoBump,
		PointInTime: r.Point.Revision > 0 || !r.Point.Time.IsZero(),
		EtcdVersion: r.EtcdVersion, AllowVersionSkew: r.AllowVersionSkew, Now: now, PlanID: NewPlanID(now)})
	if err != nil {
		return p, err
	}
	if p.Source != nil && p.Source.Kind == SourceMember {
		sum, err := fileSHA256(ctx, p.Source.DBPath)
		if err != nil {
			return p, fmt.Errorf("hash the source database %s: %w", p.Source.DBPath, err)
		}
		p.Source.SHA256 = sum
	}
	return p, nil
}

// PlanOrResume returns the plan a run of recover carries out: the unfinished plan of an earlier
// run when there is one and CheckResume finds its members as it recorded them (resumed), else a
// new one (Plan). With fresh, an unfinished plan is set aside first (the files it was kept as are
// returned) and a new one made. Call it holding LockState.
func (r *Recoverer) PlanOrResume(ctx context.Context, fresh bool) (p Plan, resumed bool, setAside []string, err error) {
	if fresh {
		if setAside, err = r.Supersede(); err != nil {
			return Plan{}, false, setAside, err
		}
	}
	unfinished, err := r.Unfinished()
	if err != nil {
		return Plan{}, false, setAside, err
	}
	if unfinished != nil {
		// Look again before carrying on: a plan made before the cluster changed must not stop
		// a member brought back by hand or restore old data over new.
		if err := r.CheckResume(ctx, *unfinished, nil); err != nil {
			return Plan{}, false, setAside, err
		}
		return *unfinished, true, setAside, nil
	}
	p, err = r.Plan(ctx)
	return p, false, setAside, err
}

func (r *Recoverer) parallel(ms []cluster.Member, fn func(cluster.Member) error) error {
	errs := make([]error, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Go(func() { errs[i] = fn(m) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

func fileSHA256(ctx context.Context, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		n, err := f.Read(buf)
		h.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func memberNames(c cluster.Cluster) string {
	var names []string
	for _, m := range c.Members {
		names = append(names, m.Name)
	}
	return strings.Join(names, ", ")
}

func containsString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
