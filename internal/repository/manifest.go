package repository

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path"
	"regexp"
	"strings"
	"time"
)

// FormatVersion is the version of the repository format this code writes. docs/design.md
// describes it.
const FormatVersion = 1

// KindFull is the kind of a full snapshot's manifest (a delta segment's is KindDelta, in its
// own SegmentManifest: see delta.go).
const KindFull = "full"

// Manifest describes one backup. It is written last, after the data object is stored and
// verified: a backup without a manifest is incomplete and never listed.
type Manifest struct {
	Format int    `json:"format"`
	ID     string `json:"id"`
	Kind   string `json:"kind"`

	ClusterID   string `json:"cluster_id"`
	Source      Source `json:"source"`
	EtcdVersion string `json:"etcd_version,omitempty"`
	// StorageVersion is the snapshot's storage version (etcd 3.6 writes one in the database;
	// 3.5 databases have none): the same as Status.Version, at the top for readers that check
	// version skew before a restore.
	StorageVersion string `json:"storage_version,omitempty"`

	// Revision, RaftIndex and RaftTerm are read from the verified snapshot itself.
	Revision  int64  `json:"revision"`
	RaftIndex uint64 `json:"raft_index"`
	RaftTerm  uint64 `json:"raft_term"`

	Started time.Time `json:"started"`
	Created time.Time `json:"created"`

	// DataObject describes the stored snapshot; its fields are the manifest's own in JSON.
	DataObject

	// Status is what etcdutl snapshot status reports for the snapshot.
	Status SnapshotStatus `json:"status"`
	// Verification records the checks the snapshot passed before this manifest was written.
	Verification Verification `json:"verification"`
	// Targets records, for every target of the run, whether the copy was stored.
	Targets []TargetResult `json:"targets"`
}

// DataObject describes a stored data object (a full snapshot's or a delta segment's): the plain
// bytes it decodes to, the object as stored, and how to decode it.
type DataObject struct {
	// RawSize and SHA256 describe the plain data; for a full snapshot, byte for byte what
	// etcdctl snapshot save writes (the bbolt database followed by etcd's SHA-256 trailer).
	RawSize int64  `json:"raw_size"`
	SHA256  string `json:"sha256"`
	// StoredSize and StoredSHA256 describe the data object as stored (compressed, encrypted).
	StoredSize   int64  `json:"stored_size"`
	StoredSHA256 string `json:"stored_sha256"`
	// Data is the data object's name, relative to the repository root.
	Data        string      `json:"data"`
	Compression string      `json:"compression"`
	Encryption  *Encryption `json:"encryption,omitempty"`
}

// Source is the etcd member a snapshot was taken from, and why it was chosen.
type Source struct {
	Endpoint string `json:"endpoint"`
	MemberID string `json:"member_id"`
	Name     string `json:"name,omitempty"`
	IsLeader bool   `json:"is_leader"`
	Reason   string `json:"reason"`
}

// SnapshotStatus mirrors etcdutl snapshot status.
type SnapshotStatus struct {
	Hash     uint32 `json:"hash"`
	Revision int64  `json:"revision"`
	TotalKey int    `json:"total_key"`
	// BumpKeys is the part of TotalKey that clients never see: the empty key etcdutl's revision
	// bump writes (1 in a backup of a cluster restored Kubernetes-safe).
	BumpKeys  int    `json:"bump_keys,omitempty"`
	TotalSize int64  `json:"total_size"`
	Version   string `json:"version,omitempty"`
}

// Verification lists the checks a snapshot passed.
type Verification struct {
	At     time.Time `json:"at"`
	Checks []string  `json:"checks"`
}

