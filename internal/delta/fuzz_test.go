package delta

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

// FuzzReader feeds the reader arbitrary bytes: it never panics, every error is one of the
// package's kinds, and whatever it accepts whole writes back to the same bytes.
func FuzzReader(f *testing.F) {
	seg := encode(f, gen(rand.New(rand.NewPCG(11, 12)), 0, 8, 0))
	f.Add(seg)
	f.Add(seg[:len(seg)/2])
	f.Add(encode(f, nil))
	f.Add([]byte(Header))
	f.Add([]byte(Header + "R\xff\xff\xff\xff\x0f"))
	f.Add([]byte("etcdguard-delta 2\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := decode(data)
		switch {
		case err == nil:
			if !bytes.Equal(encode(t, got), data) {
				t.Fatalf("a segment read whole does not write back to its bytes")
			}
		case errors.Is(err, ErrCorrupt), errors.Is(err, ErrTruncated):
		default:
			t.Fatalf("error of no kind: %v", err)
		}
	})
}
