package proc

import (
	"os"
	"os/exec"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestRunning: a record of another PID is judged by whether that process exists; one of this
// process's own PID by whether this process holds the thing it names.
func TestRunning(t *testing.T) {
	dead := exec.Command("true")
	require.NoError(t, dead.Run())
	const key = "proc test lock"
	require.True(t, Running(1, key), "pid 1 exists")
	require.False(t, Running(dead.Process.Pid, key), "a process that exited")
	require.False(t, Running(os.Getpid(), key), "this PID, not claimed: an earlier process's")
	release := Claim(key)
	again := Claim(key)
	require.True(t, Running(os.Getpid(), key), "claimed by this process")
	require.False(t, Running(os.Getpid(), key+" other"), "another key of this PID")
	release()
	release()
	require.True(t, Claimed(key), "claimed twice, released once (a release counts once)")
	again()
	require.False(t, Claimed(key))
}
