package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/testenv"
)

// TestKeyMaterialNeverPrinted passes age identities (secret keys) where recipients belong, and
// damaged identity files, to every command that reads them: the error names the flag or the
// file and says what is wrong, and never quotes the key.
func TestKeyMaterialNeverPrinted(t *testing.T) {
	id, err := age.GenerateX25519Identity()
	require.NoError(t, err)
	secret := id.String()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
		return p
	}
	identityFile := write("backup.key", "# created: 2026-11-24\n# public key: "+id.Recipient().String()+"\n"+secret+"\n")
	// A secret key with one character changed: bech32's checksum error would quote part of it.
	damagedKey := secret[:len(secret)-3] + "QQQ"
	damagedFile := write("damaged.key", damagedKey+"\n")
	mixedRecipients := write("recipients.txt", id.Recipient().String()+"\n"+secret+"\n")
	repo := "file://" + filepath.Join(dir, "repo")
	cfg := write("etcdguard.yaml", "targets:\n  - name: local\n    url: "+repo+"\nage-recipients: ["+secret+"]\n")

	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"identity inline as --age-recipient", []string{"snapshot", "save", "--target", repo, "--age-recipient", secret},
			[]string{"--age-recipient", "is an identity, not a recipient"}},
		{"identity file as --age-recipient", []string{"snapshot", "save", "--target", repo, "--age-recipient", identityFile},
			[]string{identityFile, "is an identity, not a recipient"}},
		{"identity file with @ as --age-recipient", []string{"snapshot", "save", "--target", repo, "--age-recipient", "@" + identityFile},
			[]string{identityFile, "is an identity, not a recipient"}},
		{"recipients file holding an identity", []string{"snapshot", "save", "--target", repo, "--age-recipient", mixedRecipients},
			[]string{mixedRecipients, "line 2", "is an identity, not a recipient"}},
		{"identity in the config file's age-recipients", []string{"snapshot", "save", "--config", cfg},
			[]string{"age-recipients", "is an identity, not a recipient"}},
		{"damaged identity file as --age-recipient", []string{"snapshot", "save", "--target", repo, "--age-recipient", damagedFile},
			[]string{damagedFile, "is an identity, not a recipient"}},
		{"damaged identity file as --age-identity", []string{"snapshot", "verify", "--all", "--target", repo, "--age-identity", damagedFile},
			[]string{damagedFile, "line 1", "not a valid age identity"}},
		{"damaged identity inline as --age-recipient", []string{"snapshot", "save", "--target", repo, "--age-recipient", damagedKey},
			[]string{"--age-recipient", "is an identity, not a recipient"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := etcdguard(t, tc.args...)
			require.Equal(t, 2, r.code, r.stderr)
			for _, w := range tc.want {
				require.Contains(t, r.stderr, w)
			}
			out := r.stdout + r.stderr
			for _, key := range []string{secret, damagedKey} {
				body := strings.TrimPrefix(key, "AGE-SECRET-KEY-1")
				for i := 0; i+8 <= len(body); i++ {
					require.NotContains(t, strings.ToUpper(out), body[i:i+8], "no piece of the secret key is printed")
				}
			}
		})
	}
}

// TestTargetCredentialsNeverPrinted gives target URLs that carry credentials in every place a
// user might paste them (user information, the endpoint's user information, query parameters,
// a URL that does not even parse) to the commands that name targets, against a real cluster
// and MinIO: no message, log line, report or manifest shows them.
func TestTargetCredentialsNeverPrinted(t *testing.T) {
	for _, version := range testenv.EtcdVersions() {
		t.Run("etcd-"+version, func(t *testing.T) {
			const key, secret = "AKIDLEAKED", "SECRETLEAKED"
			c := startCluster(t, version)
			loadData(t, c, 100, 10)
			minio, s3URL := startS3(t)
			host := strings.TrimPrefix(minio.Endpoint, "http://")
			dir := t.TempDir()
			repo := filepath.Join(dir, "repo")
			withCreds := []string{
				"s3://" + key + ":" + secret + "@etcd-backups/prod?endpoint=" + minio.Endpoint,
				"s3://etcd-backups/prod?endpoint=http://" + key + ":" + secret + "@" + host,
				"s3://etcd-backups/prod?endpoint=http%3A%2F%2F" + key + "%3A" + secret + "%40" + host,
				s3URL + "&secret-key=" + secret + "&access-key=" + key,
				"s3://" + key + ":" + secret + "%zz@etcd-backups/prod",
				"file://" + key + ":" + secret + "@localhost" + repo,
				"file://" + repo + "?offline=maybe&password=" + secret,
			}
			cfg := filepath.Join(dir, "etcdguard.yaml")
			require.NoError(t, os.WriteFile(cfg, []byte("targets:\n  - name: s3\n    url: "+withCreds[1]+"\n"), 0o600))

			type run struct {
				name string
				args []string
				code int
			}
			var runs []run
			for i, u := range withCreds {
				runs = append(runs, run{"save to URL " + itoa(i), append([]string{"snapshot", "save", "--target", "file://" + repo, "--target", u}, tlsFlags(c)...), -1})
				runs = append(runs, run{"list URL " + itoa(i), []string{"snapshot", "list", "--target", u}, -1})
				runs = append(runs, run{"prune URL " + itoa(i), []string{"prune", "--dry-run", "--target", u}, -1})
			}
			runs = append(runs,
				run{"save to a local URL with a secret parameter", append([]string{"snapshot", "save", "-o", "json", "--target", "file://" + repo + "?token=" + secret}, tlsFlags(c)...), 0},
				run{"list it", []string{"snapshot", "list", "--target", "file://" + repo + "?token=" + secret}, 0},
				run{"status of the latest", []string{"snapshot", "status", "latest", "--target", "file://" + repo}, 0},
				run{"prune it (a URL target: never pruned, said with the URL)", []string{"prune", "-o", "json", "--target", "file://" + repo + "?token=" + secret}, 0},
				run{"prune the config file's target", []string{"prune", "--config", cfg}, -1},
				run{"config file target", append([]string{"snapshot", "save", "--config", cfg, "--target", "file://" + repo, "--target", "s3"}, tlsFlags(c)...), -1},
				run{"doctor with the config file", append([]string{"doctor", "--config", cfg}, tlsFlags(c)...), -1},
			)
			for _, r := range runs {
				t.Run(r.name, func(t *testing.T) {
					res := etcdguard(t, r.args...)
					if r.code >= 0 {
						require.Equal(t, r.code, res.code, res.stderr)
					}
					out := res.stdout + res.stderr
					require.NotContains(t, out, secret)
					require.NotContains(t, out, key)
				})
			}
			// The manifests on disk name the targets without the credentials either.
			files, err := filepath.Glob(filepath.Join(repo, "snapshots", "*", "manifest.json"))
			require.NoError(t, err)
			require.NotEmpty(t, files)
			for _, f := range files {
				data, err := os.ReadFile(f)
				require.NoError(t, err)
				require.NotContains(t, string(data), secret)
				require.NotContains(t, string(data), key)
			}
		})
	}
}
