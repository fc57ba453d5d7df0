package cli

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/etcdguard/etcdguard/internal/redact"
	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/snapshot"
)

// fileStatus is `snapshot status FILE -o json`.
type fileStatus struct {
	File    string          `json:"file"`
	Size    int64           `json:"size"`
	SHA256  string          `json:"sha256"`
	Trailer string          `json:"etcd_trailer"`
	Status  snapshot.Status `json:"status"`
}

func newSnapshotStatusCommand(env Env, g *globalOptions) *cobra.Command {
	maxSize := byteSize(repository.MaxPlainSnapshotSize)
	cmd := &cobra.Command{
		Use:   "status ID|FILE",
		Short: "Show a snapshot's status, as etcdutl does, and its manifest",
		Long: `Show the hash, revision, total keys, total size and version of a snapshot, as 'etcdutl snapshot
status' does. Given a backup id, also show its manifest (source member, raft index, checksums,
copies). Given a file, read it: a plain 'etcdctl snapshot save' file, a db file copied from a data
directory, or a stored etcdguard data object (.zst, .age); the file is checked (bbolt consistency,
etcd's SHA-256 trailer when present) and never modified. A compressed or encrypted file is
decoded into --work-dir, at most --max-size bytes of it (a file that decodes to more is
refused as corrupt).`,
		Example: `  etcdguard snapshot status /var/backups/etcd-2026-11-24.db
  etcdguard snapshot status 20261124T035532Z-1a2b3c4d --config /etc/etcdguard.yaml -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := g.resolve(env)
			if err != nil {
				return err
			}
			arg := args[0]
			if st, err := os.Stat(arg); err == nil && !st.IsDir() {
				return statusOfFile(commandContext(cmd), env, s, arg, int64(maxSize))
			}
			if !repository.ValidID(arg) && arg != "latest" {
				return fmt.Errorf("%w: %s is neither a file nor a backup id (ids look like 20261124T035532Z-1a2b3c4d)", repository.ErrNotFound, arg)
			}
			if err := s.requireTargets(); err != nil {
				return err
			}
			cat, err := snapshot.Load(commandContext(cmd), s.cfg.Targets)
			if cat != nil {
				defer cat.Close()
			}
			if err != nil {
				return err
			}
			e, err := findEntry(commandContext(cmd), cat, arg)
			if err != nil {
				return err
			}
			m := e.Manifest
			var copies []string
			for _, c := range e.Copies {
				copies = append(copies, c.Repo.Target.Name)
			}
			if s.output == "json" {
				return writeJSON(env.Stdout, map[string]any{"manifest": m, "copies": copies})
			}
			if err := statusTable(env, snapshot.Status{Hash: m.Status.Hash, Revision: m.Status.Revision, TotalKey: m.Status.TotalKey, TotalSize: m.Status.TotalSize, Version: m.Status.Version}); err != nil {
				return err
			}
			fmt.Fprintln(env.Stdout)
			t := newTable(env.Stdout, "FIELD", "VALUE")
			t.row("id", m.ID)
			t.row("created", m.Created.Format("2006-01-02T15:04:05Z"))
			t.row("cluster id", m.ClusterID)
			t.row("source", fmt.Sprintf("%s %s (member %s, leader %v)", m.Source.Name, m.Source.Endpoint, m.Source.MemberID, m.Source.IsLeader))
			t.row("etcd version", m.EtcdVersion)
			t.row("raft index / term", fmt.Sprintf("%d / %d", m.RaftIndex, m.RaftTerm))
			t.row("size", fmt.Sprintf("%s plain, %s stored (%s)", humanBytes(m.RawSize), humanBytes(m.StoredSize), m.Compression))
			t.row("sha256", m.SHA256)
			t.row("stored sha256", m.StoredSHA256)
			if m.Encryption != nil {
				t.row("encryption", m.Encryption.Scheme+" to "+strings.Join(m.Encryption.Recipients, ", "))
			}
			t.row("verified", m.Verification.At.Format("2006-01-02T15:04:05Z")+": "+strings.Join(m.Verification.Checks, ", "))
			t.row("copies", strings.Join(copies, ", "))
			for _, tr := range m.Targets {
				v := tr.State + " " + redact.URL(tr.URL)
				if tr.Error != "" {
					v += ": " + tr.Error
				}
				t.row("target "+tr.Name, v)
			}
			return t.flush()
		},
	}
	cmd.Flags().Var(&maxSize, "max-size", "largest snapshot a compressed or encrypted FILE may decode to, such as 8GiB (default: 8GiB, etcd's largest database)")
	return cmd
}

func statusTable(env Env, st snapshot.Status) error {
	t := newTable(env.Stdout, "HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE", "VERSION")
	t.row(fmt.Sprintf("%x", st.Hash), fmt.Sprint(st.Revision), fmt.Sprint(st.TotalKey), humanBytes(st.TotalSize), st.Version)
	return t.flush()
}

// statusOfFile reads a snapshot file, decoding it first when it is a stored data object.
func statusOfFile(ctx context.Context, env Env, s settings, path string, maxSize int64) error {
	f, err := snapshot.OpenFile(path)
	if err != nil {
		if errors.Is(err, snapshot.ErrNotFile) {
			return fmt.Errorf("%w: %w", ErrUsage, err)
		}
		return err
	}
	defer f.Close()
	br := bufio.NewReader(f)
	head, _ := br.Peek(32)
	comp, enc := repository.CompressionNone, (*repository.Encryption)(nil)
	switch {
	case bytes.HasPrefix(head, []byte("age-encryption.org/")):
		enc = &repository.Encryption{Scheme: "age", Recipients: []string{"(see the backup's manifest)"}}
		comp = repository.CompressionZstd // etcdguard always compresses before it encrypts, unless told not to
		if strings.HasSuffix(path, ".db.age") {
			comp = repository.CompressionNone
		}
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		comp = repository.CompressionZstd
	}
	plain := path
	var in io.Reader = br
	if comp != repository.CompressionNone || enc != nil {
		ids, err := loadIdentities(s)
		if err != nil {
			return err
		}
		dec, err := repository.NewDecoder(br, comp, enc, ids, maxSize)
		if err != nil {
			return err
		}
		defer dec.Close()
		dir, remove, err := snapshot.MakeScratch(s.cfg.WorkDir, "status")
		if err != nil {
			return fmt.Errorf("create a scratch folder to decode %s in (set --work-dir): %w", path, err)
		}
		defer remove()
		plain = dir + "/snapshot.db"
		out, err := os.OpenFile(plain, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return fmt.Errorf("decode %s: %w", path, err)
		}
		if _, err := io.Copy(out, dec); err != nil {
			out.Close()
			if errors.Is(err, repository.ErrCorrupt) {
				return fmt.Errorf("decode %s: %w (--max-size %s)", path, err, byteSize(maxSize))
			}
			return fmt.Errorf("%w: decode %s: %w", snapshot.ErrCorrupt, path, err)
		}
		if err := out.Close(); err != nil {
			return fmt.Errorf("decode %s into %s: %w", path, plain, err)
		}
		pf, err := os.Open(plain)
		if err != nil {
			return fmt.Errorf("read decoded %s: %w", plain, err)
		}
		defer pf.Close()
		in = pf
	}
	fs := fileStatus{File: path}
	sum, n, terr := snapshot.CheckTrailer(ctx, in)
	fs.SHA256, fs.Size = sum, n
	switch {
	case terr == nil:
		fs.Trailer = "ok"
	case errors.Is(terr, snapshot.ErrNoTrailer):
		fs.Trailer = "absent (a db file copied from a data dir; restore it with --skip-hash-check)"
	default:
		return fmt.Errorf("%s: %w", path, terr)
	}
	st, err := snapshot.ReadStatus(ctx, plain)
	if err != nil {
		return err
	}
	fs.Status = st
	if s.output == "json" {
		return writeJSON(env.Stdout, fs)
	}
	if err := statusTable(env, st); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "\nfile %s: %s, sha256 %s, etcd trailer %s, raft index %d term %d\n", path, humanBytes(n), sum, fs.Trailer, st.ConsistentIndex, st.Term)
	return nil
}

// byteSize is a flag value of bytes written with an optional binary unit: 512, 64MiB, 8GiB.
type byteSize int64

func (b byteSize) String() string {
	for _, u := range []struct {
		name string
		n    int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if int64(b) >= u.n && int64(b)%u.n == 0 {
			return strconv.FormatInt(int64(b)/u.n, 10) + u.name
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

func (b *byteSize) Set(v string) error {
	mult := int64(1)
	for _, u := range []struct {
		name string
		n    int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}} {
		if num, ok := strings.CutSuffix(v, u.name); ok {
			v, mult = num, u.n
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n <= 0 || n > math.MaxInt64/mult {
		return fmt.Errorf("want a positive size such as 8GiB, 64MiB or 1048576")
	}
	*b = byteSize(n * mult)
	return nil
}

func (b *byteSize) Type() string { return "size" }
