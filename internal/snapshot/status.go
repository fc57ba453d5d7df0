// Package snapshot takes, checks and describes etcd snapshots: the byte stream etcd's Maintenance
// API sends, which is a bbolt database followed by a SHA-256 trailer.
package snapshot

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"hash/maphash"
	"os"

	"go.etcd.io/bbolt"
	"go.etcd.io/etcd/server/v3/storage/schema"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/etcdguard/etcdguard/internal/datadir"
	"github.com/etcdguard/etcdguard/internal/repository"
)

// ErrCorrupt is returned (wrapped) when a snapshot or a stored copy of it fails a check: a
// checksum, the etcd trailer, bbolt's consistency check, decompression or decryption. It is
// repository.ErrCorrupt, which the decoder returns.
var ErrCorrupt = repository.ErrCorrupt

// Status is what etcdutl snapshot status reports about a snapshot, plus the raft position recorded
// in its meta bucket.
type Status struct {
	// Hash is the CRC-32C of every bucket name, key and value, as etcdutl computes it.
	Hash uint32 `json:"hash"`
	// Revision is the newest revision in the key space.
	Revision int64 `json:"revision"`
	// TotalKey is the number of live keys (each key counted once, deleted keys not counted).
	TotalKey int `json:"total_key"`
	// BumpKeys counts, among TotalKey, the empty key of etcdutl's revision bump (1 in a snapshot
	// of a cluster restored Kubernetes-safe, else 0): etcdutl counts it, clients never see it, so
	// a recovery expects TotalKey - BumpKeys keys to be served.
	BumpKeys int `json:"bump_keys,omitempty"`
	// TotalSize is the size of the bbolt database in bytes.
	TotalSize int64 `json:"total_size"`
	// Version is the storage version recorded by etcd 3.6 and later; empty for older snapshots.
	Version string `json:"version,omitempty"`
	// ConsistentIndex and Term are the raft index and term the snapshot's state reflects.
	ConsistentIndex uint64 `json:"consistent_index"`
	Term            uint64 `json:"term"`
}

// ReadStatus opens the bbolt database at path read-only, runs bbolt's consistency check, and
// computes the same hash, revision, key count and size that etcdutl snapshot status reports.
// Its errors never contain keys or values. Memory grows with the number of live keys by a small
// fixed amount per key (a 128-bit digest), not with their size.
func ReadStatus(ctx context.Context, path string) (Status, error) {
	var st Status
	if _, err := os.Stat(path); err != nil {
		return st, fmt.Errorf("read snapshot status: %w", err)
	}
	// Walk the pages first: bbolt panics, in goroutines of its own where no one can recover, on
	// damaged pages. InspectDB runs bbolt's consistency check only once the walk found every page
	// sound, so a damaged snapshot is reported, naming its pages, instead of crashing etcdguard.
	dbs, err := datadir.InspectDB(ctx, path)
	if err != nil {
		return st, fmt.Errorf("read snapshot status of %s: %w", path, err)
	}
	if !dbs.OK {
		return st, fmt.Errorf("%w: %s: %s", ErrCorrupt, path, firstNonEmpty(dbs.Err, "the database failed its checks"))
	}
	db, err := bbolt.Open(path, 0o400, &bbolt.Options{ReadOnly: true})
	if err != nil {
		return st, fmt.Errorf("open %s as an etcd database: %w: %w", path, ErrCorrupt, err)
	}
	defer db.Close()

	err = db.View(func(tx *bbolt.Tx) error {
		st.TotalSize = tx.Size()
		if tx.Bucket(schema.Meta.Name()) == nil {
			return fmt.Errorf("%w: %s has no meta bucket: it is not an etcd database", ErrCorrupt, path)
		}
		if v := schema.ReadStorageVersionFromSnapshot(tx); v != nil {
			st.Version = v.String()
		}
		return hashBuckets(ctx, tx, &st)
	})
	if err != nil {
		return Status{}, err
	}
	return st, nil
}

