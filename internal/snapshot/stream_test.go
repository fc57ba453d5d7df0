package snapshot

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"testing"

	"github.com/stretchr/testify/require"
)

// snapshotBytes returns a fake database of n bytes followed by etcd's trailer.
func snapshotBytes(n int) []byte {
	db := bytes.Repeat([]byte{0xab, 0x01, 0x7f}, n/3+1)[:n]
	sum := sha256.Sum256(db)
	return append(db, sum[:]...)
}

func TestTrailerCheck(t *testing.T) {
	good := snapshotBytes(4096)
	flipped := bytes.Clone(good)
	flipped[100] ^= 1
	badTrailer := bytes.Clone(good)
	badTrailer[len(badTrailer)-1] ^= 1
	cases := []struct {
		name   string
		data   []byte
		chunks []int // sizes of the writes; the rest goes in one last write
		want   string
	}{
		{"one write", good, nil, ""},
		{"byte by byte around the trailer", good, []int{4000, 90, 1, 1, 1, 1, 10, 20}, ""},
		{"writes smaller than the trailer", good, repeat(7, 600), ""},
		{"flipped data byte", flipped, []int{1000}, "differs from etcd's trailer"},
		{"flipped trailer byte", badTrailer, nil, "differs from etcd's trailer"},
		{"cut short", good[:3000], nil, "has no SHA-256 trailer"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc2 := newTrailerCheck()
			rest := tc.data
			for _, n := range tc.chunks {
				n = min(n, len(rest))
				_, _ = tc2.Write(rest[:n])
				rest = rest[n:]
			}
			_, _ = tc2.Write(rest)
			err := tc2.Check()
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrCorrupt)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func repeat(n, times int) []int {
	out := make([]int, times)
	for i := range out {
		out[i] = n
	}
	return out
}

func TestCheckTrailer(t *testing.T) {
	good := snapshotBytes(8192)
	sum, n, err := CheckTrailer(t.Context(), bytes.NewReader(good))
	require.NoError(t, err)
	require.Equal(t, int64(len(good)), n)
	want := sha256.Sum256(good)
	require.Equal(t, want[:], mustHex(t, sum))

	_, _, err = CheckTrailer(t.Context(), bytes.NewReader(good[:8192]))
	require.ErrorIs(t, err, ErrNoTrailer, "a db copied out of a data dir has no trailer")
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	require.NoError(t, err)
	return b
}
