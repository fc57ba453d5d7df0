package datadir

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/storage/wal"
	"go.etcd.io/etcd/server/v3/storage/wal/walpb"
	"go.etcd.io/raft/v3/raftpb"
	"go.uber.org/zap"
)

// writeWAL writes a WAL of n entries into dataDir/member/wal with etcd's own WAL writer, in
// segments of segmentBytes (etcd's are 64 MB), and returns the segments' paths.
func writeWAL(t *testing.T, dataDir string, n int, segmentBytes int64) []string {
	t.Helper()
	// wal.SegmentSizeBytes is etcd's knob for its own tests; nothing else in this package's
	// tests uses etcd's WAL code in this process.
	old := wal.SegmentSizeBytes
	wal.SegmentSizeBytes = segmentBytes
	defer func() { wal.SegmentSizeBytes = old }()

	dir := filepath.Join(dataDir, "member", "wal")
	require.NoError(t, os.MkdirAll(filepath.Dir(dir), 0o700))
	md, err := (&etcdserverpb.Metadata{NodeID: 0x1234, ClusterID: 0x5678}).Marshal()
	require.NoError(t, err)
	w, err := wal.Create(zap.NewNop(), dir, md)
	require.NoError(t, err)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 1; i <= n; i++ {
		data := make([]byte, 20+rng.IntN(700))
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		st := raftpb.HardState{Term: 1, Vote: 1, Commit: uint64(i - 1)}
		require.NoError(t, w.Save(st, []raftpb.Entry{{Term: 1, Index: uint64(i), Data: data}}))
	}
	require.NoError(t, w.Close())
	segs, err := filepath.Glob(filepath.Join(dir, "*.wal"))
	require.NoError(t, err)
	return segs
}

// copyTree copies the files of src into dst, which must not exist.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	require.NoError(t, os.CopyFS(dst, os.DirFS(src)))
}

// etcdWAL is what etcd's own code makes of a WAL folder on start.
type etcdWAL struct {
	ok, repaired      bool
	lastIndex, commit uint64
	why               string
}

// etcdReadsWAL does what etcd does with the WAL on start (etcdserver's recoverSnapshot and
// openWALFromSnapshot, with no snapshot): ValidSnapshotEntries, then Open and ReadAll, and on
// io.ErrUnexpectedEOF, Repair once and read again. It changes the folder as etcd would.
func etcdReadsWAL(dir string) (res etcdWAL) {
	defer func() {
		if p := recover(); p != nil {
			res = etcdWAL{why: fmt.Sprint("panic: ", p)}
		}
	}()
	lg := zap.NewNop()
	if _, err := wal.ValidSnapshotEntries(lg, dir); err != nil {
		return etcdWAL{why: err.Error()}
	}
	for repaired := false; ; repaired = true {
		w, err := wal.Open(lg, dir, walpb.Snapshot{})
		if err != nil {
			return etcdWAL{why: err.Error()}
		}
		_, st, ents, err := w.ReadAll()
		_ = w.Close()
		if err != nil {
			if repaired || !errors.Is(err, io.ErrUnexpectedEOF) {
				return etcdWAL{why: err.Error()}
			}
			if !wal.Repair(lg, dir) {
				return etcdWAL{why: "repair failed: " + err.Error()}
			}
			continue
		}
		res = etcdWAL{ok: true, repaired: repaired, commit: st.Commit}
		if len(ents) > 0 {
			res.lastIndex = ents[len(ents)-1].Index
		}
		return res
	}
}

// walFault is damage done to a WAL folder.
type walFault struct {
	name  string
	apply func(t *testing.T, walDir string)
}

