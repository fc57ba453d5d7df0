package repository

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
)

// Digest counts and hashes (SHA-256) what is written to it: the size and sum a manifest records
// of a data object, plain or stored.
type Digest struct {
	h hash.Hash
	n int64
}

// NewDigest returns an empty Digest.
func NewDigest() *Digest { return &Digest{h: sha256.New()} }

func (d *Digest) Write(p []byte) (int, error) {
	d.h.Write(p)
	d.n += int64(len(p))
	return len(p), nil
}

// Size is the number of bytes written.
func (d *Digest) Size() int64 { return d.n }

// Sum is the SHA-256 of the bytes written, in hex.
func (d *Digest) Sum() string { return hex.EncodeToString(d.h.Sum(nil)) }

// Matches reports whether what was written has the size and SHA-256 given.
func (d *Digest) Matches(size int64, sum string) bool { return d.n == size && d.Sum() == sum }

// CheckedReader passes a stored object through and, at its end, fails with ErrCorrupt instead of
// returning EOF when its size or SHA-256 differ from size and sum, so that a backend that saves
// what it reads discards the copy. name says which object, for the message.
func CheckedReader(r io.Reader, size int64, sum, name string) io.Reader {
	return &checkedReader{r: r, d: NewDigest(), size: size, sum: sum, name: name}
}

type checkedReader struct {
	r         io.Reader
	d         *Digest
	size      int64
	sum, name string
}

func (c *checkedReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.d.Write(p[:n])
	if err == io.EOF && !c.d.Matches(c.size, c.sum) {
		return n, fmt.Errorf("%w: %s has %d bytes with SHA-256 %s; the manifest says %d bytes, %s", ErrCorrupt, c.name, c.d.Size(), c.d.Sum(), c.size, c.sum)
	}
	return n, err
}
