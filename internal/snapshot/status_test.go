package snapshot

import (
	"testing"

	"github.com/stretchr/testify/require"
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
