package datadir

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/bbolt"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdguard/etcdguard/internal/testcluster"
	"github.com/etcdguard/etcdguard/internal/testenv"
)

// bigValueSize is the size of the value written last, so that the WAL's last entry spans
// several 512-byte sectors.
const bigValueSize = 3000

// killed is a member killed by killedMember, and what was written to it.
type killed struct {
	m *testcluster.Member
	// lastRev is the revision of the last write; compactRev, that of the compaction before it.
	lastRev, compactRev int64
}

// killedMember starts a one-member cluster with a small snapshot count, writes 250 keys,
// compacts, writes a large key and kills the member (SIGKILL), as a power cut would. The
// cluster is closed when the test ends.
//
// --backend-batch-limit=1 makes etcd commit the database after every write, so that the
// database's revision is the last write's when the member is killed; with the default batching
// (100 ms) the database lags and etcd replays the rest from the WAL on start.
func killedMember(t *testing.T, version string) killed {
	t.Helper()
	c, err := testcluster.Start(t.Context(), testcluster.Options{
		Size:          1,
		Command:       []string{testenv.Etcd(t, version, "etcd")},
		Dir:           t.TempDir(),
		SnapshotCount: 100,
		ExtraArgs:     []string{"--backend-batch-limit=1"},
	})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	cli, err := c.Client(t.Context())
	require.NoError(t, err)
	defer cli.Close()
	var k killed
	for i := range 250 {
		resp, err := cli.Put(t.Context(), fmt.Sprintf("key-%03d", i), strings.Repeat("v", 100))
		require.NoError(t, err)
		if i == 100 {
			k.compactRev = resp.Header.Revision
		}
	}
	_, err = cli.Compact(t.Context(), k.compactRev, clientv3.WithCompactPhysical())
	require.NoError(t, err)
	resp, err := cli.Put(t.Context(), "big", strings.Repeat("b", bigValueSize))
	require.NoError(t, err)
	k.m, k.lastRev = c.Members()[0], resp.Header.Revision
	require.NoError(t, k.m.Kill())
	return k
}

// walFrame is one record's frame in a WAL segment, found without the code under test.
type walFrame = testcluster.WALFrame

// walFrames lists the frames of a WAL segment up to the first zero length.
func walFrames(t *testing.T, data []byte) []walFrame {
	t.Helper()
	frames, err := testcluster.WALFrames(data)
	require.NoError(t, err)
	require.Greater(t, len(frames), 10)
	return frames
}

// lastSegment returns the path of the member's last WAL segment.
func lastSegment(t *testing.T, dataDir string) string {
	t.Helper()
	segs, err := filepath.Glob(filepath.Join(dataDir, "member", "wal", "*.wal"))
	require.NoError(t, err)
	require.NotEmpty(t, segs)
	return segs[len(segs)-1]
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}

// truncate cuts path to size bytes.
func truncate(t *testing.T, path string, size int64) {
	t.Helper()
	require.NoError(t, os.Truncate(path, size))
}

// writeAt overwrites bytes of path at off.
func writeAt(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteAt(b, off)
	require.NoError(t, err)
	require.NoError(t, f.Close())
}

// fileSums maps every file under dir to its SHA-256 (and every folder to "dir").
func fileSums(t *testing.T, dir string) map[string]string {
	t.Helper()
	sums := map[string]string{}
	if _, err := os.Stat(dir); os.IsNotExist(err) {
		return sums
	}
	require.NoError(t, filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			sums[path] = "dir"
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		s := sha256.Sum256(b)
		sums[path] = hex.EncodeToString(s[:])
		return nil
	}))
	return sums
}

// inspect runs Inspect and checks that it left every file as it was, added none and removed none.
func inspect(t *testing.T, dir string) Report {
	t.Helper()
	before := fileSums(t, dir)
	r, err := Inspect(t.Context(), dir)
	require.NoError(t, err)
	require.Equal(t, before, fileSums(t, dir), "Inspect changed the data folder")
	return r
}

// logSince returns what the member logged after offset off of its log file.
func logSince(t *testing.T, m *testcluster.Member, off int64) string {
	t.Helper()
	log, err := m.LogSince(off)
	require.NoError(t, err)
	return log
}

