package repository

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
)

// ErrWrongKey is returned (wrapped) when a backup is encrypted and none of the given age
// identities can open it, or when no identity is given at all.
var ErrWrongKey = errors.New("no age identity matches the backup")

// Compression names how a backup's data object is compressed.
const (
	CompressionNone = "none"
	CompressionZstd = "zstd"
)

// Codec is how a snapshot is encoded into a stored data object: compressed, then encrypted.
type Codec struct {
	// Compression is CompressionZstd (the default) or CompressionNone.
	Compression string
	// Recipients, when not empty, encrypt the data with age to these public keys.
	Recipients []age.Recipient
	// RecipientNames are the recipients' public keys as text, used to record fingerprints.
	RecipientNames []string
}

// Extension returns the data object's file extension for the codec, such as ".db.zst.age".
func (c Codec) Extension() string {
	ext := ".db"
	if c.Compression == CompressionZstd {
		ext += ".zst"
	}
	if len(c.Recipients) > 0 {
		ext += ".age"
	}
	return ext
}

// Encryption describes a backup's encryption in its manifest: never a key, only fingerprints.
type Encryption struct {
	Scheme string `json:"scheme"`
	// Recipients are fingerprints (SHA-256 prefixes) of the age public keys the data is encrypted to.
	Recipients []string `json:"recipients"`
}

// Fingerprint returns a short stable fingerprint of an age recipient, safe to print and store.
func Fingerprint(recipient string) string {
	sum := sha256.Sum256([]byte(strings.TrimSpace(recipient)))
	return "sha256:" + hex.EncodeToString(sum[:8])
}

// Encryption returns the manifest's description of the codec's encryption, or nil.
func (c Codec) Encryption() *Encryption {
	if len(c.Recipients) == 0 {
		return nil
	}
	e := &Encryption{Scheme: "age"}
	for _, r := range c.RecipientNames {
		e.Recipients = append(e.Recipients, Fingerprint(r))
	}
	return e
}

// NewEncoder returns a writer that encodes what is written to it into w. Closing it flushes the
// compressor and the encryption; it does not close w. Memory use is bounded and independent of
// the amount of data.
func (c Codec) NewEncoder(w io.Writer) (io.WriteCloser, error) {
	var closers []io.Closer
	out := w
	if len(c.Recipients) > 0 {
		ew, err := age.Encrypt(out, c.Recipients...)
		if err != nil {
			return nil, fmt.Errorf("start age encryption: %w", err)
		}
		closers = append(closers, ew)
		out = ew
	}
	if c.Compression == CompressionZstd {
		zw, err := zstd.NewWriter(out, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(2), zstd.WithWindowSize(4<<20))
		if err != nil {
			return nil, fmt.Errorf("start zstd compression: %w", err)
		}
		closers = append(closers, zw)
		out = zw
	}
	return &encoder{Writer: out, closers: closers}, nil
}

type encoder struct {
	io.Writer
	closers []io.Closer // outermost last
}

func (e *encoder) Close() error {
	for i := len(e.closers) - 1; i >= 0; i-- {
		if err := e.closers[i].Close(); err != nil {
			return err
		}
	}
	return nil
}

// NewDecoder returns a reader of the plain snapshot encoded in r with the given compression and
// encryption. Decryption errors caused by a wrong identity wrap ErrWrongKey.
func NewDecoder(r io.Reader, compression string, enc *Encryption, identities []age.Identity) (io.ReadCloser, error) {
	in := r
	if enc != nil {
		if len(identities) == 0 {
			return nil, fmt.Errorf("%w: the backup is encrypted with age (recipients %s): pass the identity file with --age-identity", ErrWrongKey, strings.Join(enc.Recipients, ", "))
		}
		dr, err := age.Decrypt(in, identities...)
		if err != nil {
			var noMatch *age.NoIdentityMatchError
			if errors.As(err, &noMatch) {
				return nil, fmt.Errorf("%w: it is encrypted to %s and none of the given identities is one of them: pass the matching --age-identity", ErrWrongKey, strings.Join(enc.Recipients, ", "))
			}
			return nil, fmt.Errorf("decrypt backup: %w", err)
		}
		in = dr
	}
	switch compression {
	case CompressionZstd:
		zr, err := zstd.NewReader(in, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxWindow(64<<20))
		if err != nil {
			return nil, fmt.Errorf("start zstd decompression: %w", err)
		}
		return zr.IOReadCloser(), nil
	case CompressionNone, "":
		return io.NopCloser(in), nil
	}
	return nil, fmt.Errorf("unknown compression %q", compression)
}

// ParseRecipients parses age public keys ("age1...") given inline or, with a leading "@" or as a
// path to an existing file, one per line in a recipients file.
func ParseRecipients(specs []string) ([]age.Recipient, []string, error) {
	var recips []age.Recipient
	var names []string
	for _, spec := range specs {
		lines := []string{spec}
		path := strings.TrimPrefix(spec, "@")
		if st, err := os.Stat(path); err == nil && !st.IsDir() {
			data, err := os.ReadFile(path)
			if err != nil {
				return nil, nil, fmt.Errorf("read age recipients file %s: %w", path, err)
			}
			lines = strings.Split(string(data), "\n")
		}
		for _, l := range lines {
			l = strings.TrimSpace(l)
			if l == "" || strings.HasPrefix(l, "#") {
				continue
			}
			r, err := age.ParseX25519Recipient(l)
			if err != nil {
				return nil, nil, fmt.Errorf("age recipient %q is not an age public key (age1...): %w", l, err)
			}
			recips = append(recips, r)
			names = append(names, l)
		}
	}
	return recips, names, nil
}

// LoadIdentities reads age identity files (as written by age-keygen).
func LoadIdentities(paths []string) ([]age.Identity, error) {
	var ids []age.Identity
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("open age identity file %s: %w", p, err)
		}
		parsed, err := age.ParseIdentities(bufio.NewReader(f))
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("parse age identity file %s: %w", p, err)
		}
		ids = append(ids, parsed...)
	}
	return ids, nil
}
