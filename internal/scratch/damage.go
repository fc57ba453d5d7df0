package scratch

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// The damage a power cut leaves, for the demo to play the incident through and for restore drills
// to check that a damaged member is told apart. Each is a method of a scratch member, so it can
// only touch the data dir of a member this process started, and only while that member is down.

// TearWALTail cuts the member's last WAL segment inside its last record, as a power cut in the
// middle of a write does. etcd repairs this itself on start, dropping the torn record.
func (m *Member) TearWALTail() error {
	if err := m.checkDown("tear WAL"); err != nil {
		return err
	}
	last, _, end, err := LastWALSegment(m.DataDir)
	if err != nil {
		return fmt.Errorf("tear WAL: %w", err)
	}
	if end < 64 {
		return errors.New("tear WAL: the last segment holds no record")
	}
	if err := os.Truncate(last, int64(end-20)); err != nil {
		return fmt.Errorf("tear WAL: %w", err)
	}
	return nil
}

// ZeroDBPages overwrites n 4 KiB pages of the member's database with zeroes, from page first, as a
// write cut by a power loss can leave them.
func (m *Member) ZeroDBPages(first, n int) error {
	if err := m.checkDown("damage database"); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(m.DataDir, "member", "snap", "db"), os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("damage database: %w", err)
	}
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, n*4096), int64(first)*4096); err != nil {
		return fmt.Errorf("damage database: %w", err)
	}
	return f.Sync()
}

func (m *Member) checkDown(doing string) error {
	if m.Running() {
		return fmt.Errorf("%s of %s: the member is running; kill or stop it first", doing, m.Name)
	}
	return nil
}

// LastWALSegment returns the last WAL segment of a data dir, its bytes, and where its written
// data ends (segments are preallocated with zeroes).
func LastWALSegment(dataDir string) (path string, data []byte, end int, err error) {
	segs, err := WALSegments(dataDir)
	if err != nil {
		return "", nil, 0, err
	}
	path = segs[len(segs)-1]
	if data, err = os.ReadFile(path); err != nil {
		return "", nil, 0, err
	}
	end = len(data)
	for end > 0 && data[end-1] == 0 {
		end--
	}
	return path, data, end, nil
}

// WALSegments returns the WAL segments of a data dir, oldest first.
func WALSegments(dataDir string) ([]string, error) {
	segs, err := filepath.Glob(filepath.Join(dataDir, "member", "wal", "*.wal"))
	if err != nil || len(segs) == 0 {
		return nil, fmt.Errorf("%s: no WAL segment found", dataDir)
	}
	sort.Strings(segs)
	return segs, nil
}
