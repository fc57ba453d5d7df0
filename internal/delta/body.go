package delta

import (
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/encoding/protowire"
)

// A record's body is a protobuf message (proto3 wire format), so that a later writer of format 1
// can add a field that older readers skip. Field numbers, per kind:
//
//	revision ('R'):      1 revision (varint), 2 received (varint, Unix ns), 3 event (bytes, repeated:
//	                     an mvccpb.Event with type and kv, never prev_kv)
//	lease grant ('G'):   1 id (varint), 2 ttl in seconds (varint), 3 at revision (varint), 4 received,
//	                     5 remaining ttl in seconds at received (varint)
//	lease revoke ('V'):  1 id (varint), 3 at revision (varint), 4 received
//
// Every field is written, zeros included, in this order; a reader takes them in any order, refuses
// a field given twice (but an event) or with another wire type, and skips field numbers it does not
// know.
const (
	revRevision, revReceived, revEvent                        protowire.Number = 1, 2, 3
	leaseID, leaseTTL, leaseAt, leaseReceived, leaseRemaining protowire.Number = 1, 2, 3, 4, 5
)

// fields are the field numbers each kind defines: the varint ones, and for a revision its
// repeated event.
var fields = map[byte]map[protowire.Number]bool{
	kindRevision:    {revRevision: true, revReceived: true, revEvent: true},
	kindLeaseGrant:  {leaseID: true, leaseTTL: true, leaseAt: true, leaseReceived: true, leaseRemaining: true},
	kindLeaseRevoke: {leaseID: true, leaseAt: true, leaseReceived: true},
}

// appendBody appends rec's body to b.
func appendBody(b []byte, rec Record) []byte {
	switch r := rec.(type) {
	case Revision:
		b = appendVarint(b, revRevision, r.Revision)
		b = appendVarint(b, revReceived, unixNano(r.Received))
		for _, ev := range r.Events {
			e := mvccpb.Event{Type: ev.Type, Kv: ev.Kv}
			n := e.Size()
			b = protowire.AppendTag(b, revEvent, protowire.BytesType)
			b = protowire.AppendVarint(b, uint64(n))
			start := len(b)
			b = append(b, make([]byte, n)...)
			// MarshalToSizedBuffer fails only on a buffer of the wrong size, which Size rules out.
			if _, err := e.MarshalToSizedBuffer(b[start:]); err != nil {
				panic(fmt.Sprintf("delta: marshal an event into its own size: %v", err))
			}
		}
	case LeaseGrant:
		b = appendVarint(b, leaseID, r.ID)
		b = appendVarint(b, leaseTTL, r.TTL)
		b = appendVarint(b, leaseAt, r.At)
		b = appendVarint(b, leaseReceived, unixNano(r.Received))
		b = appendVarint(b, leaseRemaining, r.Remaining)
	case LeaseRevoke:
		b = appendVarint(b, leaseID, r.ID)
		b = appendVarint(b, leaseAt, r.At)
		b = appendVarint(b, leaseReceived, unixNano(r.Received))
	}
	return b
}

func appendVarint(b []byte, n protowire.Number, v int64) []byte {
	b = protowire.AppendTag(b, n, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(v))
}

// parseBody decodes the body of a record of kind k. Its errors are the reason alone, for the
// Reader to wrap.
func parseBody(k byte, b []byte) (Record, error) {
	var ints [6]int64 // by field number, for the varint fields
	var seen [6]bool
	var events []*mvccpb.Event
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, fmt.Errorf("field tag: %w", protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case !fields[k][num]:
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return nil, fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
			}
		case k == kindRevision && num == revEvent:
			if typ != protowire.BytesType {
				return nil, fmt.Errorf("field %d has wire type %d", num, typ)
			}
			var v []byte
			v, n = protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, fmt.Errorf("event %d: %w", len(events), protowire.ParseError(n))
			}
			ev := &mvccpb.Event{}
			if err := ev.Unmarshal(v); err != nil {
				return nil, fmt.Errorf("event %d is not an etcd event", len(events))
			}
			if len(ev.XXX_unrecognized) != 0 {
				return nil, fmt.Errorf("event %d has fields etcd does not define", len(events))
			}
			events = append(events, ev)
		default:
			if typ != protowire.VarintType {
				return nil, fmt.Errorf("field %d has wire type %d", num, typ)
			}
			if seen[num] {
				return nil, fmt.Errorf("field %d given twice", num)
			}
			var v uint64
			v, n = protowire.ConsumeVarint(b)
			if n < 0 {
				return nil, fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
			}
			ints[num], seen[num] = int64(v), true
		}
		b = b[n:]
	}
	switch k {
	case kindRevision:
		return Revision{Revision: ints[revRevision], Received: fromUnixNano(ints[revReceived]), Events: events}, nil
	case kindLeaseGrant:
		return LeaseGrant{ID: ints[leaseID], TTL: ints[leaseTTL], At: ints[leaseAt], Received: fromUnixNano(ints[leaseReceived]), Remaining: ints[leaseRemaining]}, nil
	default:
		return LeaseRevoke{ID: ints[leaseID], At: ints[leaseAt], Received: fromUnixNano(ints[leaseReceived])}, nil
	}
}
