package cluster

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestStaticPodControl moves a manifest out of the kubelet's folder and back, twice each (a
// resumed recovery repeats steps), and edits the flags of a member that joins an existing cluster.
func TestStaticPodControl(t *testing.T) {
	root := t.TempDir()
	manifests := filepath.Join(root, "manifests")
	require.NoError(t, os.Mkdir(manifests, 0o700))
	manifest := filepath.Join(manifests, "etcd.yaml")
	orig := []byte("spec:\n  containers:\n  - name: etcd\n    command:\n    - etcd\n    - --name=cp1\n")
	require.NoError(t, os.WriteFile(manifest, orig, 0o600))
	c := &staticPodControl{manifest: manifest}

	for range 2 {
		require.NoError(t, c.Stop(t.Context()))
		require.NoFileExists(t, manifest)
		require.FileExists(t, filepath.Join(root, "etcdguard-held-etcd.yaml"))
	}
	for range 2 {
		require.NoError(t, c.Start(t.Context(), StartEnv{State: "new"}))
		require.FileExists(t, manifest)
	}
	got, err := os.ReadFile(manifest)
	require.NoError(t, err)
	require.Equal(t, orig, got, "a restored member starts from its manifest as it was")

	require.NoError(t, c.Stop(t.Context()))
	require.NoError(t, c.Start(t.Context(), StartEnv{State: "existing", InitialCluster: "cp1=https://10.0.0.1:2380,cp2=https://10.0.0.2:2380"}))
	got, err = os.ReadFile(manifest)
	require.NoError(t, err)
	require.Contains(t, string(got), "--initial-cluster-state=existing")
	require.Contains(t, string(got), "--initial-cluster=cp1=https://10.0.0.1:2380,cp2=https://10.0.0.2:2380")
	kept, err := os.ReadFile(filepath.Join(root, "etcdguard-held-etcd.yaml.orig"))
	require.NoError(t, err)
	require.Equal(t, orig, kept, "the manifest as it was is kept")

	// A second replace of the same member starts from the manifest the first one edited; the
	// operator's own manifest stays the saved original.
	edited, err := os.ReadFile(manifest)
	require.NoError(t, err)
	require.NoError(t, c.Stop(t.Context()))
	require.NoError(t, c.Start(t.Context(), StartEnv{State: "existing", InitialCluster: "cp1=https://10.0.0.1:2380,cp2=https://10.0.0.2:2380"}))
	kept, err = os.ReadFile(filepath.Join(root, "etcdguard-held-etcd.yaml.orig"))
	require.NoError(t, err)
	require.Equal(t, orig, kept, "a second replace does not overwrite the saved original")
	second, err := os.ReadFile(filepath.Join(root, "etcdguard-held-etcd.yaml.orig-2"))
	require.NoError(t, err)
	require.Equal(t, edited, second, "the manifest before the second edit is kept too")

	require.Error(t, (&staticPodControl{manifest: filepath.Join(manifests, "nope.yaml")}).Stop(t.Context()))
}
