package snapshot

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/etcdguard/etcdguard/internal/proc"
)

// Scratch folders hold plain copies of snapshots (every Secret of the cluster in clear, even
// when backups are encrypted) while they are checked. A run removes its own at the end; a run
// that is killed cannot, so each folder's name records its owner,
//
//	etcdguard-KIND-h<host>-b<boot>-n<pid namespace>-p<pid>-<random>
//
// and SweepScratch, at the start of the next run, removes the folders whose owner is known to be
// gone: same host and an earlier boot, or same host, boot and PID namespace and no such process,
// or this process's own PID on a folder this process did not make (an earlier process with the
// same PID made it: a service killed and restarted inside a container, whose PID namespace gives
// the same PID at every start). A process records the folders and partial files it makes
// (proc.Claim) from before they exist until they are removed. A folder of a live run, of another
// host or PID namespace (a shared work dir), or with a name it cannot read is left alone.

// scratchKinds are the kinds of scratch folder, by the command that makes them.
var scratchKinds = []string{"save", "verify", "status", "drill"}

// scratchOwner is this process's part of a scratch folder's name.
func scratchOwner() string {
	host, _ := os.Hostname()
	h := sha256.Sum256([]byte(host))
	here := proc.Here()
	boot := strings.ReplaceAll(here.BootID, "-", "")
	if len(boot) > 12 {
		boot = boot[:12]
	}
	ns := strings.TrimSuffix(strings.TrimPrefix(here.PIDNamespace, "pid:["), "]")
	return fmt.Sprintf("h%s-b%s-n%s-p%d", hex.EncodeToString(h[:4]), boot, ns, os.Getpid())
}

// MakeScratch creates a fresh scratch folder (mode 0700) of a kind ("save", "verify",
// "status") in dir (see ScratchDir), named after this process so that SweepScratch can tell
// whether it is still in use. remove removes the folder and all it holds, and ends this process's
// claim on it; call it once the folder is no longer needed.
func MakeScratch(dir, kind string) (path string, remove func(), err error) {
	path, release, err := makeOwned(ScratchDir(dir), "etcdguard-"+kind+"-", func(p string) error { return os.Mkdir(p, 0o700) })
	if err != nil {
		return "", nil, err
	}
	return path, func() { _ = os.RemoveAll(path); release() }, nil
}

// createPartial creates the partial file a copy of a snapshot for dst is written to (mode 0600,
// beside dst, named after this process so that SweepPartials can tell whether it is in use).
// release ends this process's claim on it; call it once the file is removed.
func createPartial(dst string) (f *os.File, release func(), err error) {
	_, release, err = makeOwned(filepath.Dir(dst), partialPrefix(dst), func(p string) error {
		var err error
		f, err = os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		return err
	})
	return f, release, err
}

// makeOwned creates, with mk, a fresh file or folder in dir named prefix, this process's owner
// part and a random part. It is claimed (proc.Claim) before it exists, so that no sweep of this
// process, running meanwhile, takes it for an earlier process's with the same PID.
func makeOwned(dir, prefix string, mk func(path string) error) (path string, release func(), err error) {
	owner := scratchOwner()
	for range 100 {
		var b [5]byte
		_, _ = rand.Read(b[:])
		name := prefix + owner + "-" + hex.EncodeToString(b[:])
		release := proc.Claim(ownedKey(name))
		p := filepath.Join(dir, name)
		err := mk(p)
		if err == nil {
			return p, release, nil
		}
		release()
		if !errors.Is(err, fs.ErrExist) {
			return "", nil, err
		}
	}
	return "", nil, fmt.Errorf("create a fresh name %s* in %s: every name tried exists", prefix, dir)
}

// ownedKey is the key of this process's claim on a scratch folder or partial file of this name
// (proc.Claim). Names hold a random part: a name tells this process's own from an earlier
// process's, however dir is spelt.
func ownedKey(name string) string { return "snapshot scratch " + name }

