package datadir

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.etcd.io/bbolt"
)

// boltCheckEnv names the database the test binary checks with bbolt when run as a helper
// process (see TestBoltCheckHelper).
const boltCheckEnv = "DATADIR_TEST_BOLT_CHECK"

// boltModeEnv says what the helper process does: "check" (bbolt's Check, read-only) or "etcd"
// (open read-write with the freelist not synced, as etcd does, which rebuilds the freelist).
const boltModeEnv = "DATADIR_TEST_BOLT_MODE"

// TestBoltCheckHelper is not a test: run as a child process with boltCheckEnv set, it opens
// the database as boltModeEnv says, reads every key of every bucket, as etcd does on start, and
// exits 0 if all is well, 1 if bbolt reported problems, or dies (exit 2) if bbolt panicked
// where no one can recover.
func TestBoltCheckHelper(t *testing.T) {
	path := os.Getenv(boltCheckEnv)
	if path == "" {
		t.Skip("helper process only")
	}
	etcd := os.Getenv(boltModeEnv) == "etcd"
	opts := &bbolt.Options{ReadOnly: true}
	if etcd {
		opts = &bbolt.Options{NoFreelistSync: true}
	}
	db, err := bbolt.Open(path, 0o600, opts)
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	bad := false
	err = db.View(func(tx *bbolt.Tx) error {
		if !etcd {
			for err := range tx.Check(bbolt.WithKVStringer(redacted{})) {
				fmt.Println("check:", err)
				bad = true
			}
		}
		return tx.ForEach(func(_ []byte, b *bbolt.Bucket) error { return readBucket(b) })
	})
	if err != nil || bad {
		fmt.Println("view:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func readBucket(b *bbolt.Bucket) error {
	return b.ForEach(func(k, v []byte) error {
		if v == nil {
			if child := b.Bucket(k); child != nil {
				return readBucket(child)
			}
		}
		return nil
	})
}

// boltVerdict runs bbolt on path in a child process, in mode "check" or "etcd" (see
// boltModeEnv): 0 (sound), 1 (problems reported) or 2 (bbolt crashed the process).
func boltVerdict(t *testing.T, path, mode string) (int, string) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestBoltCheckHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), boltCheckEnv+"="+path, boltModeEnv+"="+mode)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &exit) && exit.ExitCode() == 1:
		return 1, string(out)
	case errors.As(err, &exit):
		return 2, string(out)
	}
	require.NoError(t, err)
	return -1, ""
}

// writeBoltDB writes a database laid out as etcd's (the key and meta buckets, more buckets,
// freelist not synced) with bbolt itself, and returns its page size and number of pages.
func writeBoltDB(t *testing.T, path string, keys int) (pageSize int, pages uint64) {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{NoFreelistSync: true})
	require.NoError(t, err)
	rng := rand.New(rand.NewPCG(5, 6))
	require.NoError(t, db.Update(func(tx *bbolt.Tx) error {
		kb, err := tx.CreateBucket(keyBucketName)
		require.NoError(t, err)
		for i := 1; i <= keys; i++ {
			k := make([]byte, 17)
			binary.BigEndian.PutUint64(k, uint64(i))
			k[8] = '_'
			require.NoError(t, kb.Put(k, make([]byte, 50+rng.IntN(400))))
		}
		mb, err := tx.CreateBucket(metaBucketName)
		require.NoError(t, err)
		ci := binary.BigEndian.AppendUint64(nil, uint64(keys+10))
		require.NoError(t, mb.Put([]byte(consistentIndexKey), ci))
		require.NoError(t, mb.Put([]byte(termKey), binary.BigEndian.AppendUint64(nil, 3)))
		members, err := tx.CreateBucket([]byte("members"))
		require.NoError(t, err)
		return members.Put([]byte("1"), []byte(`{"id":1}`))
	}))
	// A second transaction, so that pages are freed and both meta pages are in use.
	require.NoError(t, db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(keyBucketName).Delete(binary.BigEndian.AppendUint64(nil, 1))
	}))
	pageSize = db.Info().PageSize
	require.NoError(t, db.View(func(tx *bbolt.Tx) error {
		pages = uint64(tx.Size()) / uint64(pageSize)
		return nil
	}))
	require.NoError(t, db.Close())
	return pageSize, pages
}

