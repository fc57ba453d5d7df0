package delta

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// gen makes n revisions after revision from, of the shapes a Kubernetes cluster writes: single
// puts (some on leases), deletes, multi-event txns, an occasional big value, and lease grants and
// revocations between them.
func gen(rng *rand.Rand, from int64, n int, bigValue int) []Record {
	var out []Record
	type key struct{ create, version int64 }
	live := map[string]*key{}
	var names []string
	t0 := time.Date(2026, 12, 1, 3, 4, 5, 0, time.UTC)
	rev := from
	var leases []int64
	for i := 0; i < n; i++ {
		rev++
		r := Revision{Revision: rev, Received: t0.Add(time.Duration(rev) * time.Millisecond)}
		events := 1
		if rng.IntN(5) == 0 {
			events = 2 + rng.IntN(6) // a txn
		}
		used := map[string]bool{}
		for e := 0; e < events; e++ {
			if len(names) > 0 && rng.IntN(4) == 0 {
				name := names[rng.IntN(len(names))]
				if used[name] || live[name] == nil {
					continue
				}
				used[name] = true
				delete(live, name)
				r.Events = append(r.Events, &mvccpb.Event{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte(name), ModRevision: rev}})
				continue
			}
			name := "/registry/pods/ns/p" + strconv.Itoa(rng.IntN(50))
			if used[name] {
				continue
			}
			used[name] = true
			k := live[name]
			if k == nil {
				k = &key{create: rev}
				live[name] = k
				names = append(names, name)
			}
			k.version++
			value := make([]byte, 1+rng.IntN(300))
			if bigValue > 0 && rng.IntN(20) == 0 {
				value = make([]byte, bigValue)
			}
			for j := range value {
				value[j] = byte(rng.Uint32())
			}
			kv := &mvccpb.KeyValue{Key: []byte(name), Value: value, CreateRevision: k.create, ModRevision: rev, Version: k.version}
			if len(leases) > 0 && rng.IntN(3) == 0 {
				kv.Lease = leases[rng.IntN(len(leases))]
			}
			r.Events = append(r.Events, &mvccpb.Event{Type: mvccpb.PUT, Kv: kv})
		}
		if len(r.Events) == 0 {
			rev--
			continue
		}
		out = append(out, r)
		switch rng.IntN(10) {
		case 0:
			id := rng.Int64N(1<<62) + 1
			leases = append(leases, id)
			out = append(out, LeaseGrant{ID: id, TTL: 3600, At: rev, Received: r.Received, Remaining: rng.Int64N(3601)})
		case 1:
			if len(leases) > 0 {
				out = append(out, LeaseRevoke{ID: leases[0], At: rev, Received: r.Received.Add(time.Microsecond)})
				leases = leases[1:]
			}
		}
	}
	return out
}

// encode writes recs as a segment.
func encode(t testing.TB, recs []Record) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, r := range recs {
		require.NoError(t, w.Append(r))
	}
	require.NoError(t, w.Close())
	return buf.Bytes()
}

// decode reads every record of data, and the error that ended the reading (nil at io.EOF).
func decode(data []byte) ([]Record, error) {
	r := NewReader(bytes.NewReader(data))
	out := []Record{}
	for {
		rec, err := r.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, rec)
	}
}

