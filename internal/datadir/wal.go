package datadir

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
)

// This file reads etcd's WAL the way etcd does on start, without etcd's reader: wal.Open (the
// mode etcd starts with) zeroes the end of the last segment and wal.Repair truncates it, and
// wal.OpenForRead tolerates a torn record anywhere. The rules copied here are those of
// go.etcd.io/etcd/server/v3/storage/wal (decoder.go, wal.go ReadAll and ValidSnapshotEntries,
// repair.go) and etcdserver/bootstrap.go openWALFromSnapshot, v3.5 and v3.6 alike:
//
//   - A segment is a sequence of frames: an 8-byte little-endian length (the lower 56 bits are
//     the record's size; when the top bit is set, bits 56-58 are the size of the zero padding
//     that follows the record) and a walpb.Record. A zero length ends the segment's records
//     (segments are preallocated with zeroes).
//   - Each record but a CRC record carries the CRC-32C of every record's data since the start of
//     the log; a CRC record, first in every segment, carries the CRC so far.
//   - A frame that runs past the end of its file, or, in the last segment only, a record whose
//     CRC or encoding is wrong while a 512-byte sector of it is all zeroes, is io.ErrUnexpectedEOF:
//     a torn write. etcd repairs that by truncating the last segment before the frame, then
//     starts. Anywhere else it is fatal: etcd exits ("walpb: crc mismatch", "failed to read WAL,
//     cannot be repaired").
//   - A zero length in the last segment ends the log even if data follows: etcd zeroes the rest
//     of the segment on start, without a word in its log.
//
// Where etcd stops early in the last segment, this package looks for intact records after the
// damage (a record that decodes, followed by records whose CRCs chain on from it). If there are
// some, the damage is in the middle of the log and etcd's "repair" throws them away: that is
// reported as corruption, not as a torn tail. (A power cut could leave intact records after a
// hole only if the sectors of one unsynced write reached the disk out of order; those records
// were never acknowledged. Telling that apart from damage to synced records is not possible
// offline, and calling it a torn tail would be the costlier mistake: tests show etcd then runs
// with a raft log behind its database and cannot apply writes.)

const (
	walMetadataType int64 = iota + 1
	walEntryType
	walStateType
	walCrcType
	walSnapshotType
)

const (
	walFrameSize  = 8
	walSectorSize = 512
)

var walCRCTable = crc32.MakeTable(crc32.Castagnoli)

// walFile is a WAL segment's name and what the name says.
type walFile struct {
	name       string
	seq, index uint64
}

// entryRun is a run of WAL entries with consecutive indexes, in the order they were read.
type entryRun struct {
	first, last uint64
	seg         int
	off         int64
}

// walSnapRecord is a snapshot record of the WAL, in the segment seg.
type walSnapRecord struct {
	index, term uint64
	seg         int
}

// walScan is what reading the WAL found: the state reported, and what later checks need.
type walScan struct {
	state    WALState
	problems []string
	files    []walFile
	runs     []entryRun
	snaps    []walSnapRecord
	metadata []byte
}

// frame is the outcome of reading one frame.
type frame struct {
	rec     walRecord // its Data is a slice of the segment
	haveRec bool      // rec was decoded (even if its CRC is wrong)
	end     int64     // offset just after the frame
	eof     bool      // clean end of the file
	zero    bool      // zero length: end of the segment's records
	torn    bool      // io.ErrUnexpectedEOF in etcd's terms
	why     string
	fatal   bool // any other error
}

// parseWALName parses a segment's name, <seq>-<index>.wal in hex, as etcd does.
func parseWALName(name string) (seq, index uint64, ok bool) {
	if filepath.Ext(name) != ".wal" {
		return 0, 0, false
	}
	if _, err := fmt.Sscanf(name, "%016x-%016x.wal", &seq, &index); err != nil {
		return 0, 0, false
	}
	return seq, index, true
}

// scanWAL reads the WAL segments in dir from the first to where etcd would stop reading. It
// stops, its findings incomplete, before a segment once ctx is done: Inspect then reports nothing.
func scanWAL(ctx context.Context, dir string) (s *walScan) {
	s = &walScan{state: WALState{Dir: dir}}
	defer func() {
		if p := recover(); p != nil {
			s.fail("", 0, fmt.Sprintf("reading the WAL panicked: %v", p))
		}
	}()
	entries, err := os.ReadDir(dir)
	if err != nil {
		if os.IsNotExist(err) {
			s.state.Err = fmt.Sprintf("%s: no WAL folder", dir)
		} else {
			s.state.Err = fmt.Sprintf("%s: cannot list: %v", dir, err)
		}
		return s
	}
	for _, e := range entries {
		if seq, index, ok := parseWALName(e.Name()); ok {
			s.files = append(s.files, walFile{name: e.Name(), seq: seq, index: index})
		}
	}
	sort.Slice(s.files, func(i, j int) bool { return s.files[i].name < s.files[j].name })
	for _, f := range s.files {
		s.state.Segments = append(s.state.Segments, f.name)
	}
	if len(s.files) == 0 {
		s.state.Err = fmt.Sprintf("%s: no WAL segments", dir)
		return s
	}
	s.read(ctx)
	if s.state.Err == "" && !s.state.Corrupt {
		s.state.OK = true
	}
	return s
}