// SweepScratch removes the scratch folders in dir (see ScratchDir) of runs that are gone, and
// returns them. Folders it cannot judge are logged once and left.
func SweepScratch(dir string, lg *slog.Logger) []string {
	dir = ScratchDir(dir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		lg.Warn("could not look for scratch folders of interrupted runs", "dir", dir, "error", err)
		return nil
	}
	mine := parseOwner(scratchOwner())
	var removed []string
	for _, e := range entries {
		name := e.Name()
		rest, ok := scratchRest(name)
		if !ok || !e.IsDir() {
			continue
		}
		owner := parseOwner(rest)
		p := filepath.Join(dir, name)
		if owner == nil {
			lg.Warn("scratch folder of an older etcdguard left as it is: it may hold a plain snapshot; remove it if no etcdguard run is using it", "folder", p)
			continue
		}
		if !owner.gone(mine, ownedKey(name)) {
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			lg.Warn("could not remove the scratch folder of an interrupted run", "folder", p, "error", err)
			continue
		}
		removed = append(removed, p)
	}
	if len(removed) > 0 {
		lg.Info("removed scratch folders of interrupted runs (plain snapshots)", "count", len(removed), "dir", dir)
	}
	return removed
}

// scratchRest returns what follows "etcdguard-KIND-" in a scratch folder's name.
func scratchRest(name string) (string, bool) {
	for _, k := range scratchKinds {
		if rest, ok := strings.CutPrefix(name, "etcdguard-"+k+"-"); ok {
			return rest, true
		}
	}
	return "", false
}

type owner struct {
	host, boot, ns string
	pid            int
}

// gone reports whether the run that owns a scratch file is known to have ended: it ran on this
// host in an earlier boot, or in this boot and PID namespace and its process is gone (for this
// process's own PID: this process does not hold key, the file's claim, so an earlier process with
// the same PID made it). Another host's or PID namespace's run cannot be checked, so it is never
// taken for gone.
func (o *owner) gone(mine *owner, key string) bool {
	switch {
	case o.host != mine.host:
		return false
	case o.boot != mine.boot:
		return true
	case o.ns != mine.ns:
		return false
	}
	return !proc.Running(o.pid, key)
}

// partialPrefix is how a partial file being written for dst is named: hidden, beside dst, after
// dst's name and its owner, so that SweepPartials can tell a dead run's from a live one's.
func partialPrefix(dst string) string {
	return "." + filepath.Base(dst) + ".partial-"
}

// SweepPartials removes the partial files that runs which are gone left beside dst (a snapshot
// get killed half-way leaves a decrypted, plain snapshot there), and returns them.
func SweepPartials(dst string, lg *slog.Logger) []string {
	dir := filepath.Dir(dst)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	mine := parseOwner(scratchOwner())
	var removed []string
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), partialPrefix(dst))
		if !ok || !e.Type().IsRegular() {
			continue
		}
		if o := parseOwner(rest); o == nil || !o.gone(mine, ownedKey(e.Name())) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if err := os.Remove(p); err != nil {
			lg.Warn("could not remove the partial file of an interrupted run", "file", p, "error", err)
			continue
		}
		removed = append(removed, p)
	}
	if len(removed) > 0 {
		lg.Info("removed partial files of interrupted runs (plain snapshots)", "count", len(removed), "dir", dir)
	}
	return removed
}

// parseOwner reads "h<host>-b<boot>-n<ns>-p<pid>[-<random>]", or returns nil.
func parseOwner(s string) *owner {
	parts := strings.SplitN(s, "-", 5)
	if len(parts) < 4 {
		return nil
	}
	var o owner
	for i, prefix := range []string{"h", "b", "n", "p"} {
		v, ok := strings.CutPrefix(parts[i], prefix)
		if !ok || v == "" {
			return nil
		}
		switch prefix {
		case "h":
			o.host = v
		case "b":
			o.boot = v
		case "n":
			o.ns = v
		case "p":
			pid, err := strconv.Atoi(v)
			if err != nil || pid <= 0 {
				return nil
			}
			o.pid = pid
		}
	}
	return &o
}