// logLines returns the lines of log that contain any of words.
func logLines(log string, words ...string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		for _, w := range words {
			if strings.Contains(sc.Text(), w) {
				out = append(out, sc.Text())
				break
			}
		}
	}
	return out
}

func logSize(t *testing.T, m *testcluster.Member) int64 {
	t.Helper()
	n, err := m.LogSize()
	require.NoError(t, err)
	return n
}

// damage is what a test case does to a killed member's data folder; it returns what the checks
// need to know about it.
type damage struct {
	file string // the file damaged
	off  int64  // where: a WAL frame's offset, or a database page id
}

func TestInspectRealDataDir(t *testing.T) {
	tests := []struct {
		name    string
		damage  func(t *testing.T, dataDir string) damage
		check   func(t *testing.T, r Report, d damage)
		verdict Verdict
		// etcd is what etcd does when restarted on the folder.
		etcd etcdOutcome
		// logs are words etcd's log must hold after the restart; absentLogs, words it must not.
		logs, absentLogs []string
		// started, if set, checks the folder after etcd started on it.
		started func(t *testing.T, d damage)
	}{
		{
			name: "killed",
			check: func(t *testing.T, r Report, _ damage) {
				require.True(t, r.Intact())
				require.Empty(t, r.Problems)
				require.False(t, r.WAL.TornTail)
				require.NotEmpty(t, r.Snap.Newest, "snapshot count 100 and 250 writes leave .snap files")
				require.NotZero(t, r.Snap.NewestIndex)
				require.LessOrEqual(t, r.Snap.NewestIndex, r.DB.ConsistentIndex)
			},
			verdict: VerdictStarts,
			etcd:    etcdStarts,
		},
		{
			name: "torn tail: last record cut short",
			damage: func(t *testing.T, dataDir string) damage {
				seg := lastSegment(t, dataDir)
				frames := walFrames(t, readFile(t, seg))
				last := frames[len(frames)-1]
				truncate(t, seg, last.Off+8+last.RecBytes/2)
				return damage{file: seg, off: last.Off}
			},
			check: func(t *testing.T, r Report, d damage) {
				require.True(t, r.Intact())
				require.True(t, r.WAL.TornTail)
				require.False(t, r.WAL.Corrupt)
				require.Equal(t, d.off, r.WAL.TornTailOffset)
				require.Positive(t, r.WAL.TornTailBytes)
			},
			verdict: VerdictSelfRepairs,
			etcd:    etcdStarts,
			logs:    []string{"repairing", "repaired WAL"},
		},
		{
			// The last segment is cut inside a record at a non-512 boundary and its last 512
			// bytes are zeroed, as a torn sector leaves it. When the final record is small (etcd
			// 3.5 ends with a HardState record), the zeroes reach back into the large entry before
			// it: its CRC no longer matches, but one of its sectors is all zeroes, which etcd takes
			// for a torn write and truncates.
			name: "torn tail: cut short, last 512 bytes zeroed",
			damage: func(t *testing.T, dataDir string) damage {
				seg := lastSegment(t, dataDir)
				frames := walFrames(t, readFile(t, seg))
				last, bigAt := frames[len(frames)-1], len(frames)-1
				for frames[bigAt].RecBytes <= bigValueSize {
					bigAt--
				}
				big := frames[bigAt]
				require.GreaterOrEqual(t, bigAt, len(frames)-2, "the big write is one of the last two records")
				// Cut the final record after its first byte, if etcd reads the zeroes that reach
				// into big as a torn sector: a sector of big must lie inside them, which it does
				// unless big ends on a sector boundary. Else cut inside big, far enough for the
				// zeroes to stay in it.
				cut := last.Off + 1
				if bigAt == len(frames)-1 || big.End%512 == 0 {
					cut = big.Off + 8 + 1001
				}
				if cut%512 == 0 {
					cut++
				}
				require.NotZero(t, cut%512)
				truncate(t, seg, cut)
				writeAt(t, seg, cut-512, make([]byte, 512))
				return damage{file: seg, off: big.Off}
			},
			check: func(t *testing.T, r Report, d damage) {
				require.True(t, r.Intact())
				require.True(t, r.WAL.TornTail)
				require.Equal(t, d.off, r.WAL.TornTailOffset)
				require.Positive(t, r.WAL.TornTailBytes)
			},
			verdict: VerdictSelfRepairs,
			etcd:    etcdStarts,
			logs:    []string{"repairing", "repaired WAL"},
		},
		{
			// A byte flipped in a record in the middle of the log: the CRC chain breaks
			// before the tail, which etcd refuses to start on.
			name: "flipped byte mid-log",
			damage: func(t *testing.T, dataDir string) damage {
				seg := lastSegment(t, dataDir)
				data := readFile(t, seg)
				frames := walFrames(t, data)
				// A record well before the tail whose bytes lie in one sector and are not all
				// zero: etcd cannot mistake its damage for a torn write.
				for _, f := range frames[len(frames)/3:] {
					if (f.Off+8)/512 == (f.End-1)/512 && f.RecBytes > 16 {
						at := f.Off + 8 + f.RecBytes - 1 // the last byte of the record's data
						writeAt(t, seg, at, []byte{data[at] ^ 0xff})
						return damage{file: seg, off: f.Off}
					}
				}
				require.Fail(t, "no record to damage")
				return damage{}
			},
			check: func(t *testing.T, r Report, d damage) {
				require.False(t, r.Intact())
				require.True(t, r.WAL.Corrupt)
				require.False(t, r.WAL.TornTail)
				require.Equal(t, filepath.Base(d.file), r.WAL.CorruptFile)
				require.Equal(t, d.off, r.WAL.CorruptOffset)
				require.Contains(t, r.WAL.Err, "crc mismatch")
				require.Contains(t, r.WAL.Err, fmt.Sprintf("offset %d", d.off))
				require.True(t, r.DB.OK)
			},
			verdict: VerdictDamaged,
			etcd:    etcdFails,
			logs:    []string{"crc mismatch"},
		},
		{
			// A zeroed sector in the middle of the last segment, inside a record: etcd takes it
			// for a torn write and truncates the log there, dropping every intact record after
			// it. It then runs with a raft log behind its database: its new entries get indexes
			// the database has already applied, so etcd skips them, and writes (and, in 3.6, the
			// member's own start-up request) time out.
			name: "zeroed sector mid-log",
			damage: func(t *testing.T, dataDir string) damage {
				seg := lastSegment(t, dataDir)
				frames := walFrames(t, readFile(t, seg))
				starts := map[int64]bool{}
				for _, f := range frames {
					starts[f.Off] = true
				}
				sector := (frames[len(frames)/2].Off + 511) &^ 511
				for starts[sector] {
					sector += 512
				}
				writeAt(t, seg, sector, make([]byte, 512))
				return damage{file: seg, off: frameAt(t, frames, sector).Off}
			},
			check:   requireDroppedRecords,
			verdict: VerdictDamaged,
			etcd:    etcdUnusable,
			logs:    []string{"repairing", "repaired WAL"},
		},
		{
			// 512 zeroed bytes in the middle of the last segment, from the start of a record:
			// etcd reads the zero length as the end of the log and, without a word in its log,
			// zeroes the rest of the segment, with every intact record in it.
			name: "zeroed record start mid-log",
			damage: func(t *testing.T, dataDir string) damage {
				seg := lastSegment(t, dataDir)
				frames := walFrames(t, readFile(t, seg))
				f := frames[len(frames)/2]
				writeAt(t, seg, f.Off, make([]byte, 512))
				return damage{file: seg, off: f.Off}
			},
			check:      requireDroppedRecords,
			verdict:    VerdictDamaged,
			etcd:       etcdUnusable,
			absentLogs: []string{"repair"},
		},
		{
			// The newest .snap file damaged: etcd renames it to .broken and starts from the one
			// before, replaying more of the WAL.
			name: "newest .snap file damaged",
			damage: func(t *testing.T, dataDir string) damage {
				snaps, err := filepath.Glob(filepath.Join(dataDir, "member", "snap", "*.snap"))
				require.NoError(t, err)
				require.GreaterOrEqual(t, len(snaps), 2, "snapshot count 100 and 250 writes leave two .snap files or more")
				sort.Strings(snaps)
				newest := snaps[len(snaps)-1]
				data := readFile(t, newest)
				writeAt(t, newest, int64(len(data)-1), []byte{data[len(data)-1] ^ 0xff})
				return damage{file: newest}
			},
			check: func(t *testing.T, r Report, d damage) {
				require.True(t, r.Intact())
				require.Equal(t, []string{filepath.Base(d.file)}, r.Snap.Broken)
				require.NotEmpty(t, r.Snap.Newest)
				require.Less(t, r.Snap.Newest, filepath.Base(d.file), "an older snapshot")
				require.Contains(t, strings.Join(r.Problems, "\n"), filepath.Base(d.file)+".broken")
				require.Contains(t, strings.Join(r.Problems, "\n"), "CRC mismatch")
			},
			verdict: VerdictStarts,
			etcd:    etcdStarts,
			started: func(t *testing.T, d damage) {
				require.FileExists(t, d.file+".broken", "etcd set the damaged snapshot aside, as doctor said")
			},
		},
		{
			name: "zeroed db page",
			damage: func(t *testing.T, dataDir string) damage {
				path := filepath.Join(dataDir, "member", "snap", "db")
				db, err := bbolt.Open(path, 0o400, &bbolt.Options{ReadOnly: true})
				require.NoError(t, err)
				var root uint64
				require.NoError(t, db.View(func(tx *bbolt.Tx) error {
					root = uint64(tx.Bucket([]byte("key")).Root())
					return nil
				}))
				ps := int64(db.Info().PageSize)
				require.NoError(t, db.Close())
				require.NotZero(t, root, "the key bucket is not inline")
				writeAt(t, path, int64(root)*ps, make([]byte, ps))
				return damage{file: path, off: int64(root)}
			},
			check: func(t *testing.T, r Report, d damage) {
				require.False(t, r.Intact())
				require.False(t, r.DB.OK)
				require.Contains(t, r.DB.BadPages, uint64(d.off))
				require.Contains(t, r.DB.Err, fmt.Sprintf("page %d", d.off))
				require.True(t, r.WAL.OK)
			},
			verdict: VerdictDamaged,
			etcd:    etcdFails,
		},
	}
	for _, version := range testenv.EtcdVersions() {
		for _, tt := range tests {
			t.Run(version+"/"+tt.name, func(t *testing.T) {
				k := killedMember(t, version)
				m, lastRev := k.m, k.lastRev
				var d damage
				if tt.damage != nil {
					d = tt.damage(t, m.DataDir)
				}
				r := inspect(t, m.DataDir)
				for _, p := range r.Problems {
					t.Logf("problem: %s", p)
				}
				require.True(t, r.Exists)
				require.False(t, r.Empty)
				require.True(t, r.DB.Present)
				require.NotEmpty(t, r.WAL.Segments)
				require.NotZero(t, r.WAL.MemberID)
				if r.DB.OK {
					require.Equal(t, 1, r.DB.Voters, "a one-member cluster, as its database records it")
					require.Zero(t, r.DB.Learners)
					require.Equal(t, lastRev, r.DB.Revision)
					require.Equal(t, k.compactRev, r.DB.CompactRevision)
					require.Equal(t, k.compactRev, r.DB.ScheduledCompactRevision)
				}
				if r.DB.OK && r.WAL.OK && !r.WAL.TornTail {
					require.GreaterOrEqual(t, r.WAL.LastIndex, r.DB.ConsistentIndex)
				}
				tt.check(t, r, d)
				require.Equal(t, tt.verdict, r.Verdict())

				// What etcd itself does on the folder.
				ctx := t.Context()
				if tt.etcd == etcdUnusable {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, unusableWait)
					defer cancel()
				}
				logFrom := logSize(t, m)
				err := m.Restart(ctx)
				log := logSince(t, m, logFrom)
				for _, l := range logLines(log, "repair", "crc", "panic", "fatal", "publish") {
					t.Logf("etcd: %s", l)
				}
				for _, w := range tt.logs {
					require.Contains(t, log, w)
				}
				for _, w := range tt.absentLogs {
					require.NotContains(t, log, w)
				}
				switch tt.etcd {
				case etcdFails:
					require.Error(t, err)
					require.False(t, m.Running())
				case etcdUnusable:
					if err != nil {
						t.Logf("etcd did not become healthy: %v", firstLine(err))
						return
					}
					cli := memberClient(t, m)
					_, err = cli.Put(ctx, "after", "restart")
					require.Error(t, err, "etcd applied a write on a raft log behind its database")
					t.Logf("etcd is healthy but a write fails: %v", err)
				case etcdStarts:
					require.NoError(t, err)
					cli := memberClient(t, m)
					resp, err := cli.Get(t.Context(), "big")
					require.NoError(t, err)
					require.Equal(t, lastRev, resp.Header.Revision)
					_, err = cli.Put(t.Context(), "after", "restart")
					require.NoError(t, err)
					resp, err = cli.Get(t.Context(), "after")
					require.NoError(t, err)
					require.Len(t, resp.Kvs, 1)
					if tt.started != nil {
						tt.started(t, d)
					}
				}
			})
		}
	}
}