// read decodes every segment in order, as etcd's ValidSnapshotEntries and ReadAll do.
func (s *walScan) read(ctx context.Context) {
	var crc uint32
	for i, f := range s.files {
		if ctx.Err() != nil {
			return
		}
		last := i == len(s.files)-1
		path := filepath.Join(s.state.Dir, f.name)
		data, release, err := readSegment(path)
		if err != nil {
			s.fail(f.name, 0, fmt.Sprintf("cannot read: %v", err))
			return
		}
		// Everything kept past this segment (metadata) is copied out of data.
		defer release()
		var off int64
		for {
			fr := readFrame(data, off, last, crc)
			switch {
			case fr.eof:
			case fr.zero && last:
				if n := nonZeroExtent(data[off:]); n > 0 {
					// etcd stops at the zero length and zeroes the rest of the segment.
					s.tornTail(f.name, data, off, fmt.Sprintf("a zero record length followed by %d bytes of data, which etcd zeroes", n))
					return
				}
			case fr.zero:
				// Were records skipped here, the next segment's CRC record would not match.
				if n := nonZeroExtent(data[off:]); n > 0 {
					s.problems = append(s.problems, fmt.Sprintf("%s: %d bytes of data after the end of the records, at offset %d: "+
						"etcd ignores them", path, n, off))
				}
			case fr.torn && !last:
				s.fail(f.name, off, fmt.Sprintf("%s, in a segment that is not the last: etcd cannot repair this", fr.why))
				return
			case fr.torn:
				s.tornTail(f.name, data, off, fr.why)
				return
			case fr.fatal:
				s.fail(f.name, off, fr.why)
				return
			}
			if fr.eof || fr.zero {
				break
			}
			if fr.rec.Type != walCrcType {
				crc = fr.rec.Crc
			}
			if why := s.record(&fr.rec, i, off, &crc); why != "" {
				s.fail(f.name, off, why)
				return
			}
			off = fr.end
		}
	}
}

// readSegment maps a WAL segment read-only (segments are 64 MiB, mostly preallocated zeroes:
// reading them into memory would allocate and clear that much for every segment), falling
// back to reading it. release unmaps it.
func readSegment(path string) (data []byte, release func(), err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if st.Size() == 0 {
		return nil, func() {}, nil
	}
	if m, release, err := mapFile(f, st.Size(), false); err == nil {
		return m, release, nil
	}
	data, err = os.ReadFile(path)
	return data, func() {}, err
}

// record applies one record, as ReadAll and ValidSnapshotEntries do; it returns why etcd would
// fail on it, or "".
func (s *walScan) record(rec *walRecord, seg int, off int64, crc *uint32) string {
	switch rec.Type {
	case walEntryType:
		term, index, err := decodeEntryIndex(rec.Data)
		if err != nil {
			return fmt.Sprintf("entry record does not decode (etcd panics on it): %v", err)
		}
		if n := len(s.runs); n > 0 && s.runs[n-1].last+1 == index {
			s.runs[n-1].last = index
		} else {
			s.runs = append(s.runs, entryRun{first: index, last: index, seg: seg, off: off})
		}
		s.state.LastIndex, s.state.LastTerm = index, term
	case walStateType:
		commit, err := decodeHardStateCommit(rec.Data)
		if err != nil {
			return fmt.Sprintf("HardState record does not decode (etcd panics on it): %v", err)
		}
		s.state.Commit = commit
	case walMetadataType:
		if s.metadata != nil && !bytes.Equal(s.metadata, rec.Data) {
			return "metadata record differs from the first one (etcd fails with \"wal: conflicting metadata found\")"
		}
		if s.metadata == nil {
			var md etcdserverpb.Metadata
			if err := md.Unmarshal(rec.Data); err != nil {
				return fmt.Sprintf("metadata record does not decode (etcd panics on it): %v", err)
			}
			s.state.MemberID, s.state.ClusterID = md.NodeID, md.ClusterID
		}
		s.metadata = append([]byte(nil), rec.Data...)
	case walCrcType:
		if *crc != 0 && rec.Crc != *crc {
			return fmt.Sprintf("CRC record holds %08x where the log so far sums to %08x (etcd fails with \"walpb: crc mismatch\")", rec.Crc, *crc)
		}
		*crc = rec.Crc
	case walSnapshotType:
		var sn walpb.Snapshot
		if err := sn.Unmarshal(rec.Data); err != nil {
			return fmt.Sprintf("snapshot record does not decode (etcd panics on it): %v", err)
		}
		s.snaps = append(s.snaps, walSnapRecord{index: sn.Index, term: sn.Term, seg: seg})
	default:
		return fmt.Sprintf("record of unknown type %d (etcd fails with \"unexpected block type\")", rec.Type)
	}
	return ""
}

