package testcluster

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ShellMembers returns the --member values of `etcdguard recover` for c's members, each stopped
// and started with shell commands (as on hosts without systemd) that keep the PID of the member
// they start in dir/NAME.pid and its output in dir/NAME.recovered.log, and a function that kills
// every member those commands started, for the test's clean-up.
func ShellMembers(c *Cluster, dir string) (flags []string, kill func()) {
	var pids []string
	for _, m := range c.Members() {
		pid := filepath.Join(dir, m.Name+".pid")
		log := filepath.Join(dir, m.Name+".recovered.log")
		var args []string
		for _, a := range append(m.Command(), m.StartArgs()...) {
			args = append(args, ShellQuote(a))
		}
		start := fmt.Sprintf(`if [ -f %[1]s ] && kill -0 "$(cat %[1]s)" 2>/dev/null; then exit 0; fi; nohup %[2]s >>%[3]s 2>&1 & echo $! >%[1]s`,
			ShellQuote(pid), strings.Join(args, " "), ShellQuote(log))
		stop := fmt.Sprintf(`if [ -f %[1]s ]; then p=$(cat %[1]s); kill -TERM $p 2>/dev/null; i=0; while kill -0 $p 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; kill -KILL $p 2>/dev/null; while kill -0 $p 2>/dev/null; do sleep 0.05; done; rm -f %[1]s; fi; true`,
			ShellQuote(pid))
		flags = append(flags, fmt.Sprintf("name=%s,peer-url=%s,client-url=%s,data-dir=%s,start-command=%s,stop-command=%s",
			m.Name, m.PeerURL, m.ClientURL, m.DataDir, start, stop))
		pids = append(pids, pid)
	}
	return flags, func() {
		for _, pid := range pids {
			if b, err := os.ReadFile(pid); err == nil {
				if p, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
					_ = syscall.Kill(p, syscall.SIGKILL)
				}
			}
		}
	}
}

// ShellQuote quotes s for a POSIX shell.
func ShellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
