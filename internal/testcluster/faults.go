package testcluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// TearWALTail cuts the last WAL segment of a data dir inside its last record, as a power cut in
// the middle of a write does. etcd repairs this itself on start, dropping the torn record.
func TearWALTail(dataDir string) error {
	segs, err := filepath.Glob(filepath.Join(dataDir, "member", "wal", "*.wal"))
	if err != nil || len(segs) == 0 {
		return fmt.Errorf("tear WAL of %s: no WAL segment found", dataDir)
	}
	sort.Strings(segs)
	last := segs[len(segs)-1]
	data, err := os.ReadFile(last)
	if err != nil {
		return fmt.Errorf("tear WAL: %w", err)
	}
	end := len(data)
	for end > 0 && data[end-1] == 0 {
		end--
	}
	if end < 64 {
		return errors.New("tear WAL: the last segment holds no record")
	}
	if err := os.Truncate(last, int64(end-20)); err != nil {
		return fmt.Errorf("tear WAL: %w", err)
	}
	return nil
}

// ZeroDBPages overwrites n 4 KiB pages of a data dir's database with zeroes, from page first, as
// a write cut by a power loss can leave them.
func ZeroDBPages(dataDir string, first, n int) error {
	f, err := os.OpenFile(filepath.Join(dataDir, "member", "snap", "db"), os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("damage database: %w", err)
	}
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, n*4096), int64(first)*4096); err != nil {
		return fmt.Errorf("damage database: %w", err)
	}
	return f.Sync()
}