func TestRoundTrip(t *testing.T) {
	put := func(rev int64, key, value string, lease int64) *mvccpb.Event {
		kv := &mvccpb.KeyValue{Key: []byte(key), CreateRevision: rev, ModRevision: rev, Version: 1, Lease: lease}
		if value != "" {
			kv.Value = []byte(value) // etcd sends an empty value as none, and so does a segment
		}
		return &mvccpb.Event{Type: mvccpb.PUT, Kv: kv}
	}
	at := time.Date(2026, 12, 24, 18, 0, 0, 123456789, time.UTC)
	cases := []struct {
		name string
		recs []Record
	}{
		{"empty segment", nil},
		{"one put", []Record{Revision{Revision: 7, Received: at, Events: []*mvccpb.Event{put(7, "a", "b", 0)}}}},
		{"zero receipt time and an empty value", []Record{Revision{Revision: 1, Events: []*mvccpb.Event{put(1, "a", "", 0)}}}},
		{"a txn with a delete, and leases", []Record{
			LeaseGrant{ID: 0x694d77aa3f0c1b2d, TTL: 60, At: 99, Received: at, Remaining: 42},
			Revision{Revision: 100, Received: at, Events: []*mvccpb.Event{
				put(100, "x", "1", 0x694d77aa3f0c1b2d),
				{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte("y"), ModRevision: 100}},
			}},
			LeaseRevoke{ID: 0x694d77aa3f0c1b2d, At: 100, Received: at.Add(time.Second)},
			Revision{Revision: 1 << 62, Received: at.Add(time.Hour), Events: []*mvccpb.Event{put(1<<62, "z", "2", 0)}},
		}},
		{"generated", gen(rand.New(rand.NewPCG(1, 2)), 1000, 2000, 0)},
		{"generated with big values", gen(rand.New(rand.NewPCG(3, 4)), 5, 100, 2<<20)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var buf bytes.Buffer
			w := NewWriter(&buf)
			for _, r := range c.recs {
				require.NoError(t, w.Append(r))
			}
			require.NoError(t, w.Close())
			got, err := decode(buf.Bytes())
			require.NoError(t, err)
			require.Equal(t, len(c.recs), len(got))
			for i := range c.recs {
				require.Equal(t, c.recs[i], got[i], "record %d", i)
			}
			st := w.Stats()
			require.Equal(t, int64(buf.Len()), st.Size)
			require.Equal(t, sha256.Sum256(buf.Bytes()), st.SHA256)
			require.Equal(t, int64(len(c.recs)), st.Records)
			require.ErrorIs(t, w.Append(LeaseRevoke{ID: 1, At: 1}), ErrClosed)
		})
	}
}

func TestWriterRefuses(t *testing.T) {
	put := func(rev, mod int64) Revision {
		return Revision{Revision: rev, Events: []*mvccpb.Event{{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte("k"), CreateRevision: 1, ModRevision: mod, Version: 1}}}}
	}
	del := func(rev, mod int64) Revision {
		return Revision{Revision: rev, Events: []*mvccpb.Event{{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte("k"), ModRevision: mod}}}}
	}
	big := put(11, 11)
	big.Events[0].Kv.Value = make([]byte, MaxRecordSize)
	cases := []struct {
		name string
		rec  Record
		want string
	}{
		{"the same revision again", put(10, 10), "revision 10 does not follow revision 10"},
		{"a revision going down", put(9, 9), "revision 9 does not follow revision 10"},
		{"a put of another revision", put(11, 12), "revision 11, event 0: put with mod revision 12"},
		{"a delete of another revision", del(11, 10), "revision 11, event 0: delete with mod revision 10"},
		{"no events", Revision{Revision: 11}, "revision 11 has no events"},
		{"no key-value", Revision{Revision: 11, Events: []*mvccpb.Event{{Type: mvccpb.PUT}}}, "no key-value"},
		{"a previous key-value", Revision{Revision: 11, Events: []*mvccpb.Event{{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte("k"), ModRevision: 11}, PrevKv: &mvccpb.KeyValue{}}}}, "previous key-value"},
		{"an unknown event type", Revision{Revision: 11, Events: []*mvccpb.Event{{Type: 7, Kv: &mvccpb.KeyValue{Key: []byte("k"), ModRevision: 11}}}}, "event type 7"},
		{"an empty key", Revision{Revision: 11, Events: []*mvccpb.Event{{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{ModRevision: 11}}}}, "empty key"},
		{"a put of version 0", Revision{Revision: 11, Events: []*mvccpb.Event{{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte("k"), CreateRevision: 11, ModRevision: 11}}}}, "put with version 0"},
		{"a record over the limit", big, "larger than the limit"},
		{"a lease grant without ttl", LeaseGrant{ID: 1, At: 10}, "lease grant 1: ttl 0"},
		{"a lease revoke without lease", LeaseRevoke{At: 10}, "needs a lease"},
	}
	var buf bytes.Buffer
	w := NewWriter(&buf)
	require.NoError(t, w.Append(put(10, 10)))
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := w.Stats()
			err := w.Append(c.rec)
			require.ErrorIs(t, err, ErrInvalid)
			require.ErrorContains(t, err, c.want)
			require.Equal(t, before, w.Stats(), "nothing of a refused record is written")
		})
	}
	// The writer goes on after refusals, and the segment holds what was accepted.
	require.NoError(t, w.Append(put(11, 11)))
	require.NoError(t, w.Close())
	got, err := decode(buf.Bytes())
	require.NoError(t, err)
	require.Equal(t, []Record{put(10, 10), put(11, 11)}, got)
}

