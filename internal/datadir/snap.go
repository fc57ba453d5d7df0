package datadir

import (
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"go.etcd.io/etcd/server/v3/etcdserver/api/snap/snappb"
	"go.etcd.io/raft/v3/raftpb"
)

// The .snap files are read here rather than with etcd's snap.Snapshotter, whose Load renames a
// file that does not read back to <name>.broken. The format is a snappb.Snapshot (a CRC-32C and
// the data) whose data is a raftpb.Snapshot.

var errEmptySnap = errors.New("empty snapshot")

// inspectSnaps finds the snapshot etcd would start from: the newest .snap file that reads back
// and that the WAL records as committed (etcd's LoadNewestAvailable of ValidSnapshotEntries).
func inspectSnaps(dir string, scan *walScan, db DBState) (st SnapState, problems []string) {
	defer func() {
		if p := recover(); p != nil {
			st.Err = fmt.Sprintf("%s: reading the snapshots panicked: %v", dir, p)
		}
	}()
	entries, err := os.ReadDir(dir)
	if err != nil {
		if !os.IsNotExist(err) {
			st.Err = fmt.Sprintf("%s: cannot list: %v", dir, err)
		}
		return st, nil
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".snap") {
			st.Files = append(st.Files, e.Name())
		}
	}
	sort.Strings(st.Files)

	found := false
	for i := len(st.Files) - 1; i >= 0; i-- {
		name := st.Files[i]
		path := filepath.Join(dir, name)
		meta, err := readSnap(path)
		if err != nil {
			st.Broken = append(st.Broken, name)
			if found {
				problems = append(problems, fmt.Sprintf("%s: does not read back (%v); an older snapshot than the one etcd uses", path, err))
			} else {
				problems = append(problems, fmt.Sprintf("%s: does not read back (%v): etcd renames it to %s.broken on start "+
					"and uses an older snapshot", path, err, name))
			}
			continue
		}
		if found || !walHasSnapshot(scan, meta.Index, meta.Term) {
			continue
		}
		found = true
		st.Newest, st.NewestIndex, st.NewestTerm = name, meta.Index, meta.Term
	}
	sort.Strings(st.Broken)
	if !found || !db.OK && db.Present {
		return st, problems
	}
	var ci uint64
	if db.Present {
		ci = db.ConsistentIndex
	}
	if st.NewestIndex > ci {
		dbSnap := filepath.Join(dir, fmt.Sprintf("%016x.snap.db", st.NewestIndex))
		if _, err := os.Stat(dbSnap); err == nil {
			problems = append(problems, fmt.Sprintf("%s: snapshot index %d is newer than the database's consistent index %d: "+
				"etcd replaces the database with %s on start", filepath.Join(dir, st.Newest), st.NewestIndex, ci, dbSnap))
		} else {
			st.Err = fmt.Sprintf("%s: snapshot index %d is newer than the database's consistent index %d and %s is missing: "+
				"etcd fails on start", filepath.Join(dir, st.Newest), st.NewestIndex, ci, dbSnap)
		}
	}
	return st, problems
}

// walHasSnapshot reports whether the WAL holds a snapshot record (index, term) at or below its
// last commit index, as etcd's ValidSnapshotEntries requires.
func walHasSnapshot(scan *walScan, index, term uint64) bool {
	for _, s := range scan.snaps {
		if s.index == index && s.term == term && s.index <= scan.state.Commit {
			return true
		}
	}
	return false
}

// readSnap reads a .snap file and returns its raft metadata, failing as etcd's snap.Read does.
func readSnap(path string) (raftpb.SnapshotMetadata, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return raftpb.SnapshotMetadata{}, err
	}
	if len(b) == 0 {
		return raftpb.SnapshotMetadata{}, errEmptySnap
	}
	var ser snappb.Snapshot
	if err := ser.Unmarshal(b); err != nil {
		return raftpb.SnapshotMetadata{}, fmt.Errorf("does not decode: %w", err)
	}
	if len(ser.Data) == 0 || ser.Crc == 0 {
		return raftpb.SnapshotMetadata{}, errEmptySnap
	}
	if sum := crc32.Update(0, walCRCTable, ser.Data); sum != ser.Crc {
		return raftpb.SnapshotMetadata{}, fmt.Errorf("CRC mismatch: the file says %08x, its data sums to %08x", ser.Crc, sum)
	}
	var sn raftpb.Snapshot
	if err := sn.Unmarshal(ser.Data); err != nil {
		return raftpb.SnapshotMetadata{}, fmt.Errorf("raft snapshot does not decode: %w", err)
	}
	return sn.Metadata, nil
}
