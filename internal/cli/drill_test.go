package cli

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseRate(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
		err  bool
	}{
		{"", 0, false}, {"1000", 1000, false}, {"50MiB", 50 << 20, false}, {"800KiB", 800 << 10, false},
		{"2G", 2 << 30, false}, {"0", 0, true}, {"-5M", 0, true}, {"fast", 0, true}, {"1.5MiB", 0, true},
	} {
		got, err := parseRate(c.in)
		if c.err {
			require.Error(t, err, c.in)
			continue
		}
		require.NoError(t, err, c.in)
		require.Equal(t, c.want, got, c.in)
	}
}