// TargetResult is the outcome of storing one copy.
type TargetResult struct {
	Name    string `json:"name"`
	URL     string `json:"url"`
	Media   string `json:"media"`
	Offline bool   `json:"offline,omitempty"`
	// State is "stored", "failed" or "absent" (an offline target that was not mounted).
	State string `json:"state"`
	Error string `json:"error,omitempty"`
	// ErrorKind says what kind of failure Error is, when the backend named it (backend.Kind:
	// "no_space", "denied", "unreachable", "unavailable", ...), so that a report can be read
	// without parsing the message.
	ErrorKind string `json:"error_kind,omitempty"`
	// CopiedFrom names the target a later `snapshot copy` read the data from.
	CopiedFrom string `json:"copied_from,omitempty"`
	// Check says how a copied data object was checked once written: "read-back" (read from the
	// medium and hashed) or "server-crc32c" (an archive storage class, which cannot be read back
	// at once: the server's CRC-32C of the whole object against the one computed while sending).
	Check string `json:"check,omitempty"`
}

// Target result states.
const (
	StateStored = "stored"
	StateFailed = "failed"
	StateAbsent = "absent"
)

// StoredCount returns how many of a run's targets stored their copy.
func StoredCount(ts []TargetResult) int {
	n := 0
	for _, t := range ts {
		if t.State == StateStored {
			n++
		}
	}
	return n
}

var idPattern = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$`)

// NewID returns a new backup id: the UTC time, so ids sort by age, and 8 random hex digits.
func NewID(now time.Time) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return now.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
}

// ValidID reports whether s has the shape of a backup id.
func ValidID(s string) bool { return idPattern.MatchString(s) }

// Object names inside a repository.
const (
	snapshotsDir = "snapshots/"
	locksDir     = "locks/"
	manifestName = "manifest.json"
)

// DataName returns the name of a backup's data object.
func DataName(id string, c Codec) string { return snapshotsDir + id + "/snapshot" + c.Extension() }

// IsDataObject reports whether a name is a backup's data object, the only kind of object an
// archive storage class (GLACIER, DEEP_ARCHIVE) is applied to.
func IsDataObject(name string) bool {
	return strings.HasPrefix(name, snapshotsDir) && strings.HasPrefix(path.Base(name), "snapshot.db")
}

// BackupPrefix returns the prefix of every object of a backup's folder: snapshots/<id>/.
func BackupPrefix(id string) string { return snapshotsDir + id + "/" }

// ManifestName returns the name of a backup's manifest.
func ManifestName(id string) string { return snapshotsDir + id + "/" + manifestName }

// checkManifest checks a manifest read from the folder of backup id. Its id must be the
// folder's and its data object the one its id, compression and encryption imply: a manifest
// that names another backup's data (copied into the wrong folder, edited, or forged) would
// make `snapshot copy` write over that backup, and is never used.
func checkManifest(m Manifest, id string) error {
	if m.Format != FormatVersion {
		return fmt.Errorf("manifest of %s has format %d; this etcdguard reads format %d", id, m.Format, FormatVersion)
	}
	if !ValidID(m.ID) {
		return fmt.Errorf("manifest in %s has an invalid id %q", snapshotsDir+id, m.ID)
	}
	if m.ID != id {
		return fmt.Errorf("manifest in %s has the id %s of another backup: it is not used; remove the folder if it is not a backup", snapshotsDir+id, m.ID)
	}
	want, err := dataNameFor(id, m.Compression, m.Encryption)
	if err != nil {
		return fmt.Errorf("manifest of %s: %w", id, err)
	}
	if m.Data != want {
		return fmt.Errorf("manifest of %s names the data object %q; a backup with its compression and encryption has %s: it is not used", id, m.Data, want)
	}
	return nil
}

// dataNameFor returns the data object's name a backup's id, compression and encryption imply.
func dataNameFor(id, compression string, enc *Encryption) (string, error) {
	ext := ".db"
	switch compression {
	case CompressionZstd:
		ext += ".zst"
	case CompressionNone, "":
	default:
		return "", fmt.Errorf("unknown compression %q", compression)
	}
	if enc != nil {
		if enc.Scheme != "age" {
			return "", fmt.Errorf("unknown encryption scheme %q", enc.Scheme)
		}
		ext += ".age"
	}
	return snapshotsDir + id + "/snapshot" + ext, nil
}
