package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/stretchr/testify/require"

	"github.com/etcdguard/etcdguard/internal/testcluster"
)

// TestSaveFailures produces each failure for real, against one 3-member TLS cluster, and checks
// that etcdguard gives a one-line error naming the thing and the fix, the documented exit code,
// and never lists a half-written backup.
func TestSaveFailures(t *testing.T) {
	c := startCluster(t, "3.6")
	loadData(t, c, 500, 100)
	minio, s3URL := startS3(t)
	now := time.Now()

	oneLineError := func(t *testing.T, r result) string {
		t.Helper()
		var errLines []string
		for _, l := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
			if strings.HasPrefix(l, "Error: ") {
				errLines = append(errLines, l)
			}
		}
		require.Len(t, errLines, 1, "exactly one error line: %s", r.stderr)
		require.NotContains(t, r.stderr, "goroutine ", "no stack trace")
		return errLines[0]
	}
	noBackups := func(t *testing.T, repo string) {
		t.Helper()
		l := list(t, "--target", "file://"+repo)
		require.Empty(t, l.Backups)
	}

	t.Run("wrong CA", func(t *testing.T) {
		other, err := testcluster.NewPKI(filepath.Join(t.TempDir(), "other-ca"))
		require.NoError(t, err)
		repo := filepath.Join(t.TempDir(), "repo")
		r := etcdguard(t, "snapshot", "save", "--endpoints", strings.Join(c.Endpoints(), ","), "--cacert", other.CAFile,
			"--cert", c.ClientCertFile, "--key", c.ClientKeyFile, "--target", "file://"+repo)
		require.Equal(t, 4, r.code)
		msg := oneLineError(t, r)
		require.Contains(t, msg, "does not trust")
		require.Contains(t, msg, "--cacert")
		noBackups(t, repo)
	})

	t.Run("expired client certificate", func(t *testing.T) {
		cert, key, err := c.PKI.IssueClient("expired-client", now.Add(-30*24*time.Hour), now.Add(-3*24*time.Hour))
		require.NoError(t, err)
		repo := filepath.Join(t.TempDir(), "repo")
		r := etcdguard(t, "snapshot", "save", "--endpoints", c.Endpoints()[0], "--cacert", c.CAFile, "--cert", cert, "--key", key,
			"--target", "file://"+repo)
		require.Equal(t, 4, r.code)
		msg := oneLineError(t, r)
		require.Contains(t, msg, "expired on "+now.Add(-3*24*time.Hour).UTC().Format("2006-01-02"))
		require.Contains(t, msg, cert)
		noBackups(t, repo)
	})

	t.Run("every endpoint down", func(t *testing.T) {
		ports := freePorts(t, 3)
		var eps []string
		for _, p := range ports {
			eps = append(eps, "https://127.0.0.1:"+itoa(p))
		}
		repo := filepath.Join(t.TempDir(), "repo")
		r := etcdguard(t, "snapshot", "save", "--endpoints", strings.Join(eps, ","), "--cacert", c.CAFile,
			"--cert", c.ClientCertFile, "--key", c.ClientKeyFile, "--target", "file://"+repo)
		require.Equal(t, 4, r.code)
		msg := oneLineError(t, r)
		require.Contains(t, msg, "connection refused")
		for _, ep := range eps {
			require.Contains(t, msg, ep)
		}
		noBackups(t, repo)
	})

	s3Cases := []struct {
		name  string
		setup func(t *testing.T) string // returns the S3 target URL
		want  string
		kind  string // the report's error_kind for the S3 target
	}{
		{"S3 wrong credentials", func(t *testing.T) string {
			t.Setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
			return s3URL
		}, "refused the secret key for this access key: check AWS_SECRET_ACCESS_KEY", "denied"},
		{"S3 no such bucket", func(t *testing.T) string {
			return strings.Replace(s3URL, "etcd-backups", "no-such-bucket", 1)
		}, `bucket "no-such-bucket" does not exist`, "unavailable"},
		{"S3 unreachable", func(t *testing.T) string {
			return strings.Replace(s3URL, minio.Endpoint, "http://127.0.0.1:"+itoa(freePorts(t, 1)[0]), 1)
		}, "cannot reach http://127.0.0.1:", "unreachable"},
	}
	for _, tc := range s3Cases {
		t.Run(tc.name, func(t *testing.T) {
			target := tc.setup(t)
			repo := filepath.Join(t.TempDir(), "repo")
			r := etcdguard(t, append([]string{"snapshot", "save", "--target", "file://" + repo, "--target", target}, tlsFlags(c)...)...)
			require.Equal(t, 3, r.code, "partial: the local copy is made")
			msg := oneLineError(t, r)
			require.Contains(t, msg, "target s3")
			require.Contains(t, msg, tc.want)
			l := list(t, "--target", "file://"+repo)
			require.Len(t, l.Backups, 1)
			require.Equal(t, []string{"local"}, l.Backups[0].Copies)

			// The JSON report states the kind of the target's failure beside its message.
			m := saveJSON(t, 3, append([]string{"--target", "file://" + repo, "--target", target}, tlsFlags(c)...)...)
			require.Len(t, m.Targets, 2)
			require.Equal(t, "failed", m.Targets[1].State)
			require.Contains(t, m.Targets[1].Error, tc.want)
			require.Equal(t, tc.kind, m.Targets[1].ErrorKind)
			require.Empty(t, m.Targets[0].ErrorKind)
		})
	}

	t.Run("read-only local target", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "ro")
		require.NoError(t, os.Mkdir(dir, 0o700))
		if os.Geteuid() != 0 {
			t.Skip("mounting a read-only tmpfs needs root; CI runs as root")
		}
		out, err := execCommand(t, "mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", dir)
		require.NoError(t, err, "mounting a read-only tmpfs needs root: %s", out)
		t.Cleanup(func() { _ = exec.Command("umount", dir).Run() })
		r := etcdguard(t, append([]string{"snapshot", "save", "--target", "file://" + dir}, tlsFlags(c)...)...)
		require.Equal(t, 8, r.code, "storage: the target refuses writes")
		msg := oneLineError(t, r)
		require.Contains(t, msg, "access denied by the storage")
		require.Contains(t, msg, "read-only file system")
		require.Contains(t, msg, dir)
	})

	t.Run("full disk on the local target", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "small")
		require.NoError(t, os.Mkdir(dir, 0o700))
		if os.Geteuid() != 0 {
			t.Skip("mounting a small tmpfs to fill needs root; CI runs as root")
		}
		out, err := execCommand(t, "mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", dir)
		require.NoError(t, err, "mounting a small tmpfs needs root: %s", out)
		t.Cleanup(func() { _ = exec.Command("umount", dir).Run() })
		r := etcdguard(t, append([]string{"snapshot", "save", "--compression", "none", "--target", "file://" + dir}, tlsFlags(c)...)...)
		require.Equal(t, 8, r.code)
		msg := oneLineError(t, r)
		require.Contains(t, msg, "no space left")
		require.Contains(t, msg, dir)
		noBackups(t, dir)
		entries, err := os.ReadDir(filepath.Join(dir, "snapshots"))
		if err == nil {
			for _, e := range entries {
				sub, _ := os.ReadDir(filepath.Join(dir, "snapshots", e.Name()))
				require.Empty(t, sub, "nothing half-written is left in %s", e.Name())
			}
		}
	})

	// A good backup in two local targets, damaged afterwards in different ways.
	damaged := func(t *testing.T, extra ...string) (id, repo, tape string) {
		repo = filepath.Join(t.TempDir(), "repo")
		tape = filepath.Join(t.TempDir(), "tape")
		require.NoError(t, os.Mkdir(tape, 0o700))
		args := append([]string{"--target", "file://" + repo, "--target", "file://" + tape + "?offline=true&media=tape&name=tape"}, extra...)
		m := saveJSON(t, 0, append(args, tlsFlags(c)...)...)
		return m.ID, repo, tape
	}
	dataFile := func(t *testing.T, root, id string) string {
		files, err := filepath.Glob(filepath.Join(root, "snapshots", id, "snapshot.db*"))
		require.NoError(t, err)
		require.Len(t, files, 1)
		return files[0]
	}

	t.Run("bit flipped in a stored copy", func(t *testing.T) {
		id, repo, tape := damaged(t)
		f := dataFile(t, repo, id)
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		data[len(data)/2] ^= 0x01
		require.NoError(t, os.WriteFile(f, data, 0o600))
		r := etcdguard(t, "snapshot", "verify", "--all", "--target", "file://"+repo, "--target", "file://"+tape+"?offline=true&name=tape")
		require.Equal(t, 5, r.code)
		require.Regexp(t, regexp.MustCompile(id+`\s+local\s+BAD`), r.stdout)
		require.Regexp(t, regexp.MustCompile(id+`\s+tape\s+ok`), r.stdout)
		msg := oneLineError(t, r)
		require.Contains(t, msg, "target local")
		// get skips the bad copy and uses the good one.
		out := filepath.Join(t.TempDir(), "snap.db")
		r = etcdguard(t, "snapshot", "get", id, "--output", out, "--target", "file://"+repo, "--target", "file://"+tape+"?offline=true&name=tape")
		require.Equal(t, 0, r.code)
		require.Contains(t, r.stdout, "from target tape")
	})

	t.Run("truncated copy", func(t *testing.T) {
		id, repo, _ := damaged(t)
		f := dataFile(t, repo, id)
		st, err := os.Stat(f)
		require.NoError(t, err)
		require.NoError(t, os.Truncate(f, st.Size()/2))
		r := etcdguard(t, "snapshot", "verify", id, "--target", "file://"+repo)
		require.Equal(t, 5, r.code)
		msg := oneLineError(t, r)
		require.Contains(t, msg, "target local")
		require.Contains(t, msg, "damaged")
		out := filepath.Join(t.TempDir(), "snap.db")
		r = etcdguard(t, "snapshot", "get", id, "--output", out, "--target", "file://"+repo)
		require.Equal(t, 5, r.code)
		_, err = os.Stat(out)
		require.ErrorIs(t, err, os.ErrNotExist, "a failed get leaves no file")
	})

	t.Run("wrong age identity", func(t *testing.T) {
		right, err := age.GenerateX25519Identity()
		require.NoError(t, err)
		wrong, err := age.GenerateX25519Identity()
		require.NoError(t, err)
		keys := t.TempDir()
		rightFile, wrongFile := filepath.Join(keys, "right.key"), filepath.Join(keys, "wrong.key")
		require.NoError(t, os.WriteFile(rightFile, []byte(right.String()+"\n"), 0o600))
		require.NoError(t, os.WriteFile(wrongFile, []byte(wrong.String()+"\n"), 0o600))
		id, repo, _ := damaged(t, "--age-recipient", right.Recipient().String())
		require.NotContains(t, logs.String(), right.String(), "the identity never appears in a log")

		r := etcdguard(t, "snapshot", "verify", id, "--target", "file://"+repo, "--age-identity", wrongFile)
		require.Equal(t, 5, r.code)
		require.Contains(t, oneLineError(t, r), "none of the given identities")
		r = etcdguard(t, "snapshot", "verify", id, "--target", "file://"+repo)
		require.Equal(t, 5, r.code)
		require.Contains(t, oneLineError(t, r), "--age-identity")
		r = etcdguard(t, "snapshot", "verify", id, "--target", "file://"+repo, "--age-identity", rightFile)
		require.Equal(t, 0, r.code, r.stderr)
		require.Contains(t, r.stdout, "decrypt")
	})

	requireNoSecrets(t, logs.String())
}

