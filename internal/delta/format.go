// Package delta is the data format of the delta log's segments: the plain bytes of one segment
// (before the codec compresses and encrypts them), written by a streaming Writer and read back
// by a streaming Reader, in memory that does not grow with the segment's length.
//
// A segment is a header line, then records (a revision with all its events, a lease grant, a
// lease revocation), each checked by its own CRC-32C, then a trailer with the record count and
// the SHA-256 of everything before it. docs/design.md, "Delta segments", describes the bytes;
// this package is their one implementation.
package delta

import (
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Header is the line every segment starts with; its number is the segment format's version.
const Header = "etcdguard-delta 1\n"

// MaxRecordSize bounds a record's body: 64 MiB, room for the events a single revision fans out to
// (a range delete, a lease revocation), plus 10 MiB, the largest --max-request-bytes etcd
// recommends (a txn's puts arrive in one request). A writer refuses a bigger record (ErrInvalid)
// and a reader a bigger length (ErrCorrupt), so a reader never allocates more than this for a
// record however its length bytes were damaged.
const MaxRecordSize = 64<<20 + 10<<20

// Kinds of record: the first byte of each frame. Letters, so that a hex dump reads.
const (
	kindRevision    byte = 'R'
	kindLeaseGrant  byte = 'G'
	kindLeaseRevoke byte = 'V'
	kindTrailer     byte = 'E' // the end: the trailer, which is not a record
)

// trailerMark starts the trailer: three bytes, so that one damaged kind byte cannot pass for it.
const trailerMark = "END"

// crcTable is CRC-32C (Castagnoli), as etcd's WAL uses.
var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Sentinel errors of the package, matched with errors.Is. No error of this package quotes a key
// or a value.
var (
	// ErrCorrupt: the bytes read are not a valid segment (framing, a checksum, the trailer's
	// hash or count, a record that breaks the format's rules such as a revision going down).
	ErrCorrupt = errors.New("delta segment corrupt")
	// ErrTruncated: the segment ends before its trailer, as the open segment of a killed writer
	// does. The error is a *TruncatedError, which says how much of it is complete.
	ErrTruncated = errors.New("delta segment truncated")
	// ErrInvalid: a Writer was given a record it must not write (out of order, inconsistent,
	// too big); nothing of it was written and the writer can go on.
	ErrInvalid = errors.New("invalid delta record")
	// ErrClosed: a Writer was used after Close, or after a write to its destination failed.
	ErrClosed = errors.New("delta writer closed")
)

// Record is one record of a segment: a Revision, a LeaseGrant or a LeaseRevoke.
type Record interface {
	kind() byte
}

// Revision is one revision of the cluster's keyspace: every event of it (one txn is one
// revision), in the order etcd applied them.
type Revision struct {
	// Revision is etcd's revision; records of a segment have increasing revisions.
	Revision int64
	// Received is when the writer received the revision (etcd keeps no commit time); it is
	// stored in nanoseconds since the Unix epoch, so its location and monotonic reading are not
	// kept.
	Received time.Time
	// Events are the revision's puts and deletes: for both, Kv.ModRevision is Revision (for a
	// delete, etcd's Kv is the key with the deletion's revision). PrevKv is never stored.
	Events []*mvccpb.Event
}

// LeaseGrant records that lease ID, granted for TTL seconds, existed at revision At: the writer
// learns of leases by asking etcd (a watch does not carry them), at a moment when the store was at
// revision At; Received is that moment on the writer's clock.
type LeaseGrant struct {
	ID       int64
	TTL      int64
	At       int64
	Received time.Time
	// Remaining is the lease's remaining TTL in seconds at Received (0: not known, a writer of
	// before this field): a restore to a later moment gives the lease what is left of it.
	Remaining int64
}

// LeaseRevoke records that lease ID was gone (revoked or expired) at revision At, as the writer
// learned at Received. The deletes of its keys are events of their own revision.
type LeaseRevoke struct {
	ID       int64
	At       int64
	Received time.Time
}

func (Revision) kind() byte    { return kindRevision }
func (LeaseGrant) kind() byte  { return kindLeaseGrant }
func (LeaseRevoke) kind() byte { return kindLeaseRevoke }

// order is what a segment's records must respect, kept by both the Writer and the Reader.
type order struct {
	last int64 // the newest revision record's revision; 0 before the first
}

// check returns why rec cannot follow the records seen so far, or nil; it quotes no key or
// value. It does not change o: see advance.
func (o *order) check(rec Record) error {
	switch r := rec.(type) {
	case Revision:
		if r.Revision < 1 {
			return fmt.Errorf("revision %d is not positive", r.Revision)
		}
		if r.Revision <= o.last {
			return fmt.Errorf("revision %d does not follow revision %d", r.Revision, o.last)
		}
		if len(r.Events) == 0 {
			return fmt.Errorf("revision %d has no events", r.Revision)
		}
		for i, ev := range r.Events {
			if err := checkEvent(r.Revision, ev); err != nil {
				return fmt.Errorf("revision %d, event %d: %w", r.Revision, i, err)
			}
		}
	case LeaseGrant:
		if r.ID == 0 || r.TTL < 1 || r.At < 1 || r.Remaining < 0 || r.Remaining > r.TTL {
			return fmt.Errorf("lease grant %x: ttl %d at revision %d: needs a lease, a positive ttl and revision", r.ID, r.TTL, r.At)
		}
	case LeaseRevoke:
		if r.ID == 0 || r.At < 1 {
			return fmt.Errorf("lease revoke %x at revision %d: needs a lease and a positive revision", r.ID, r.At)
		}
	default:
		return fmt.Errorf("record of type %T is not a delta record", rec)
	}
	return nil
}

// advance records rec, which check accepted.
func (o *order) advance(rec Record) {
	if r, ok := rec.(Revision); ok {
		o.last = r.Revision
	}
}

// checkEvent checks one event of revision rev.
func checkEvent(rev int64, ev *mvccpb.Event) error {
	switch {
	case ev == nil || ev.Kv == nil:
		return errors.New("no key-value")
	case ev.Type != mvccpb.PUT && ev.Type != mvccpb.DELETE:
		return fmt.Errorf("event type %d is neither put nor delete", ev.Type)
	case ev.PrevKv != nil:
		return errors.New("carries a previous key-value, which segments do not store")
	case len(ev.Kv.Key) == 0:
		return errors.New("empty key")
	case ev.Kv.ModRevision != rev:
		return fmt.Errorf("%s with mod revision %d", eventName(ev.Type), ev.Kv.ModRevision)
	case len(ev.Kv.XXX_unrecognized) != 0:
		return errors.New("key-value with fields etcd does not define")
	}
	if ev.Type == mvccpb.PUT && (ev.Kv.Version < 1 || ev.Kv.CreateRevision < 1 || ev.Kv.CreateRevision > rev) {
		return fmt.Errorf("put with version %d and create revision %d", ev.Kv.Version, ev.Kv.CreateRevision)
	}
	return nil
}

func eventName(t mvccpb.Event_EventType) string {
	if t == mvccpb.DELETE {
		return "delete"
	}
	return "put"
}

// unixNano is t in nanoseconds since the Unix epoch; the zero time is 0.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// fromUnixNano is unixNano's inverse, in UTC.
func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}
