package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestBadConfigs(t *testing.T) {
	want := map[string]string{
		"unknown-key.bad.yml":         "field retention not found",
		"bad-scheme.bad.yml":          `unknown scheme "ftp"`,
		"bad-duration.bad.yml":        `"five seconds" is not a duration`,
		"duplicate-target.bad.yml":    `two targets are named "a"`,
		"bad-compression.bad.yml":     `compression "lz4": use zstd or none`,
		"cluster-unknown-key.bad.yml": "field peer-urls not found",
	}
	files, err := filepath.Glob("testdata/*.bad.yml")
	require.NoError(t, err)
	require.Len(t, files, len(want), "every bad config in testdata has an expected error here")
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, err := Load(f)
			require.Error(t, err)
			require.Contains(t, err.Error(), want[filepath.Base(f)])
			require.True(t, strings.HasPrefix(err.Error(), "config file "+f), "the error names the file: %v", err)
		})
	}
}

func TestFullConfig(t *testing.T) {
	cfg, err := Load("testdata/full.yml")
	require.NoError(t, err)
	require.Equal(t, []string{"https://10.0.0.1:2379", "https://10.0.0.2:2379"}, cfg.Endpoints)
	require.Equal(t, Duration(3*time.Second), cfg.DialTimeout)
	require.Equal(t, Duration(5*time.Second), cfg.CommandTimeout, "unset values keep their defaults")
	require.Len(t, cfg.Targets, 3)
	require.True(t, cfg.Targets[2].Offline)
	require.Equal(t, "tape", cfg.Targets[2].Media)
	require.Equal(t, "zstd", cfg.Compression)
	require.Len(t, cfg.Cluster.Members, 2)
	require.Equal(t, "/etc/kubernetes/manifests/etcd.yaml", cfg.Cluster.Members[0].StaticPodManifest)
	require.Equal(t, "etcd.service", cfg.Cluster.Members[1].SystemdUnit)
	require.Equal(t, []string{"/etc/kubernetes/manifests/kube-apiserver.yaml"}, cfg.Cluster.ControlPlaneManifests)
}

func TestEmptyFileIsDefaults(t *testing.T) {
	p := filepath.Join(t.TempDir(), "empty.yml")
	require.NoError(t, os.WriteFile(p, nil, 0o600))
	cfg, err := Load(p)
	require.NoError(t, err)
	require.Equal(t, Default(), cfg)
}
