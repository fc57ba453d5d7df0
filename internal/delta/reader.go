package delta

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"strings"
)

// TruncatedError is the error (matching ErrTruncated) of a segment that ends before its trailer.
// Every record before Complete was read and checked (its CRC, its order), so a caller that means to
// (the writer that continues its own open segment, a restore to the newest durable point) can use
// them; only the trailer's hash over the whole segment is missing. A sealed segment that ends early
// is corrupt, whatever this error says.
type TruncatedError struct {
	// InHeader is true when the cut is inside the header line: nothing of the segment is there.
	InHeader bool
	// Records is the number of complete records, and Last the revision of the newest complete
	// revision record (0 when there is none).
	Records int64
	Last    int64
	// Complete is the length of the complete prefix: the header and those records.
	Complete int64
}

func (e *TruncatedError) Error() string {
	if e.InHeader {
		return "delta segment truncated in its header"
	}
	return fmt.Sprintf("delta segment truncated after %d complete records (%d bytes, last revision %d)", e.Records, e.Complete, e.Last)
}

// Is makes errors.Is(err, ErrTruncated) hold.
func (e *TruncatedError) Is(target error) bool { return target == ErrTruncated }

// Reader reads one segment as a stream of records, checking each (its CRC-32C, the format's
// rules) before returning it, and the trailer's count and SHA-256 at the end. It holds one record
// at a time. A Reader is not safe for concurrent use.
type Reader struct {
	br      *bufio.Reader
	sum     hash.Hash // of every byte read before the trailer
	order   order
	off     int64 // bytes read
	records int64
	end     int64 // offset of the end of the last complete record (or of the header)
	body    bytes.Buffer
	started bool
	err     error // sticky: io.EOF after the trailer, or the first failure
}

// NewReader returns a Reader of the segment r holds.
func NewReader(r io.Reader) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, 64<<10), sum: sha256.New()}
}

// Next returns the next record: a Revision, a LeaseGrant or a LeaseRevoke. After the last one it
// returns io.EOF, once the trailer's count and hash are checked. A segment that ends early gives a
// *TruncatedError; bytes that break the format give an error matching ErrCorrupt; an error of the
// underlying reader is returned wrapped. Each error is returned again by every later call.
func (r *Reader) Next() (Record, error) {
	if r.err != nil {
		return nil, r.err
	}
	rec, err := r.next()
	if err != nil {
		r.err = err
		return nil, err
	}
	return rec, nil
}

func (r *Reader) next() (Record, error) {
	if !r.started {
		if err := r.header(); err != nil {
			return nil, err
		}
		r.started, r.end = true, r.off
	}
	start := r.off
	k, err := r.br.ReadByte()
	if err != nil {
		return nil, r.cut(err)
	}
	r.off++
	if k == kindTrailer {
		return nil, r.trailer(start)
	}
	if fields[k] == nil {
		return nil, r.corrupt(start, "unknown record kind 0x%02x", k)
	}
	head, size, err := r.uvarint([]byte{k})
	if err != nil {
		return nil, r.fail(start, err)
	}
	var check [4]byte
	if err := r.full(check[:]); err != nil {
		return nil, err
	}
	if crc32.Checksum(head, crcTable) != binary.BigEndian.Uint32(check[:]) {
		return nil, r.corrupt(start, "record head checksum mismatch")
	}
	if size > MaxRecordSize {
		return nil, r.corrupt(start, "record length %d is larger than the limit of %d", size, MaxRecordSize)
	}
	r.body.Reset()
	// The buffer grows as bytes arrive, not to the length the bytes claim.
	n, err := r.body.ReadFrom(io.LimitReader(r.br, int64(size)))
	r.off += n
	if err != nil {
		return nil, r.cut(err)
	}
	if uint64(n) < size {
		return nil, r.cut(io.EOF)
	}
	var tail [4]byte
	if err := r.full(tail[:]); err != nil {
		return nil, err
	}
	body := r.body.Bytes()
	if crc32.Checksum(body, crcTable) != binary.BigEndian.Uint32(tail[:]) {
		return nil, r.corrupt(start, "record checksum mismatch")
	}
	r.sum.Write(head)
	r.sum.Write(check[:])
	r.sum.Write(body)
	r.sum.Write(tail[:])
	rec, err := parseBody(k, body)
	if err == nil {
		err = r.order.check(rec)
	}
	if err != nil {
		return nil, r.corrupt(start, "%v", err)
	}
	r.order.advance(rec)
	r.records++
	r.end = r.off
	if r.body.Cap() > 1<<20 {
		r.body = bytes.Buffer{} // a big revision's buffer is not kept for the small ones after it
	}
	return rec, nil
}