// readFrame reads the frame at off, following etcd's decoder; crc is the log's CRC so far.
func readFrame(data []byte, off int64, last bool, crc uint32) frame {
	fr := decodeFrame(data, off, last)
	if !fr.haveRec || fr.rec.Type == walCrcType {
		return fr
	}
	sum := crc32.Update(crc, walCRCTable, fr.rec.Data)
	if fr.rec.Crc != sum {
		if last && isTornEntry(off, data[off+walFrameSize:fr.end]) {
			fr.torn, fr.why = true, "a record whose CRC does not match, with a zeroed 512-byte sector"
			return fr
		}
		fr.fatal, fr.why = true, fmt.Sprintf("CRC mismatch: the record says %08x, its data sums to %08x (etcd fails with \"walpb: crc mismatch\")", fr.rec.Crc, sum)
	}
	return fr
}

// decodeFrame reads the frame at off and decodes its record, without checking its CRC.
func decodeFrame(data []byte, off int64, last bool) (fr frame) {
	size := int64(len(data))
	switch {
	case off == size:
		fr.eof = true
		return fr
	case off+walFrameSize > size:
		fr.torn, fr.why = true, fmt.Sprintf("the file ends inside a record's length field (%d of 8 bytes)", size-off)
		return fr
	}
	length := int64(binary.LittleEndian.Uint64(data[off:]))
	if length == 0 {
		fr.zero = true
		return fr
	}
	recBytes, padBytes := decodeFrameSize(length)
	// etcd: "max entry size limit exceeded" (measured from the frame's start, as etcd does).
	if recBytes > size-off-padBytes || off+walFrameSize+recBytes+padBytes > size {
		fr.torn, fr.why = true, fmt.Sprintf("a record of %d bytes runs past the end of the file (%d bytes)", recBytes+padBytes, size)
		return fr
	}
	payload := data[off+walFrameSize : off+walFrameSize+recBytes+padBytes]
	fr.end = off + walFrameSize + recBytes + padBytes
	rec, err := decodeRecord(payload[:recBytes])
	if err != nil {
		if last && isTornEntry(off, payload) {
			fr.torn, fr.why = true, "a record that does not decode, with a zeroed 512-byte sector"
			return fr
		}
		fr.fatal, fr.why = true, fmt.Sprintf("record does not decode: %v", err)
		return fr
	}
	fr.rec, fr.haveRec = rec, true
	return fr
}

// decodeFrameSize splits a frame's length field into the record's size and its padding.
func decodeFrameSize(lenField int64) (recBytes, padBytes int64) {
	recBytes = int64(uint64(lenField) & ^(uint64(0xff) << 56))
	if lenField < 0 {
		padBytes = int64((uint64(lenField) >> 56) & 0x7)
	}
	return recBytes, padBytes
}

// isTornEntry reports whether a record (its bytes after the length field) has a 512-byte sector
// that is all zeroes, which etcd takes for a write torn by a power cut.
func isTornEntry(frameOff int64, payload []byte) bool {
	fileOff := frameOff + walFrameSize
	for cur := 0; cur < len(payload); {
		n := int(walSectorSize - fileOff%walSectorSize)
		n = min(n, len(payload)-cur)
		if allZero(payload[cur : cur+n]) {
			return true
		}
		fileOff += int64(n)
		cur += n
	}
	return false
}

func allZero(b []byte) bool {
	for _, v := range b {
		if v != 0 {
			return false
		}
	}
	return true
}

// nonZeroExtent returns how many bytes of b there are up to its last non-zero byte.
func nonZeroExtent(b []byte) int64 {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] != 0 {
			return int64(i + 1)
		}
	}
	return 0
}