func itoa(i int) string { return strconvItoa(i) }

// TestUsageErrors checks the exit code and message of bad invocations; no cluster is needed.
func TestUsageErrors(t *testing.T) {
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"snapshot", "save"}, 2, "no backup target"},
		{[]string{"snapshot", "save", "--target", "ftp://x/y"}, 2, `unknown scheme "ftp"`},
		{[]string{"snapshot", "list", "--target", "file:///tmp/x", "-o", "yaml"}, 2, "use table or json"},
		{[]string{"snapshot", "verify", "--target", "file:///tmp/x"}, 2, "give backup ids or --all"},
		{[]string{"snapshot", "status", "20991231T000000Z-00000000", "--target", "file://" + t.TempDir()}, 7, "no target holds backup"},
		{[]string{"snapshot", "status", "/no/such/file.db"}, 7, "neither a file nor a backup id"},
		{[]string{"snapshot", "save", "--bogus"}, 2, "unknown flag"},
		{[]string{"snapshot", "save", "--target", "tape"}, 2, `no configured target has that name`},
		{[]string{"snapshot", "save", "--config", "/no/such/config.yml"}, 2, "read config file"},
		{[]string{"snapshot", "get"}, 2, "accepts 1 arg(s)"},
		{[]string{"agent"}, 2, "no backup target"},
		{[]string{"agent", "--target", "file:///tmp/x", "--listen-address", "localhost"}, 2, `listen-address "localhost" is not host:port`},
		{[]string{"agent", "extra"}, 2, "unknown command"},
		{[]string{"snapshot", "status", "a", "b"}, 2, "accepts 1 arg(s)"},
		{[]string{"snapshot", "frobnicate"}, 2, "unknown command"},
		{[]string{"restore", "latest", "--target", "file:///tmp/x", "--data-dir", "/tmp/d", "--name", "m1", "--initial-cluster", "m2=http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380"}, 2, "--name m1 does not appear in --initial-cluster"},
		{[]string{"restore", "latest", "--data-dir", "/tmp/d"}, 2, "give --name"},
		{[]string{"restore", "latest", "--no-bump", "--bump-revision", "5", "--data-dir", "/tmp/d"}, 2, "contradict"},
		{[]string{"restore", "latest", "--target", "file:///tmp/x", "--data-dir", "/tmp/d", "--name", "m1", "--initial-cluster", "m1=http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380", "--etcd-version", "banana"}, 2, `--etcd-version "banana" is not an etcd version`},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := etcdguard(t, tc.args...)
			require.Equal(t, tc.code, r.code)
			require.Contains(t, r.stderr, tc.want)
		})
	}
}

// TestHelpListsExitCodes keeps the help and the exit code table together.
func TestHelpListsExitCodes(t *testing.T) {
	for _, cmd := range [][]string{{"snapshot", "save"}, {"snapshot", "verify"}, {"snapshot", "get"}, {"demo"}, {"agent"}, {"drill"}} {
		r := etcdguard(t, append(cmd, "--help")...)
		require.Equal(t, 0, r.code)
		require.Contains(t, r.stdout, "Exit codes:")
		for _, c := range exitCodes() {
			require.Contains(t, r.stdout, "  "+itoa(c.code)+"  "+c.meaning)
		}
		require.Contains(t, r.stdout, "Examples:")
	}
}
