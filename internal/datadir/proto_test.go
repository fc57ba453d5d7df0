package datadir

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.etcd.io/raft/v3/raftpb"
)

// The fast readers must agree with etcd's generated code wherever they accept an input, and
// must accept what etcd writes.

func TestFastDecodersAcceptWhatEtcdWrites(t *testing.T) {
	entry := raftpb.Entry{Term: 7, Index: 1 << 40, Type: raftpb.EntryConfChange, Data: bytes.Repeat([]byte{0xab}, 300)}
	ed, err := entry.Marshal()
	require.NoError(t, err)
	term, index, ok := decodeEntryIndexFast(ed)
	require.True(t, ok)
	require.Equal(t, entry.Term, term)
	require.Equal(t, entry.Index, index)

	hs := raftpb.HardState{Term: 9, Vote: 3, Commit: 1<<33 + 5}
	hd, err := hs.Marshal()
	require.NoError(t, err)
	commit, ok := decodeHardStateCommitFast(hd)
	require.True(t, ok)
	require.Equal(t, hs.Commit, commit)

	for _, r := range []walpb.Record{
		{Type: walEntryType, Crc: 0xdeadbeef, Data: ed},
		{Type: walCrcType, Crc: 0xffffffff},
		{Type: walStateType, Data: hd},
	} {
		b, err := r.Marshal()
		require.NoError(t, err)
		got, ok := decodeRecordFast(b)
		require.True(t, ok)
		require.Equal(t, r.Type, got.Type)
		require.Equal(t, r.Crc, got.Crc)
		require.Equal(t, len(r.Data), len(got.Data))
		require.True(t, bytes.Equal(r.Data, got.Data))
	}
}

func TestFastDecodersAgreeWithGeneratedCode(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	valid, _ := (&walpb.Record{Type: walEntryType, Crc: 12345, Data: []byte("0123456789")}).Marshal()
	entry, _ := (&raftpb.Entry{Term: 3, Index: 99, Data: []byte("abc")}).Marshal()
	for i := range 200000 {
		var b []byte
		switch i % 3 {
		case 0: // random bytes
			b = make([]byte, rng.IntN(24))
			for j := range b {
				b[j] = byte(rng.Uint32())
			}
		case 1: // a valid record with a few bytes changed, cut or extended
			b = mutate(rng, valid)
		default:
			b = mutate(rng, entry)
		}
		checkAgreement(t, b)
	}
}

func FuzzFastDecoders(f *testing.F) {
	valid, _ := (&walpb.Record{Type: walEntryType, Crc: 12345, Data: []byte("0123456789")}).Marshal()
	entry, _ := (&raftpb.Entry{Term: 3, Index: 99, Data: []byte("abc")}).Marshal()
	f.Add(valid)
	f.Add(entry)
	f.Fuzz(func(t *testing.T, b []byte) { checkAgreement(t, b) })
}

func mutate(rng *rand.Rand, src []byte) []byte {
	b := bytes.Clone(src)
	for range 1 + rng.IntN(3) {
		switch rng.IntN(3) {
		case 0:
			b[rng.IntN(len(b))] = byte(rng.Uint32())
		case 1:
			b = b[:rng.IntN(len(b))]
		default:
			b = append(b, byte(rng.Uint32()))
		}
		if len(b) == 0 {
			b = []byte{0}
		}
	}
	return b
}

func checkAgreement(t *testing.T, b []byte) {
	t.Helper()
	if rec, ok := decodeRecordFast(b); ok {
		var want walpb.Record
		require.NoError(t, want.Unmarshal(b), "fast record decode accepted %x", b)
		require.Equal(t, want.Type, rec.Type, "%x", b)
		require.Equal(t, want.Crc, rec.Crc, "%x", b)
		require.True(t, bytes.Equal(want.Data, rec.Data), "%x", b)
	}
	if term, index, ok := decodeEntryIndexFast(b); ok {
		var want raftpb.Entry
		require.NoError(t, want.Unmarshal(b), "fast entry decode accepted %x", b)
		require.Equal(t, want.Term, term, "%x", b)
		require.Equal(t, want.Index, index, "%x", b)
	}
	if commit, ok := decodeHardStateCommitFast(b); ok {
		var want raftpb.HardState
		require.NoError(t, want.Unmarshal(b), "fast HardState decode accepted %x", b)
		require.Equal(t, want.Commit, commit, "%x", b)
	}
}
