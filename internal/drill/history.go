package drill

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/etcdguard/etcdguard/internal/atomicfile"
)

// ErrNoDrill is returned (wrapped) by Last when the history holds no drill.
var ErrNoDrill = errors.New("no restore drill recorded")

// historyDir is where the results of drills are kept under a state dir: one JSON file per drill,
// named by the time it started (UTC, to the nanosecond), so that names sort by age.
func historyDir(stateDir string) string { return filepath.Join(stateDir, "drills") }

// historyLayout is the time part of a result's file name.
const historyLayout = "20060102T150405.000000000Z"

// Record writes res into the drill history under stateDir (0600 files in a 0700 folder, each
// written atomically) and removes the oldest results beyond the newest keep. It returns the
// file written.
func Record(stateDir string, res Result, keep int) (string, error) {
	dir := historyDir(stateDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create the drill history %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return "", err
	}
	data, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, res.Started.UTC().Format(historyLayout)+".json")
	if err := atomicfile.Write(path, append(data, '\n'), 0o600); err != nil {
		return "", fmt.Errorf("record the drill's result: %w", err)
	}
	names, err := historyNames(dir)
	if err != nil {
		return path, err
	}
	if keep <= 0 {
		keep = DefaultKeep
	}
	for len(names) > keep {
		if err := os.Remove(filepath.Join(dir, names[0])); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return path, fmt.Errorf("remove an old drill result: %w", err)
		}
		names = names[1:]
	}
	return path, nil
}

// History returns the drills recorded under stateDir, newest first. A file that cannot be read
// is skipped, and named in the error returned with the rest.
func History(stateDir string) ([]Result, error) {
	dir := historyDir(stateDir)
	names, err := historyNames(dir)
	if err != nil {
		return nil, err
	}
	var out []Result
	var errs []error
	for _, n := range slices.Backward(names) {
		r, err := readResult(filepath.Join(dir, n))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, r)
	}
	return out, errors.Join(errs...)
}

// Last returns the newest drill recorded under stateDir, passed or not, and how long ago it
// finished by now; ErrNoDrill when none is.
func Last(stateDir string, now time.Time) (Result, time.Duration, error) {
	return last(stateDir, now, func(Result) bool { return true })
}

// LastVerdict is Last over the drills that say something of the backup: passed, or failed for a
// reason other than ReasonInterrupted (an agent stopped, or a Ctrl-C, mid-drill). Monitoring
// reads it: an interrupted drill is no failure of the backup, and hides none.
func LastVerdict(stateDir string, now time.Time) (Result, time.Duration, error) {
	return last(stateDir, now, func(r Result) bool { return r.Reason != ReasonInterrupted })
}

func last(stateDir string, now time.Time, keep func(Result) bool) (Result, time.Duration, error) {
	dir := historyDir(stateDir)
	names, err := historyNames(dir)
	if err != nil {
		return Result{}, 0, err
	}
	for _, n := range slices.Backward(names) {
		r, err := readResult(filepath.Join(dir, n))
		if err != nil || !keep(r) {
			continue // a damaged file does not hide the drills before it
		}
		return r, now.Sub(r.Finished), nil
	}
	return Result{}, 0, fmt.Errorf("%w in %s", ErrNoDrill, dir)
}

// historyNames lists the result files of dir, oldest first; none when dir does not exist.
func historyNames(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the drill history %s: %w", dir, err)
	}
	var names []string
	for _, e := range entries {
		n := e.Name()
		if !e.Type().IsRegular() || strings.HasPrefix(n, ".") || !strings.HasSuffix(n, ".json") {
			continue
		}
		if _, err := time.Parse(historyLayout, strings.TrimSuffix(n, ".json")); err != nil {
			continue
		}
		names = append(names, n)
	}
	slices.Sort(names)
	return names, nil
}

func readResult(path string) (Result, error) {
	var r Result
	data, err := os.ReadFile(path)
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("drill result %s: %w", path, err)
	}
	return r, nil
}