// TestDBNeverCrashes damages a database in many ways and checks that Inspect neither panics nor
// calls a database OK that bbolt, in a child process, finds damaged or crashes on, whether it
// checks it or opens it as etcd does; it also shows that bbolt crashes (unrecoverably) on most.
func TestDBNeverCrashes(t *testing.T) {
	base := filepath.Join(t.TempDir(), "db")
	ps, pages := writeBoltDB(t, base, 3000)
	require.Greater(t, pages, uint64(50))

	clean, err := InspectDB(t.Context(), base)
	require.NoError(t, err)
	require.True(t, clean.OK, clean.Err)
	require.Equal(t, int64(3000), clean.Revision)
	require.Equal(t, uint64(3010), clean.ConsistentIndex)
	require.Equal(t, uint64(3), clean.Term)

	rng := rand.New(rand.NewPCG(7, 8))
	type fault struct {
		name  string
		apply func(t *testing.T, path string)
	}
	zeroPage := func(id uint64) func(*testing.T, string) {
		return func(t *testing.T, path string) { writeAt(t, path, int64(id)*int64(ps), make([]byte, ps)) }
	}
	faults := []fault{
		{"no damage", func(*testing.T, string) {}},
		{"meta page 0 zeroed", zeroPage(0)},
		{"meta page 1 zeroed", zeroPage(1)},
		{"both meta pages zeroed", func(t *testing.T, path string) { zeroPage(0)(t, path); zeroPage(1)(t, path) }},
		{"cut to half", func(t *testing.T, path string) { truncate(t, path, int64(pages/2)*int64(ps)) }},
		{"cut to one page", func(t *testing.T, path string) { truncate(t, path, int64(ps)) }},
	}
	for range 25 {
		id := 2 + rng.Uint64N(pages-2)
		faults = append(faults, fault{fmt.Sprintf("page %d zeroed", id), zeroPage(id)})
	}
	for range 40 {
		id := 2 + rng.Uint64N(pages-2)
		// Mostly in the page header and the element table, where damage misleads a reader.
		off := int64(id)*int64(ps) + rng.Int64N(int64(ps)/8)
		bit := byte(1) << rng.IntN(8)
		faults = append(faults, fault{fmt.Sprintf("bit flipped at %d (page %d)", off, id), func(t *testing.T, path string) {
			writeAt(t, path, off, []byte{readFile(t, path)[off] ^ bit})
		}})
	}
	counts := map[string]int{}
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			dataDir := t.TempDir()
			path := filepath.Join(dataDir, "member", "snap", "db")
			require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o700))
			require.NoError(t, os.WriteFile(path, readFile(t, base), 0o600))
			f.apply(t, path)
			r := inspect(t, dataDir)
			require.NotContains(t, r.DB.Err, "panicked")
			bolt, out := boltVerdict(t, path, "check")
			verdicts := []string{"sound", "reports problems", "crashes"}
			counts[fmt.Sprintf("inspect OK %v, bbolt check %s", r.DB.OK, verdicts[bolt])]++
			if !r.DB.OK {
				require.NotEmpty(t, r.DB.Err)
				if bolt == 2 {
					require.True(t, strings.Contains(out, "panic") || strings.Contains(out, "fatal"), out)
				}
				return
			}
			if !r.DB.BoltCheckSkipped {
				require.Zero(t, bolt, "Inspect calls a database OK that bbolt's check does not:\n%s", out)
			}
			// What etcd does: open it read-write (a copy), rebuilding the freelist, and read it.
			etcdCopy := filepath.Join(t.TempDir(), "db")
			require.NoError(t, os.WriteFile(etcdCopy, readFile(t, path), 0o600))
			bolt, out = boltVerdict(t, etcdCopy, "etcd")
			require.Zero(t, bolt, "Inspect calls a database OK that bbolt fails to open as etcd does:\n%s", out)
		})
	}
	t.Logf("outcomes: %v", counts)
}