// requireDroppedRecords checks a report on a WAL damaged in the middle of its last segment.
func requireDroppedRecords(t *testing.T, r Report, d damage) {
	t.Helper()
	require.False(t, r.Intact())
	require.True(t, r.WAL.Corrupt)
	require.False(t, r.WAL.TornTail)
	require.Equal(t, filepath.Base(d.file), r.WAL.CorruptFile)
	require.Equal(t, d.off, r.WAL.CorruptOffset)
	require.Greater(t, r.WAL.DroppedRecords, 100)
	require.Contains(t, r.WAL.Err, "intact records")
}

// frameAt returns the frame that holds byte off.
func frameAt(t *testing.T, frames []walFrame, off int64) walFrame {
	t.Helper()
	for _, f := range frames {
		if f.Off <= off && off < f.End {
			return f
		}
	}
	require.Fail(t, "no frame holds the offset", "offset %d", off)
	return walFrame{}
}

// etcdOutcome is what etcd does when restarted on a data folder.
type etcdOutcome int

const (
	// etcdStarts: etcd becomes healthy, with every write made before the kill, and takes writes.
	etcdStarts etcdOutcome = iota
	// etcdFails: etcd exits.
	etcdFails
	// etcdUnusable: etcd runs but does not become healthy, or does and cannot take writes.
	etcdUnusable
)

