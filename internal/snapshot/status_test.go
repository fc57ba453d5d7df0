package snapshot

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

func TestRecordKey(t *testing.T) {
	for _, kv := range []mvccpb.KeyValue{
		{Key: []byte("/registry/secrets/ns/a"), Value: []byte("v"), CreateRevision: 5, ModRevision: 9, Version: 2, Lease: 7},
		{Key: []byte("k"), Value: make([]byte, 1<<16)},
		{Key: []byte("only-key")},
	} {
		data, err := kv.Marshal()
		require.NoError(t, err)
		key, ok := recordKey(data)
		require.True(t, ok)
		require.Equal(t, kv.Key, key)
		_, ok = recordKey(data[:len(data)/2+1][:1])
		require.False(t, ok, "a cut record is refused")
	}
}

// TestReadStatusOfDamagedDatabase: a zeroed page is reported as corruption, naming the page,
// instead of crashing the process inside bbolt.
func TestReadStatusOfDamagedDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "snapshot.db")
	db, err := bbolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Update(func(tx *bbolt.Tx) error {
		if _, err := tx.CreateBucket([]byte("meta")); err != nil {
			return err
		}
		b, err := tx.CreateBucket([]byte("key"))
		if err != nil {
			return err
		}
		for i := range 2000 {
			rev := make([]byte, 17)
			binary.BigEndian.PutUint64(rev, uint64(i+1))
			rev[8] = '_'
			kv := mvccpb.KeyValue{Key: []byte(fmt.Sprintf("/registry/secrets/ns/s-%04d", i)), Value: make([]byte, 200), ModRevision: int64(i + 1)}
			v, err := kv.Marshal()
			if err != nil {
				return err
			}
			if err := b.Put(rev, v); err != nil {
				return err
			}
		}
		return nil
	}))
	require.NoError(t, db.Close())
	st, err := ReadStatus(t.Context(), path)
	require.NoError(t, err)
	require.Equal(t, int64(2000), st.Revision)
	require.Equal(t, 2000, st.TotalKey)

	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	_, err = f.WriteAt(make([]byte, 4*4096), 2*4096)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	_, err = ReadStatus(t.Context(), path)
	require.ErrorIs(t, err, ErrCorrupt)
	require.ErrorContains(t, err, "page")
	require.NotContains(t, err.Error(), "/registry/", "no key in the error")
}

// TestReadStatusBumpEntry: the entry etcdutl's revision bump writes (a plain revision key with
// sub revision 0 and an empty value) is accepted and counted as etcdutl 3.6 counts it, as one
// live key; anything else without a key-value record is still corruption.
func TestReadStatusBumpEntry(t *testing.T) {
	rev := func(main, sub uint64, tombstone bool) []byte {
		k := make([]byte, 17, 18)
		binary.BigEndian.PutUint64(k, main)
		k[8] = '_'
		binary.BigEndian.PutUint64(k[9:], sub)
		if tombstone {
			k = append(k, 't')
		}
		return k
	}
	cases := []struct {
		name     string
		key      []byte
		value    []byte
		wantKeys int
		wantErr  bool
	}{
		{"etcdutl's bump entry", rev(1_000_010, 0, false), []byte{}, 4, false},
		{"empty value at a sub revision", rev(1_000_010, 1, false), []byte{}, 0, true},
		{"empty value on a tombstone", rev(1_000_010, 0, true), []byte{}, 0, true},
		{"a value that is not a record", rev(1_000_010, 0, false), []byte{0xff, 0xff}, 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "snapshot.db")
			db, err := bbolt.Open(path, 0o600, nil)
			require.NoError(t, err)
			require.NoError(t, db.Update(func(tx *bbolt.Tx) error {
				if _, err := tx.CreateBucket([]byte("meta")); err != nil {
					return err
				}
				b, err := tx.CreateBucket([]byte("key"))
				if err != nil {
					return err
				}
				for i := range 3 {
					kv := mvccpb.KeyValue{Key: []byte(fmt.Sprintf("/registry/pods/ns/p-%d", i)), Value: []byte("v"), ModRevision: int64(i + 2)}
					v, err := kv.Marshal()
					if err != nil {
						return err
					}
					if err := b.Put(rev(uint64(i+2), 0, false), v); err != nil {
						return err
					}
				}
				return b.Put(tc.key, tc.value)
			}))
			require.NoError(t, db.Close())
			st, err := ReadStatus(t.Context(), path)
			if tc.wantErr {
				require.ErrorIs(t, err, ErrCorrupt)
				require.ErrorContains(t, err, "revision 1000010")
				return
			}
			require.NoError(t, err)
			require.Equal(t, int64(1_000_010), st.Revision)
			require.Equal(t, tc.wantKeys, st.TotalKey)
		})
	}
}
