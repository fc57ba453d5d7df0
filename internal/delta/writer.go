package delta

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"time"
)

// Writer writes one segment to an io.Writer as records are appended. It holds no more than one
// record and a buffer of fixed size that Flush empties, so the caller makes the segment durable at
// its own cadence (Flush, then fsync the file) and memory does not grow with the segment.
// A Writer is not safe for concurrent use.
type Writer struct {
	bw    *bufio.Writer
	sum   hash.Hash // SHA-256 of every byte handed to bw
	order order
	body  []byte // the record being framed, reused
	stats Stats
	err   error // set once a write failed or Close was called: every later call returns it
}

// Stats describes what a Writer has written: what a segment's manifest records.
type Stats struct {
	// Records counts the records, revisions and lease records alike (the trailer's count).
	Records int64
	// Revisions and Events count the revision records and their events.
	Revisions, Events int64
	// First and Last are the first and last revision written; 0 before the first.
	First, Last int64
	// FirstTime and LastTime are their receipt times.
	FirstTime, LastTime time.Time
	// Size is the number of bytes written so far (handed to Flush's buffer included).
	Size int64
	// SHA256 is the SHA-256 of the whole segment, trailer included (a segment manifest's
	// sha256); set by Close.
	SHA256 [sha256.Size]byte
}

// NewWriter returns a Writer of a new segment to w. The header is written with the first Flush,
// Append or Close.
func NewWriter(w io.Writer) *Writer {
	wr := &Writer{bw: bufio.NewWriterSize(w, 64<<10), sum: sha256.New()}
	wr.write([]byte(Header))
	return wr
}

// Append writes one record: a whole Revision (every event of it), a LeaseGrant or a LeaseRevoke.
// A revision must be greater than the previous one, and every event's mod revision must be the
// revision; a record the format does not allow is refused with ErrInvalid, and nothing of it is
// written. The record may stay in the Writer's buffer until Flush.
func (w *Writer) Append(rec Record) error {
	if w.err != nil {
		return w.err
	}
	if err := w.order.check(rec); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	k := rec.kind()
	w.body = appendBody(w.body[:0], rec)
	if len(w.body) > MaxRecordSize {
		return fmt.Errorf("%w: record of %d bytes is larger than the limit of %d", ErrInvalid, len(w.body), MaxRecordSize)
	}
	// The frame: kind, body length, the head's CRC (so that a damaged length is found before
	// the length is used), the body, the body's CRC.
	var head [1 + binary.MaxVarintLen64 + 4]byte
	head[0] = k
	n := 1 + binary.PutUvarint(head[1:], uint64(len(w.body)))
	binary.BigEndian.PutUint32(head[n:], crc32.Checksum(head[:n], crcTable))
	var tail [4]byte
	binary.BigEndian.PutUint32(tail[:], crc32.Checksum(w.body, crcTable))
	w.write(head[:n+4])
	w.write(w.body)
	w.write(tail[:])
	if w.body = w.body[:0]; cap(w.body) > 1<<20 {
		w.body = nil // a big revision's buffer is not kept for the small ones after it
	}
	if w.err != nil {
		return w.err
	}
	w.order.advance(rec)
	w.stats.Records++
	if r, ok := rec.(Revision); ok {
		if w.stats.First == 0 {
			w.stats.First, w.stats.FirstTime = r.Revision, r.Received
		}
		w.stats.Last, w.stats.LastTime = r.Revision, r.Received
		w.stats.Revisions++
		w.stats.Events += int64(len(r.Events))
	}
	return nil
}

// Flush hands every byte appended so far to the underlying writer; after it, an fsync of the file
// makes them durable.
func (w *Writer) Flush() error {
	if w.err != nil {
		return w.err
	}
	if err := w.bw.Flush(); err != nil {
		w.err = fmt.Errorf("write delta segment: %w", err)
		return w.err
	}
	return nil
}

// Close writes the trailer (the record count and the SHA-256 of every byte before it) and
// flushes. It does not close the underlying writer. After Close the Writer refuses every call
// with ErrClosed, and Stats has the segment's SHA256.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	trailer := append([]byte(nil), trailerMark...)
	trailer = binary.BigEndian.AppendUint64(trailer, uint64(w.stats.Records))
	trailer = w.sum.Sum(trailer)
	w.write(trailer)
	if err := w.Flush(); err != nil {
		return err
	}
	copy(w.stats.SHA256[:], w.sum.Sum(nil))
	w.err = ErrClosed
	return nil
}

// Stats returns what the Writer has written so far.
func (w *Writer) Stats() Stats { return w.stats }

// write hands p to the buffer and the hash, unless a write failed before.
func (w *Writer) write(p []byte) {
	if w.err != nil {
		return
	}
	w.sum.Write(p)
	if _, err := w.bw.Write(p); err != nil {
		w.err = fmt.Errorf("write delta segment: %w", err)
		return
	}
	w.stats.Size += int64(len(p))
}