// unusableWait bounds how long a test waits for an etcd that runs but cannot apply writes.
const unusableWait = 12 * time.Second

// memberClient returns a client of member m, closed when the test ends.
func memberClient(t *testing.T, m *testcluster.Member) *clientv3.Client {
	t.Helper()
	cli, err := m.Client(t.Context())
	require.NoError(t, err)
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

func TestInspectMissingOrEmpty(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T) string
		exist bool
		empty bool
	}{
		{name: "missing", setup: func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope") }},
		{name: "empty", setup: func(t *testing.T) string { return t.TempDir() }, exist: true, empty: true},
		{name: "empty member folders", setup: func(t *testing.T) string {
			dir := t.TempDir()
			require.NoError(t, os.MkdirAll(filepath.Join(dir, "member", "wal"), 0o700))
			require.NoError(t, os.MkdirAll(filepath.Join(dir, "member", "snap"), 0o700))
			return dir
		}, exist: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := tt.setup(t)
			r := inspect(t, dir)
			require.Equal(t, tt.exist, r.Exists)
			require.Equal(t, tt.empty, r.Empty)
			require.False(t, r.Intact())
			require.Equal(t, VerdictMissing, r.Verdict())
		})
	}
}

func TestInspectRunningMember(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run(version, func(t *testing.T) {
			c, err := testcluster.Start(t.Context(), testcluster.Options{
				Command: []string{testenv.Etcd(t, version, "etcd")},
				Dir:     t.TempDir(),
			})
			require.NoError(t, err)
			t.Cleanup(func() { require.NoError(t, c.Close()) })
			// No check of the files here: the running member writes them.
			r, err := Inspect(t.Context(), c.Members()[0].DataDir)
			require.NoError(t, err)
			require.True(t, r.DB.InUse)
			require.False(t, r.DB.OK)
			require.Contains(t, r.DB.Err, "locked")
			require.Equal(t, VerdictInUse, r.Verdict())
			require.NotZero(t, r.WAL.MemberID)
			require.NotZero(t, r.WAL.ClusterID)
		})
	}
}
