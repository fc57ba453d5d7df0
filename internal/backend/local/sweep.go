package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/etcdguard/etcdguard/internal/backend"
)

var _ backend.Sweeper = (*Local)(nil)

// SweepPartial removes the temporary files of saves that a crash interrupted, under the
// folders that names starting with prefix live in, and the folders that are then empty.
func (l *Local) SweepPartial(ctx context.Context, prefix string) ([]string, error) {
	if err := l.checkRoot(); err != nil {
		return nil, fmt.Errorf("sweep %q: %w", prefix, err)
	}
	start := filepath.Join(l.root, filepath.FromSlash(path.Dir(prefix+"x")))
	var removed []string
	err := filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		if d.IsDir() || !strings.Contains(d.Name(), partialMarker) {
			return nil
		}
		rel, err := filepath.Rel(l.root, p)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		if !strings.HasPrefix(name, prefix) {
			return nil
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		removed = append(removed, name)
		return nil
	})
	if err != nil {
		return removed, l.mapErr(fmt.Sprintf("sweep partial files under %q", prefix), err)
	}
	// Folders left empty (by the sweep, or by Remove, which keeps folders) are removed too,
	// deepest first; a folder that is not empty stays, whatever the reason.
	var dirs []string
	_ = filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() && p != start {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		_ = os.Remove(dirs[i]) // fails, as it should, on a folder that is not empty
	}
	return removed, nil
}
