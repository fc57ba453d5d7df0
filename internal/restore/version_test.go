package restore

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCheckVersionSkew(t *testing.T) {
	cases := []struct {
		name           string
		backup, target string
		allow          bool
		want           SkewVerdict
		reason         string
	}{
		{"same minor", "3.6.0", "3.6.16", false, SkewOK, "both etcd 3.6"},
		{"same minor, v prefix and patch", "v3.5.35", "3.5.0", false, SkewOK, "both etcd 3.5"},
		{"one minor up", "3.5.0", "3.6.0", false, SkewWarning, "upgrades the data"},
		{"one minor up, allowed changes nothing", "3.5.0", "3.6.0", true, SkewWarning, "cannot go back to 3.5"},
		{"downgrade", "3.6.0", "3.5.0", false, SkewRefused, "downgrade"},
		{"downgrade allowed", "3.6.0", "3.5.0", true, SkewWarning, "allowed by --allow-version-skew"},
		{"two minors up", "3.4.0", "3.6.0", false, SkewRefused, "one minor version at a time"},
		{"another major", "3.6.0", "4.0.0", false, SkewRefused, "major version"},
		{"pre-release", "3.6.0-rc.1", "3.6.0", false, SkewOK, "both etcd 3.6"},
		{"target unknown", "3.6.0", "", false, SkewUnknown, "--etcd-version"},
		{"backup unknown", "", "3.6.0", false, SkewUnknown, "3.5 or 3.6"},
		{"not a version", "latest", "3.6", false, SkewUnknown, "not known"},
		{"both unknown", "", "", true, SkewUnknown, "neither"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := CheckVersionSkew(tc.backup, tc.target, tc.allow)
			require.Equal(t, tc.want, s.Verdict, s.Reason)
			require.Contains(t, s.Reason, tc.reason)
			if tc.want == SkewRefused {
				require.ErrorIs(t, s.Err(), ErrVersionSkew)
				require.ErrorContains(t, s.Err(), "--allow-version-skew", "the error says how to go on")
			} else {
				require.NoError(t, s.Err())
			}
		})
	}
}