// TestWriterFlush: Flush leaves nothing in the writer, so that an fsync after it makes every
// appended record durable; without it the bytes may wait in the buffer.
func TestWriterFlush(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	recs := gen(rand.New(rand.NewPCG(5, 6)), 0, 20, 0)
	for i, r := range recs {
		require.NoError(t, w.Append(r))
		require.NoError(t, w.Flush())
		require.Equal(t, w.Stats().Size, int64(buf.Len()))
		got, err := decode(buf.Bytes())
		var trunc *TruncatedError
		require.ErrorAs(t, err, &trunc)
		require.Equal(t, recs[:i+1], got, "every flushed record is read back")
		require.Equal(t, int64(buf.Len()), trunc.Complete)
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.n < len(p) {
		return 0, errors.New("no space left on device")
	}
	f.n -= len(p)
	return len(p), nil
}

func TestWriterKeepsWriteError(t *testing.T) {
	w := NewWriter(&failWriter{n: 10})
	err := w.Flush()
	require.ErrorContains(t, err, "write delta segment: no space left on device")
	require.Equal(t, err, w.Append(LeaseRevoke{ID: 1, At: 1}))
	require.Equal(t, err, w.Close())
}

// TestTruncated cuts a small segment at every offset: a cut in the header is said to be one; any
// other cut gives the records before it and a TruncatedError with the last complete revision and
// where the complete prefix ends.
func TestTruncated(t *testing.T) {
	recs := gen(rand.New(rand.NewPCG(7, 8)), 41, 12, 0)
	var buf bytes.Buffer
	w := NewWriter(&buf)
	require.NoError(t, w.Flush())
	ends := []int64{w.Stats().Size} // ends[i]: where the first i records end
	lasts := []int64{0}             // lasts[i]: the last revision of the first i records
	for _, r := range recs {
		require.NoError(t, w.Append(r))
		require.NoError(t, w.Flush())
		ends = append(ends, w.Stats().Size)
		last := lasts[len(lasts)-1]
		if rev, ok := r.(Revision); ok {
			last = rev.Revision
		}
		lasts = append(lasts, last)
	}
	require.NoError(t, w.Close())
	data := buf.Bytes()
	for cut := 0; cut < len(data); cut++ {
		got, err := decode(data[:cut])
		var trunc *TruncatedError
		require.ErrorAs(t, err, &trunc, "cut at %d", cut)
		require.ErrorIs(t, err, ErrTruncated)
		require.NotErrorIs(t, err, ErrCorrupt)
		if cut < len(Header) {
			require.True(t, trunc.InHeader, "cut at %d", cut)
			require.EqualError(t, err, "delta segment truncated in its header")
			continue
		}
		n := 0
		for n+1 < len(ends) && ends[n+1] <= int64(cut) {
			n++
		}
		require.Equal(t, TruncatedError{Records: int64(n), Last: lasts[n], Complete: ends[n]}, *trunc, "cut at %d", cut)
		require.Equal(t, recs[:n], got, "cut at %d", cut)
	}
}

// TestCorrupt changes every byte of a small segment in two ways: each change fails as corrupt,
// never as a truncation, and no record after the damage is returned.
func TestCorrupt(t *testing.T) {
	recs := gen(rand.New(rand.NewPCG(9, 10)), 41, 12, 0)
	data := encode(t, recs)
	for i := range data {
		for _, mask := range []byte{0x01, 0xff} {
			bad := bytes.Clone(data)
			bad[i] ^= mask
			got, err := decode(bad)
			require.ErrorIs(t, err, ErrCorrupt, "byte %d ^ %#x", i, mask)
			require.NotErrorIs(t, err, ErrTruncated)
			require.Equal(t, recs[:len(got)], got, "only records before the damage are returned")
		}
	}
	// Bytes after the trailer, and a segment of another format version.
	_, err := decode(append(bytes.Clone(data), 0))
	require.ErrorIs(t, err, ErrCorrupt)
	require.ErrorContains(t, err, "bytes after the trailer")
	_, err = decode([]byte("etcdguard-delta 2\n"))
	require.ErrorIs(t, err, ErrCorrupt)
	require.ErrorContains(t, err, `segment format "2" is not format 1`)
}

// TestCorruptRecords builds frames whose checksums hold but whose contents break the rules, as
// a buggy writer would: the reader refuses each, and says why without quoting keys or values.
func TestCorruptRecords(t *testing.T) {
	put := func(rev, mod int64, key string) Revision {
		return Revision{Revision: rev, Events: []*mvccpb.Event{{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte(key), Value: []byte("secret-value"), CreateRevision: 1, ModRevision: mod, Version: 1}}}}
	}
	frame := func(k byte, body []byte) []byte {
		head := append([]byte{k}, uvarint(len(body))...)
		head = append(head, be32(crcOf(head))...)
		return append(append(head, body...), be32(crcOf(body))...)
	}
	cases := []struct {
		name   string
		frames [][]byte
		want   string
	}{
		{"revision going down", [][]byte{frame('R', appendBody(nil, put(5, 5, "secret-key"))), frame('R', appendBody(nil, put(4, 4, "secret-key")))}, "revision 4 does not follow revision 5"},
		{"mod revision not the revision", [][]byte{frame('R', appendBody(nil, put(5, 6, "secret-key")))}, "put with mod revision 6"},
		{"unknown kind", [][]byte{frame('Q', nil)}, "unknown record kind 0x51"},
		{"field given twice", [][]byte{frame('G', append(appendBody(nil, LeaseGrant{ID: 1, TTL: 2, At: 3}), 0x08, 0x01))}, "field 1 given twice"},
		{"bad event bytes", [][]byte{frame('R', append(appendVarint(nil, revRevision, 5), 0x1a, 0x02, 0xff, 0xff))}, "event 0 is not an etcd event"},
		{"an oversized length", [][]byte{func() []byte {
			head := append([]byte{'R'}, uvarint(MaxRecordSize+1)...)
			return append(head, be32(crcOf(head))...)
		}()}, "record length 77594625 is larger than the limit"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			data := []byte(Header)
			for _, f := range c.frames {
				data = append(data, f...)
			}
			_, err := decode(data)
			require.ErrorIs(t, err, ErrCorrupt)
			require.ErrorContains(t, err, c.want)
			require.NotContains(t, err.Error(), "secret")
		})
	}
}

func uvarint(n int) []byte  { return binary.AppendUvarint(nil, uint64(n)) }
func be32(v uint32) []byte  { return binary.BigEndian.AppendUint32(nil, v) }
func crcOf(b []byte) uint32 { return crc32.Checksum(b, crcTable) }
