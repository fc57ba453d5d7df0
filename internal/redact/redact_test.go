package redact

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestURL(t *testing.T) {
	cases := []struct {
		raw, want string
	}{
		{"file:///var/backups/etcd", "file:///var/backups/etcd"},
		{"s3://bucket/prefix?region=eu-west-1&storage-class=DEEP_ARCHIVE", "s3://bucket/prefix?region=eu-west-1&storage-class=DEEP_ARCHIVE"},
		{"s3://AKIDEXAMPLE:s3cr3tpw@bucket/prefix", "s3://REDACTED@bucket/prefix"},
		{"s3://AKIDEXAMPLE@bucket/prefix", "s3://REDACTED@bucket/prefix"},
		{"s3://bucket/p?endpoint=http://AKIDEXAMPLE:s3cr3tpw@127.0.0.1:9000", "s3://bucket/p?endpoint=http%3A%2F%2FREDACTED%40127.0.0.1%3A9000"},
		{"s3://bucket/p?endpoint=http%3A%2F%2FAKIDEXAMPLE%3As3cr3tpw%40127.0.0.1%3A9000", "s3://bucket/p?endpoint=http%3A%2F%2FREDACTED%40127.0.0.1%3A9000"},
		{"s3://bucket/p?secret-key=s3cr3tpw&access-key=AKIDEXAMPLE&X-Amz-Signature=s3cr3tpw", "s3://bucket/p?X-Amz-Signature=REDACTED&access-key=REDACTED&secret-key=REDACTED"},
		{"file:///repo?password=s3cr3tpw#s3cr3tpw", "file:///repo?password=REDACTED"},
		{"s3://AKIDEXAMPLE:s3c%zzr3tpw@bucket", "s3://REDACTED (not a valid URL)"},
		{"AKIDEXAMPLE:s3c%zz@bucket", "REDACTED"},
		{"AKIDEXAMPLE:s3cr3tpw@bucket", "REDACTED"},
		{"s3:AKIDEXAMPLE:s3cr3tpw", "s3:REDACTED"},
	}
	for _, tc := range cases {
		t.Run(tc.raw, func(t *testing.T) {
			got := URL(tc.raw)
			require.Equal(t, tc.want, got)
			require.NotContains(t, got, "s3cr3tpw")
			require.NotContains(t, got, "AKIDEXAMPLE")
		})
	}
	_, err := Parse("s3://AKIDEXAMPLE:s3c%zzr3tpw@bucket")
	require.ErrorIs(t, err, ErrInvalidURL)
	require.NotContains(t, err.Error(), "s3c")
}