// tornTail records where etcd stops reading the last segment, at off, before the end of its
// data: a torn write that etcd cuts off. If intact records follow, etcd would drop them too:
// that is damage in the middle of the log, not a torn tail.
func (s *walScan) tornTail(name string, data []byte, off int64, why string) {
	path := filepath.Join(s.state.Dir, name)
	extent := nonZeroExtent(data[off:])
	if dropped, at := intactRecordsAfter(data, off+walFrameSize, off+extent); dropped > 0 {
		s.state.DroppedRecords = dropped
		s.fail(name, off, fmt.Sprintf("%s; %d intact records follow from offset %d, which etcd would drop with it on start",
			why, dropped, at))
		return
	}
	s.state.TornTail = true
	s.state.TornTailOffset = off
	s.state.TornTailBytes = extent
	s.problems = append(s.problems, fmt.Sprintf("%s: torn tail at offset %d (%s): etcd drops %d bytes and starts",
		path, off, why, extent))
}

// intactRecordsAfter looks for intact records in data[from:end], where etcd stopped reading: a
// record that decodes followed by at least one whose CRC chains on from it (the CRC chain
// cannot be checked across the damage). It returns how many records chain on from there, and
// where the first starts; frames start at multiples of 8.
func intactRecordsAfter(data []byte, from, end int64) (int, int64) {
	from = (from + 7) &^ 7
	for start := from; start+walFrameSize <= end; start += 8 {
		anchor := decodeFrame(data, start, false)
		if !anchor.haveRec || anchor.rec.Type < walMetadataType || anchor.rec.Type > walSnapshotType {
			continue
		}
		crc, n, next := anchor.rec.Crc, 1, anchor.end
		for {
			fr := readFrame(data, next, false, crc)
			if !fr.haveRec || fr.fatal || fr.torn {
				break
			}
			if fr.rec.Type == walCrcType && fr.rec.Crc != crc {
				break
			}
			crc, n, next = fr.rec.Crc, n+1, fr.end
		}
		if n > 1 {
			return n, start
		}
	}
	return 0, 0
}

// fail records damage etcd does not start on.
func (s *walScan) fail(name string, off int64, why string) {
	s.state.OK = false
	s.state.Corrupt = true
	s.state.CorruptFile = name
	s.state.CorruptOffset = off
	where := s.state.Dir
	if name != "" {
		where = fmt.Sprintf("%s at offset %d", filepath.Join(s.state.Dir, name), off)
	}
	s.state.Err = fmt.Sprintf("%s: %s", where, why)
	s.problems = append(s.problems, s.state.Err)
}

// checkFrom applies the checks etcd makes when it reads the WAL from the snapshot it starts
// from (index, term), and updates state.
func (s *walScan) checkFrom(state *WALState, index, term uint64) {
	if !state.OK || len(s.files) == 0 {
		return
	}
	defer func() { *state = s.state }()
	nameIndex := -1
	for i := len(s.files) - 1; i >= 0; i-- {
		if index >= s.files[i].index {
			nameIndex = i
			break
		}
	}
	if nameIndex < 0 {
		s.fail(s.files[0].name, 0, fmt.Sprintf("no segment holds snapshot index %d, the oldest starts at index %d "+
			"(etcd fails with \"wal: file not found which matches the snapshot index\")", index, s.files[0].index))
		return
	}
	for i := nameIndex + 1; i < len(s.files); i++ {
		if s.files[i].seq != s.files[i-1].seq+1 {
			s.fail(s.files[i].name, 0, fmt.Sprintf("segment numbers jump from %d to %d: a segment is missing "+
				"(etcd fails with \"file sequence numbers do not increase continuously\")", s.files[i-1].seq, s.files[i].seq))
			return
		}
	}
	match := false
	for _, sn := range s.snaps {
		if sn.seg < nameIndex || sn.index != index {
			continue
		}
		if sn.term != term {
			s.fail(s.files[sn.seg].name, 0, fmt.Sprintf("the snapshot record of index %d has term %d, the snapshot term %d "+
				"(etcd fails with \"wal: snapshot mismatch\")", index, sn.term, term))
			return
		}
		match = true
		break
	}
	if !match {
		s.fail(s.files[nameIndex].name, 0, fmt.Sprintf("no snapshot record of index %d in the WAL (etcd fails with \"wal: snapshot not found\")", index))
		return
	}
	cur := index
	for _, r := range s.runs {
		if r.seg < nameIndex || r.last <= index {
			continue
		}
		first := max(r.first, index+1)
		if first > cur+1 {
			s.fail(s.files[r.seg].name, r.off, fmt.Sprintf("entry %d follows entry %d: entries are missing "+
				"(etcd fails with \"wal: slice bounds out of range\")", first, cur))
			return
		}
		cur = r.last
	}
}
