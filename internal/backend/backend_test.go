package backend_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/backend"
)

func TestKind(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, ""},
		{errors.New("something else"), ""},
		{fmt.Errorf("save x: %w: write: no space left on device", backend.ErrNoSpace), backend.KindNoSpace},
		{fmt.Errorf("s3: %w", errors.Join(backend.ErrUnavailable, backend.ErrDenied)), backend.KindDenied},
		{fmt.Errorf("s3: %w", errors.Join(backend.ErrUnavailable, backend.ErrUnreachable)), backend.KindUnreachable},
		{fmt.Errorf("tape: %w", backend.ErrUnavailable), backend.KindUnavailable},
		{fmt.Errorf("x: %w", backend.ErrExist), backend.KindExist},
		{fmt.Errorf("x: %w: %w", backend.ErrNotObject, backend.ErrNotExist), backend.KindNotExist},
	} {
		require.Equal(t, tc.want, backend.Kind(tc.err), "%v", tc.err)
	}
}

// plain is a backend with no optional interface; wrapper decorates another.
type plain struct{ backend.Backend }

type creator struct{ plain }

func (creator) SaveNew(context.Context, string, io.Reader) (int64, error) { return 0, nil }

type wrapper struct {
	plain
	under backend.Backend
}

func (w wrapper) Unwrap() backend.Backend { return w.under }

func TestAs(t *testing.T) {
	c := creator{}
	got, ok := backend.As[backend.Creator](wrapper{under: wrapper{under: c}})
	require.True(t, ok, "found through two decorators")
	require.Equal(t, c, got)
	_, ok = backend.As[backend.Creator](wrapper{under: plain{}})
	require.False(t, ok)
	_, ok = backend.As[backend.Sweeper](plain{})
	require.False(t, ok)
}

// opener serves one object, or fails to open.
type opener struct {
	plain
	data string
	err  error
}

func (o opener) Open(context.Context, string) (io.ReadCloser, error) {
	if o.err != nil {
		return nil, o.err
	}
	return io.NopCloser(strings.NewReader(o.data)), nil
}

func (opener) Location() string { return "test" }

func TestLoadWithoutLoader(t *testing.T) {
	data, err := backend.Load(t.Context(), opener{data: "0123456789"}, "x", 4)
	require.NoError(t, err)
	require.Equal(t, "0123", string(data))
	_, err = backend.Load(t.Context(), opener{err: fmt.Errorf("open x: %w", backend.ErrNotExist)}, "x", 4)
	require.ErrorIs(t, err, backend.ErrNotExist)
}
