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

// ErrCorrupt is returned (wrapped) when stored data does not decode to what it should, such as
// a stream that decodes to more than its bound. snapshot.ErrCorrupt is the same error.
var ErrCorrupt = errors.New("snapshot is corrupt")

// MaxPlainSnapshotSize bounds what a file with no manifest may decode to: 8 GiB, the largest
// database etcd accepts (--quota-backend-bytes). A backup's manifest gives its own bound, its
// raw_size.
const MaxPlainSnapshotSize = 8 << 30

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
// encryption. Decryption errors caused by a wrong identity wrap ErrWrongKey. The plain snapshot
// may have at most limit bytes (a backup's raw_size, or MaxPlainSnapshotSize for a file with no
// manifest): a stream that decodes to more (a damaged or forged object, a "zstd bomb") fails
// with ErrCorrupt once limit bytes are out, and no byte past the limit is returned.
func NewDecoder(r io.Reader, compression string, enc *Encryption, identities []age.Identity, limit int64) (io.ReadCloser, error) {
	if limit < 0 {
		return nil, fmt.Errorf("decode: negative size bound %d", limit)
	}
	rc, err := newDecoder(r, compression, enc, identities)
	if err != nil {
		return nil, err
	}
	return &boundedReader{rc: rc, left: limit, limit: limit}, nil
}

// boundedReader fails with ErrCorrupt when its reader has more than limit bytes.
type boundedReader struct {
	rc    io.ReadCloser
	left  int64
	limit int64
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.left <= 0 {
		var one [1]byte
		for {
			n, err := b.rc.Read(one[:])
			if n > 0 {
				return 0, fmt.Errorf("%w: the data decodes to more than %d bytes, the most it may (the manifest's raw_size, or the bound for a plain file); decoding stopped there", ErrCorrupt, b.limit)
			}
			if err != nil {
				return 0, err
			}
		}
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *boundedReader) Close() error { return b.rc.Close() }

func newDecoder(r io.Reader, compression string, enc *Encryption, identities []age.Identity) (io.ReadCloser, error) {
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
// path to an existing file, one per line in a recipients file. origin names where the specs
// come from ("--age-recipient", "age-recipients in /etc/etcdguard.yaml") for messages. Errors
// never quote what they reject unless it is a public key: a secret key (an identity) passed by
// mistake is named by its flag, position or file and line, never shown.
func ParseRecipients(specs []string, origin string) ([]age.Recipient, []string, error) {
	var recips []age.Recipient
	var names []string
	for i, spec := range specs {
		path, isFile := strings.CutPrefix(spec, "@")
		if !isFile {
			st, err := os.Stat(spec)
			isFile = err == nil && !st.IsDir()
		}
		if !isFile {
			r, err := parseRecipient(strings.TrimSpace(spec))
			if err != nil {
				return nil, nil, fmt.Errorf("%s value %d %w", origin, i+1, err)
			}
			recips = append(recips, r)
			names = append(names, strings.TrimSpace(spec))
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: read age recipients file %s: %w", origin, path, err)
		}
		for n, l := range strings.Split(string(data), "\n") {
			l = strings.TrimSpace(l)
			if l == "" || strings.HasPrefix(l, "#") {
				continue
			}
			r, err := parseRecipient(l)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: line %d of %s %w", origin, n+1, path, err)
			}
			recips = append(recips, r)
			names = append(names, l)
		}
	}
	return recips, names, nil
}

// parseRecipient parses one age public key. Its error completes a sentence that names the value
// ("--age-recipient value 2 ...") and quotes it only if it is a public key.
func parseRecipient(s string) (age.Recipient, error) {
	if isIdentity(s) {
		return nil, errors.New("is an identity, not a recipient: give its public key instead (age-keygen -y IDENTITY-FILE prints it); keep the identity file for --age-identity")
	}
	r, err := age.ParseX25519Recipient(s)
	if err != nil {
		if strings.HasPrefix(s, "age1") {
			return nil, fmt.Errorf("%q is not a valid age public key: check it for typos", s)
		}
		return nil, errors.New("is not an age public key (age1...) nor a readable recipients file")
	}
	return r, nil
}

// isIdentity reports whether s looks like an age identity (secret key), damaged or not.
func isIdentity(s string) bool {
	u := strings.ToUpper(s)
	return strings.HasPrefix(u, "AGE-SECRET-KEY-") || strings.HasPrefix(u, "AGE-PLUGIN-")
}

// LoadIdentities reads age identity files (as written by age-keygen). A line that is not an
// identity is named by file and line number; its content is never quoted, as it may be a
// damaged secret key.
func LoadIdentities(paths []string) ([]age.Identity, error) {
	var ids []age.Identity
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("open age identity file %s: %w", p, err)
		}
		found := 0
		sc := bufio.NewScanner(f)
		for n := 1; sc.Scan(); n++ {
			l := strings.TrimSpace(sc.Text())
			if l == "" || strings.HasPrefix(l, "#") {
				continue
			}
			id, err := age.ParseX25519Identity(l)
			if err != nil {
				f.Close()
				if strings.HasPrefix(l, "age1") {
					return nil, fmt.Errorf("age identity file %s: line %d is a recipient (public key), not an identity: give the file age-keygen wrote", p, n)
				}
				return nil, fmt.Errorf("age identity file %s: line %d is not a valid age identity (AGE-SECRET-KEY-1...): check that the file is whole", p, n)
			}
			ids = append(ids, id)
			found++
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("read age identity file %s: %w", p, err)
		}
		if found == 0 {
			return nil, fmt.Errorf("age identity file %s holds no identity (AGE-SECRET-KEY-1...)", p)
		}
	}
	return ids, nil
}
