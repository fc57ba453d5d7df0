package datadir

import (
	"encoding/binary"

	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.etcd.io/raft/v3/raftpb"
)

// The WAL holds a gigabyte or more of records, each of which etcd's generated code decodes by
// copying its data (walpb.Record.Data, then raftpb.Entry.Data), only for this package to look
// at a few integers. The readers here take those integers straight from the bytes, and the
// record's data as a slice of the segment, without a copy. They accept only what the generated
// code decodes to the same values: plain fields of the expected wire types, in any order, each
// one possibly repeated (the last one wins, as in the generated code). Anything else (an
// unknown field, a wrong wire type, a varint too long, a length past the end) makes them
// report !ok, and the caller falls back to the generated code, which is the reference: its
// error, or its result, is what etcd sees.

const (
	wireVarint = 0
	wireBytes  = 2
)

// protoField is one field of a protobuf message: its number, and its value as an integer
// (varint fields) or as a slice of the message (length-delimited fields).
type protoField struct {
	num   uint64
	wire  uint64
	value uint64
	bytes []byte
}

// nextField reads the field at the start of b; it returns the field, the rest of b, and
// whether the field is a plain varint or length-delimited field that reads to its end.
func nextField(b []byte) (f protoField, rest []byte, ok bool) {
	tag, n := binary.Uvarint(b)
	if n <= 0 {
		return f, nil, false
	}
	b = b[n:]
	f.num, f.wire = tag>>3, tag&7
	if f.num == 0 {
		return f, nil, false
	}
	switch f.wire {
	case wireVarint:
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return f, nil, false
		}
		f.value = v
		return f, b[n:], true
	case wireBytes:
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return f, nil, false
		}
		end := n + int(l)
		f.bytes = b[n:end:end]
		return f, b[end:], true
	default:
		return f, nil, false
	}
}

// walRecord is a WAL record (walpb.Record) whose Data is a slice of the segment it was read
// from: it must be copied to be kept past the segment's release.
type walRecord struct {
	Type int64
	Crc  uint32
	Data []byte
}

// decodeRecordFast decodes a walpb.Record without copying its data.
func decodeRecordFast(b []byte) (rec walRecord, ok bool) {
	for len(b) > 0 {
		var f protoField
		if f, b, ok = nextField(b); !ok {
			return rec, false
		}
		switch {
		case f.num == 1 && f.wire == wireVarint:
			rec.Type = int64(f.value)
		case f.num == 2 && f.wire == wireVarint:
			rec.Crc = uint32(f.value)
		case f.num == 3 && f.wire == wireBytes:
			rec.Data = f.bytes
		default:
			return rec, false
		}
	}
	if rec.Data == nil {
		rec.Data = []byte{}
	}
	return rec, true
}

// decodeEntryIndexFast reads the term and index of a raftpb.Entry, checking that the rest of
// it (its type and data) is well-formed.
func decodeEntryIndexFast(b []byte) (term, index uint64, ok bool) {
	for len(b) > 0 {
		var f protoField
		if f, b, ok = nextField(b); !ok {
			return 0, 0, false
		}
		switch {
		case f.num == 1 && f.wire == wireVarint:
			// The entry's type: an int32 enum, any value decodes.
		case f.num == 2 && f.wire == wireVarint:
			term = f.value
		case f.num == 3 && f.wire == wireVarint:
			index = f.value
		case f.num == 4 && f.wire == wireBytes:
		default:
			return 0, 0, false
		}
	}
	return term, index, true
}

// decodeHardStateCommitFast reads the commit index of a raftpb.HardState.
func decodeHardStateCommitFast(b []byte) (commit uint64, ok bool) {
	for len(b) > 0 {
		var f protoField
		if f, b, ok = nextField(b); !ok {
			return 0, false
		}
		switch {
		case f.num == 1 && f.wire == wireVarint, f.num == 2 && f.wire == wireVarint:
			// Term and vote.
		case f.num == 3 && f.wire == wireVarint:
			commit = f.value
		default:
			return 0, false
		}
	}
	return commit, true
}

// decodeRecord decodes a walpb.Record as etcd's decoder does; the record's data is a slice of
// b when it can be.
func decodeRecord(b []byte) (walRecord, error) {
	if rec, ok := decodeRecordFast(b); ok {
		return rec, nil
	}
	var rec walpb.Record
	if err := rec.Unmarshal(b); err != nil {
		return walRecord{}, err
	}
	return walRecord{Type: rec.Type, Crc: rec.Crc, Data: rec.Data}, nil
}

// decodeEntryIndex reads the term and index of a raftpb.Entry as etcd's decoder does.
func decodeEntryIndex(b []byte) (term, index uint64, err error) {
	if term, index, ok := decodeEntryIndexFast(b); ok {
		return term, index, nil
	}
	var e raftpb.Entry
	if err := e.Unmarshal(b); err != nil {
		return 0, 0, err
	}
	return e.Term, e.Index, nil
}

// decodeHardStateCommit reads the commit index of a raftpb.HardState as etcd's decoder does.
func decodeHardStateCommit(b []byte) (uint64, error) {
	if commit, ok := decodeHardStateCommitFast(b); ok {
		return commit, nil
	}
	var st raftpb.HardState
	if err := st.Unmarshal(b); err != nil {
		return 0, err
	}
	return st.Commit, nil
}
