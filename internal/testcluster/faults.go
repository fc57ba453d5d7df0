package testcluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// TearWALTail cuts the last WAL segment of a data dir inside its last record, as a power cut in
// the middle of a write does. etcd repairs this itself on start, dropping the torn record.
func TearWALTail(dataDir string) error {
	last, end, err := lastSegmentEnd(dataDir)
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

// ZeroWALTail zeroes the end of the last WAL segment of a data dir as a power cut that loses
// the last sector written leaves it: 512 bytes from the start of the sector that holds the end
// of the last record of 1 KiB or more (write a value of a few KiB last), and whatever small
// records follow. A piece of that record is then all zeroes, which etcd takes for a torn write
// and repairs on start.
func ZeroWALTail(dataDir string) error {
	last, end, err := lastSegmentEnd(dataDir)
	if err != nil {
		return fmt.Errorf("zero WAL tail: %w", err)
	}
	data, err := os.ReadFile(last)
	if err != nil {
		return fmt.Errorf("zero WAL tail: %w", err)
	}
	bigEnd := int64(-1)
	for _, f := range walFrames(data[:end]) {
		if f.recBytes >= 1024 {
			bigEnd = f.off + 8 + f.recBytes
		}
	}
	if bigEnd < 0 {
		return errors.New("zero WAL tail: the last segment holds no record of 1 KiB or more")
	}
	from := (bigEnd - 1) &^ 511
	return writeAt(last, from, make([]byte, max(512, int64(end)-from)))
}

// FlipWALRecord flips the last byte of a record's data in WAL segment seg (0 is the oldest) of
// a data dir, a record from the middle of the segment: damage etcd cannot repair when the
// segment is not the last. It returns the segment's path and the offset of the record's frame.
func FlipWALRecord(dataDir string, seg int) (path string, frameOff int64, err error) {
	segs, err := walSegments(dataDir)
	if err != nil {
		return "", 0, fmt.Errorf("flip WAL record: %w", err)
	}
	if seg >= len(segs) {
		return "", 0, fmt.Errorf("flip WAL record: %s has %d segments, not %d", dataDir, len(segs), seg+1)
	}
	path = segs[seg]
	data, err := os.ReadFile(path)
	if err != nil {
		return "", 0, fmt.Errorf("flip WAL record: %w", err)
	}
	frames := walFrames(data)
	for _, f := range frames[len(frames)/2:] {
		if f.recBytes > 64 {
			at := f.off + 8 + f.recBytes - 1
			return path, f.off, writeAt(path, at, []byte{data[at] ^ 0xff})
		}
	}
	return "", 0, fmt.Errorf("flip WAL record: no record to damage in %s", path)
}

// walFrame is one record's frame in a WAL segment.
type walFrame struct{ off, recBytes int64 }

// walFrames lists the frames of a WAL segment up to the first zero length: an 8-byte
// little-endian length (lower 56 bits: the record's size; bits 56-58 of a negative length: the
// padding), then the record.
func walFrames(data []byte) []walFrame {
	var frames []walFrame
	for off := int64(0); off+8 <= int64(len(data)); {
		l := int64(binary.LittleEndian.Uint64(data[off:]))
		if l == 0 {
			break
		}
		rec := int64(uint64(l) & ^(uint64(0xff) << 56))
		pad := int64(0)
		if l < 0 {
			pad = int64((uint64(l) >> 56) & 0x7)
		}
		if off+8+rec+pad > int64(len(data)) {
			break
		}
		frames = append(frames, walFrame{off, rec})
		off += 8 + rec + pad
	}
	return frames
}

// lastSegmentEnd returns the last WAL segment of a data dir and where its written data ends
// (segments are preallocated with zeroes).
func lastSegmentEnd(dataDir string) (path string, end int, err error) {
	segs, err := walSegments(dataDir)
	if err != nil {
		return "", 0, err
	}
	path = segs[len(segs)-1]
	data, err := os.ReadFile(path)
	if err != nil {
		return "", 0, err
	}
	end = len(data)
	for end > 0 && data[end-1] == 0 {
		end--
	}
	return path, end, nil
}

func walSegments(dataDir string) ([]string, error) {
	segs, err := filepath.Glob(filepath.Join(dataDir, "member", "wal", "*.wal"))
	if err != nil || len(segs) == 0 {
		return nil, fmt.Errorf("%s: no WAL segment found", dataDir)
	}
	sort.Strings(segs)
	return segs, nil
}

func writeAt(path string, off int64, b []byte) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		return err
	}
	return f.Sync()
}
