package testcluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/etcdguard/etcdguard/internal/scratch"
)

// ZeroWALTail zeroes the end of the last WAL segment of a data dir as a power cut that loses
// the last sector written leaves it: 512 bytes from the start of the sector that holds the end
// of the last record of 1 KiB or more (write a value of a few KiB last), and whatever small
// records follow. A piece of that record is then all zeroes, which etcd takes for a torn write
// and repairs on start.
func ZeroWALTail(dataDir string) error {
	last, data, end, err := scratch.LastWALSegment(dataDir)
	if err != nil {
		return fmt.Errorf("zero WAL tail: %w", err)
	}
	frames, err := WALFrames(data)
	if err != nil {
		return fmt.Errorf("zero WAL tail: %s: %w", last, err)
	}
	bigEnd := int64(-1)
	for _, f := range frames {
		if f.RecBytes >= 1024 {
			bigEnd = f.Off + 8 + f.RecBytes
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
	segs, err := scratch.WALSegments(dataDir)
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
	frames, err := WALFrames(data)
	if err != nil {
		return "", 0, fmt.Errorf("flip WAL record: %s: %w", path, err)
	}
	for _, f := range frames[len(frames)/2:] {
		if f.RecBytes > 64 {
			at := f.Off + 8 + f.RecBytes - 1
			return path, f.Off, writeAt(path, at, []byte{data[at] ^ 0xff})
		}
	}
	return "", 0, fmt.Errorf("flip WAL record: no record to damage in %s", path)
}

// WALFrame is one record's frame in a WAL segment, as WALFrames reads it.
type WALFrame struct {
	Off, End int64 // the frame's first byte and the byte after its padding
	RecBytes int64 // the size of the walpb.Record, after the 8-byte length
}

// WALFrames lists the frames of a WAL segment up to the first zero length, without
// etcdguard's WAL reader (tests damage WALs with it, to check that reader): each frame is an
// 8-byte little-endian length (lower 56 bits: the record's size; bits 56-58 of a negative
// length: the padding), then the record. It fails on a frame that runs past the end of data.
func WALFrames(data []byte) ([]WALFrame, error) {
	var frames []WALFrame
	for off := int64(0); off+8 <= int64(len(data)); {
		l := binary.LittleEndian.Uint64(data[off:])
		if l == 0 {
			break
		}
		rec := int64(l & (1<<56 - 1))
		pad := int64(0)
		if l&(1<<63) != 0 {
			pad = int64((l >> 56) & 7)
		}
		f := WALFrame{Off: off, End: off + 8 + rec + pad, RecBytes: rec}
		if f.End > int64(len(data)) {
			return frames, fmt.Errorf("the frame at offset %d runs past the end (%d bytes)", off, len(data))
		}
		frames = append(frames, f)
		off = f.End
	}
	return frames, nil
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