// recordKey returns the key of an mvccpb.KeyValue record (protobuf field 1) without decoding
// the rest, so that values, which can be large, are neither copied nor ever part of an error.
func recordKey(rec []byte) ([]byte, bool) {
	for len(rec) > 0 {
		num, typ, n := protowire.ConsumeTag(rec)
		if n < 0 {
			return nil, false
		}
		rec = rec[n:]
		if num == 1 && typ == protowire.BytesType {
			key, m := protowire.ConsumeBytes(rec)
			return key, m >= 0
		}
		m := protowire.ConsumeFieldValue(num, typ, rec)
		if m < 0 {
			return nil, false
		}
		rec = rec[m:]
	}
	return nil, false
}

// isBumpEntry reports whether a record of the key bucket is the one etcdutl's revision bump
// writes (snapshot restore with RevisionBump and MarkCompacted, as etcdguard's Kubernetes-safe
// restore does): a plain revision key, main revision the bumped one, sub revision 0, no tombstone
// mark, and an empty value instead of an mvccpb.KeyValue record. etcd itself keeps that entry, so
// it is in every later snapshot of a restored cluster. Nothing else without a record is accepted.
func isBumpEntry(k, v []byte) bool {
	return len(v) == 0 && len(k) == 17 && k[8] == '_' && binary.BigEndian.Uint64(k[9:17]) == 0
}

// keyDigest identifies a key by two independent 64-bit hashes, so that counting distinct keys
// needs 16 bytes per key whatever the key's length.
type keyDigest [2]uint64

func hashBuckets(ctx context.Context, tx *bbolt.Tx, st *Status) error {
	h := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	seeds := [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}
	live := make(map[keyDigest]struct{})
	keyBucket := schema.Key.Name()
	metaBucket := schema.Meta.Name()

	c := tx.Cursor()
	for name, _ := c.First(); name != nil; name, _ = c.Next() {
		b := tx.Bucket(name)
		if b == nil {
			return fmt.Errorf("%w: bucket %q is not a bucket", ErrCorrupt, name)
		}
		h.Write(name)
		isKey := bytes.Equal(name, keyBucket)
		isMeta := bytes.Equal(name, metaBucket)
		seen := 0
		err := b.ForEach(func(k, v []byte) error {
			if seen++; seen%4096 == 0 && ctx.Err() != nil {
				return ctx.Err()
			}
			h.Write(k)
			h.Write(v)
			switch {
			case isKey:
				// A revision key is 8 bytes main, '_', 8 bytes sub, and 't' for a tombstone.
				if len(k) < 17 {
					return fmt.Errorf("%w: a revision key in bucket %q is %d bytes long, want at least 17", ErrCorrupt, name, len(k))
				}
				st.Revision = int64(binary.BigEndian.Uint64(k[:8]))
				key, ok := recordKey(v)
				if !ok && isBumpEntry(k, v) {
					// etcdutl counts the bump's entry as the live key "" (an empty record
					// decodes as a KeyValue with no key): so does etcdguard, to agree with it.
					key, ok = nil, true
					st.BumpKeys = 1
				}
				if !ok {
					return fmt.Errorf("%w: the value at revision %d does not decode as a key-value record", ErrCorrupt, st.Revision)
				}
				d := keyDigest{maphash.Bytes(seeds[0], key), maphash.Bytes(seeds[1], key)}
				if len(k) == 18 && k[17] == 't' {
					delete(live, d)
				} else {
					live[d] = struct{}{}
				}
			case isMeta:
				switch {
				case bytes.Equal(k, schema.MetaConsistentIndexKeyName) && len(v) == 8:
					st.ConsistentIndex = binary.BigEndian.Uint64(v)
				case bytes.Equal(k, schema.MetaTermKeyName) && len(v) == 8:
					st.Term = binary.BigEndian.Uint64(v)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	st.TotalKey = len(live)
	st.Hash = h.Sum32()
	return nil
}
