package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
	"github.com/stretchr/testify/require"
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
