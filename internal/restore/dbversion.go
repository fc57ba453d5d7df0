package restore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/bbolt"
	"go.etcd.io/etcd/server/v3/storage/schema"
)

// DBVersions are the etcd versions an etcd database records about itself.
type DBVersions struct {
	// Cluster is the cluster version (bucket "cluster", key "clusterVersion"), recorded by etcd
	// 3.5 and 3.6: the version every member of the cluster had reached.
	Cluster string `json:"cluster_version,omitempty"`
	// Storage is the storage version (bucket "meta", key "storageVersion"), etcd 3.6 and later.
	Storage string `json:"storage_version,omitempty"`
}

// Version is the version that decides which etcd can read the database: the storage version,
// else the cluster version; "" when it records neither.
func (v DBVersions) Version() string {
	if v.Storage != "" {
		return v.Storage
	}
	return v.Cluster
}

// dbLockTimeout bounds the wait for a database's lock: a running etcd holds it.
const dbLockTimeout = 500 * time.Millisecond

// ReadDBVersions reads the versions recorded in the etcd database (or plain snapshot) at path,
// strictly read-only. A damaged database gives an error, never a panic.
func ReadDBVersions(ctx context.Context, path string) (v DBVersions, err error) {
	if err := ctx.Err(); err != nil {
		return v, err
	}
	if _, err := os.Stat(path); err != nil {
		return v, fmt.Errorf("read the etcd versions of %s: %w", path, err)
	}
	defer func() {
		// bbolt panics on some damaged pages; in this goroutine that can be recovered.
		if r := recover(); r != nil {
			v, err = DBVersions{}, fmt.Errorf("read the etcd versions of %s: the database is damaged: %v", path, r)
		}
	}()
	db, err := bbolt.Open(path, 0o400, &bbolt.Options{ReadOnly: true, Timeout: dbLockTimeout})
	if err != nil {
		return v, fmt.Errorf("read the etcd versions of %s: %w", path, err)
	}
	defer db.Close()
	err = db.View(func(tx *bbolt.Tx) error {
		if b := tx.Bucket(schema.Cluster.Name()); b != nil {
			v.Cluster = string(b.Get(schema.ClusterClusterVersionKeyName))
		}
		if b := tx.Bucket(schema.Meta.Name()); b != nil {
			v.Storage = string(b.Get(schema.MetaStorageVersionName))
		}
		return nil
	})
	if err != nil {
		return DBVersions{}, fmt.Errorf("read the etcd versions of %s: %w", path, err)
	}
	return v, nil
}

// ReadDataDirVersions reads the versions recorded in the database of an etcd data dir
// (DIR/member/snap/db), read-only. found is false when the data dir has no database.
func ReadDataDirVersions(ctx context.Context, dataDir string) (v DBVersions, found bool, err error) {
	path := filepath.Join(dataDir, "member", "snap", "db")
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return v, false, nil
	}
	v, err = ReadDBVersions(ctx, path)
	return v, err == nil, err
}