// header reads and checks the header line.
func (r *Reader) header() error {
	buf := make([]byte, len(Header))
	n, err := io.ReadFull(r.br, buf)
	r.off += int64(n)
	r.sum.Write(buf[:n])
	switch {
	case err != nil && !isEOF(err):
		return fmt.Errorf("read delta segment: %w", err)
	case err != nil && strings.HasPrefix(Header, string(buf[:n])):
		return &TruncatedError{InHeader: true}
	case string(buf) == Header:
		return nil
	case strings.HasPrefix(string(buf[:n]), "etcdguard-delta "):
		return fmt.Errorf("%w: segment format %q is not format 1", ErrCorrupt, strings.TrimSpace(strings.ToValidUTF8(string(buf[len("etcdguard-delta "):n]), "?")))
	default:
		return fmt.Errorf("%w: not a delta segment (no header line)", ErrCorrupt)
	}
}

// trailer reads and checks the trailer, which starts at offset start, and that nothing follows it.
func (r *Reader) trailer(start int64) error {
	want := r.sum.Sum(nil)
	rest := make([]byte, len(trailerMark)-1+8+sha256.Size)
	if err := r.full(rest); err != nil {
		return err
	}
	if string(rest[:len(trailerMark)-1]) != trailerMark[1:] {
		return r.corrupt(start, "unknown record kind 0x%02x", kindTrailer)
	}
	rest = rest[len(trailerMark)-1:]
	count, got := binary.BigEndian.Uint64(rest), rest[8:]
	if count != uint64(r.records) {
		return r.corrupt(start, "trailer counts %d records, the segment has %d", count, r.records)
	}
	if !bytes.Equal(got, want) {
		return r.corrupt(start, "SHA-256 mismatch: the trailer's is %x, the segment's %x", got, want)
	}
	if _, err := r.br.ReadByte(); !isEOF(err) {
		if err != nil {
			return fmt.Errorf("read delta segment: %w", err)
		}
		return r.corrupt(start, "bytes after the trailer")
	}
	return io.EOF
}

// errOverflow is uvarint's error for more than 64 bits.
var errOverflow = errors.New("length overflows 64 bits")

// uvarint reads an unsigned varint, appending its bytes to b.
func (r *Reader) uvarint(b []byte) ([]byte, uint64, error) {
	var v uint64
	for shift := 0; ; shift += 7 {
		c, err := r.br.ReadByte()
		if err != nil {
			return b, 0, err
		}
		r.off++
		b = append(b, c)
		if shift == 63 && c > 1 {
			return b, 0, errOverflow
		}
		v |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return b, v, nil
		}
	}
}

// full reads len(b) bytes.
func (r *Reader) full(b []byte) error {
	n, err := io.ReadFull(r.br, b)
	r.off += int64(n)
	if err != nil {
		return r.cut(err)
	}
	return nil
}

// fail returns the error of uvarint's err in the frame that starts at start.
func (r *Reader) fail(start int64, err error) error {
	if errors.Is(err, errOverflow) {
		return r.corrupt(start, "%v", err)
	}
	return r.cut(err)
}

// cut returns the error of a read that failed with err in a record or the trailer: a truncated
// segment when the bytes ended, the read error otherwise.
func (r *Reader) cut(err error) error {
	if !isEOF(err) {
		return fmt.Errorf("read delta segment at offset %d: %w", r.off, err)
	}
	return &TruncatedError{Records: r.records, Last: r.order.last, Complete: r.end}
}

func (r *Reader) corrupt(at int64, format string, args ...any) error {
	return fmt.Errorf("%w: at offset %d (record %d): %s", ErrCorrupt, at, r.records+1, fmt.Sprintf(format, args...))
}

// isEOF is true for an end of the bytes, clean or not (a decompressor reports a cut stream as
// io.ErrUnexpectedEOF).
func isEOF(err error) bool { return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) }