// walFaults returns faults spread over every segment of the WAL written by writeWAL: flipped
// bytes, zeroed sectors and unaligned 512-byte runs, truncations (with and without a zeroed
// last 512 bytes) and a missing segment, at positions drawn from a fixed seed.
func walFaults(t *testing.T, segs []string) []walFault {
	t.Helper()
	rng := rand.New(rand.NewPCG(3, 4))
	faults := []walFault{{"no damage", func(*testing.T, string) {}}}
	for si, seg := range segs {
		name := filepath.Base(seg)
		frames := walFrames(t, readFile(t, seg))
		written := frames[len(frames)-1].End
		at := func(n int64) int64 { return rng.Int64N(n) }
		for range 10 {
			off := at(written)
			faults = append(faults, walFault{fmt.Sprintf("%s: byte %d flipped", name, off), func(t *testing.T, dir string) {
				p := filepath.Join(dir, name)
				writeAt(t, p, off, []byte{readFile(t, p)[off] ^ 0xff})
			}})
		}
		for range 4 {
			off := at(written) &^ 511
			faults = append(faults, walFault{fmt.Sprintf("%s: sector at %d zeroed", name, off), func(t *testing.T, dir string) {
				writeAt(t, filepath.Join(dir, name), off, make([]byte, 512))
			}})
		}
		for range 3 {
			off := at(written - 512)
			faults = append(faults, walFault{fmt.Sprintf("%s: 512 bytes at %d zeroed", name, off), func(t *testing.T, dir string) {
				writeAt(t, filepath.Join(dir, name), off, make([]byte, 512))
			}})
		}
		for range 3 {
			off := 512 + at(written-512)
			zero := rng.IntN(2) == 0
			faults = append(faults, walFault{fmt.Sprintf("%s: cut at %d, zeroed last 512 bytes %v", name, off, zero), func(t *testing.T, dir string) {
				p := filepath.Join(dir, name)
				truncate(t, p, off)
				if zero {
					writeAt(t, p, off-512, make([]byte, 512))
				}
			}})
		}
		for _, f := range frames[len(frames)/2:] {
			if f.End > f.Off+8+f.RecBytes {
				off := f.End - 1
				faults = append(faults, walFault{fmt.Sprintf("%s: padding byte %d flipped", name, off), func(t *testing.T, dir string) {
					writeAt(t, filepath.Join(dir, name), off, []byte{0xff})
				}})
				break
			}
		}
		last := frames[len(frames)-1]
		cut := last.Off + 8 + last.RecBytes/2
		faults = append(faults, walFault{fmt.Sprintf("%s: last record cut short at %d", name, cut), func(t *testing.T, dir string) {
			truncate(t, filepath.Join(dir, name), cut)
		}})
		if si == len(segs)-1 {
			// The tail, where power cuts strike: cuts and zeroed sectors in the last records, and
			// stray bytes in the preallocated space after them.
			for range 12 {
				off := written - 1 - at(4096)
				zero := rng.IntN(2) == 0
				faults = append(faults, walFault{fmt.Sprintf("%s: cut at %d near the end, zeroed last 512 bytes %v", name, off, zero), func(t *testing.T, dir string) {
					p := filepath.Join(dir, name)
					truncate(t, p, off)
					if zero {
						writeAt(t, p, off-512, make([]byte, 512))
					}
				}})
			}
			for range 4 {
				off := (written - 1 - at(2048)) &^ 511
				faults = append(faults, walFault{fmt.Sprintf("%s: sector at %d near the end zeroed", name, off), func(t *testing.T, dir string) {
					writeAt(t, filepath.Join(dir, name), off, make([]byte, 512))
				}})
			}
			for _, gap := range []int64{0, 8, 700} {
				off := written + gap
				faults = append(faults, walFault{fmt.Sprintf("%s: stray bytes at %d after the records", name, off), func(t *testing.T, dir string) {
					writeAt(t, filepath.Join(dir, name), off, []byte{1, 2, 3})
				}})
			}
		}
		if si > 0 && si < len(segs)-1 {
			faults = append(faults, walFault{fmt.Sprintf("%s: removed", name), func(t *testing.T, dir string) {
				require.NoError(t, os.Remove(filepath.Join(dir, name)))
			}})
		}
	}
	return faults
}

// TestWALAgreesWithEtcd damages a WAL written by etcd's own code in many ways and checks that
// Inspect predicts what etcd's own reading code (the start-up sequence, in process) does: fail,
// or read it to the same last entry and commit index, repairing a torn tail on the way.
func TestWALAgreesWithEtcd(t *testing.T) {
	base := t.TempDir()
	segs := writeWAL(t, base, 400, 32*1024)
	require.GreaterOrEqual(t, len(segs), 4)

	clean := inspect(t, base)
	require.True(t, clean.WAL.OK)
	require.False(t, clean.WAL.TornTail)
	require.Equal(t, uint64(400), clean.WAL.LastIndex)
	require.Equal(t, uint64(399), clean.WAL.Commit)
	require.Equal(t, uint64(0x1234), clean.WAL.MemberID)
	require.Equal(t, uint64(0x5678), clean.WAL.ClusterID)
	require.Len(t, clean.WAL.Segments, len(segs))

	counts := map[string]int{}
	for _, f := range walFaults(t, segs) {
		t.Run(f.name, func(t *testing.T) {
			dataDir := filepath.Join(t.TempDir(), "data")
			copyTree(t, base, dataDir)
			walDir := filepath.Join(dataDir, "member", "wal")
			f.apply(t, walDir)
			w := inspect(t, dataDir).WAL
			e := etcdReadsWAL(walDir)
			switch {
			case w.Corrupt && w.DroppedRecords == 0:
				counts["corrupt"]++
				require.False(t, e.ok, "etcd reads a WAL Inspect calls corrupt (%s)", w.Err)
				require.NotEmpty(t, w.CorruptFile)
			case w.Corrupt:
				counts["etcd drops intact records"]++
				require.True(t, e.ok, "etcd fails (%s) where Inspect says it drops intact records", e.why)
			case w.TornTail:
				counts["torn tail"]++
				require.True(t, w.OK)
				require.True(t, e.ok, "etcd fails (%s) on a torn tail", e.why)
			default:
				counts["intact"]++
				require.True(t, w.OK)
				require.True(t, e.ok, "etcd fails (%s) on a WAL Inspect calls intact", e.why)
				require.False(t, e.repaired)
			}
			if e.ok {
				require.Equal(t, e.lastIndex, w.LastIndex, "last entry")
				require.Equal(t, e.commit, w.Commit, "commit index")
			}
		})
	}
	t.Logf("outcomes: %v", counts)
}

// TestInspectHonoursContext: an inspection whose context is done reads no further segment and
// reports nothing (no finding that could be taken for damage), only the context's error.
func TestInspectHonoursContext(t *testing.T) {
	dir := t.TempDir()
	segs := writeWAL(t, dir, 400, 32*1024)
	require.Greater(t, len(segs), 2)
	r, err := Inspect(t.Context(), dir)
	require.NoError(t, err)
	require.Equal(t, uint64(400), r.WAL.LastIndex)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	r, err = Inspect(ctx, dir)
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, Report{Dir: dir}, r, "nothing half-read is reported")
	s := scanWAL(ctx, filepath.Join(dir, "member", "wal"))
	require.Zero(t, s.state.LastIndex, "no segment is read once the context is done")
}
