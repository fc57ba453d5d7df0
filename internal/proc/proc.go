// Package proc tells whether a process recorded by an earlier run (in a lock, in the name of a
// scratch folder) may still be running on this host, and records what this process holds itself
// (own.go): a record of this process's own PID may be an earlier process's. A PID means something
// only in the PID namespace and the boot it was recorded in: the same number in another container
// or after a reboot is another process.
package proc

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Place is where a PID is valid: a host's PID namespace during one boot.
type Place struct {
	// PIDNamespace is /proc/self/ns/pid's link, such as "pid:[4026531836]"; empty where unknown.
	PIDNamespace string
	// BootID is /proc/sys/kernel/random/boot_id, new at every boot; empty where unknown.
	BootID string
}

// Here returns this process's place.
func Here() Place {
	var p Place
	p.PIDNamespace, _ = os.Readlink("/proc/self/ns/pid")
	if b, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
		p.BootID = strings.TrimSpace(string(b))
	}
	return p
}

// Uptime returns how long this host has been up (/proc/uptime, which counts time suspended
// too), and false where that is unknown.
func Uptime() (time.Duration, bool) {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0, false
	}
	f, _, _ := strings.Cut(string(b), " ")
	secs, err := strconv.ParseFloat(f, 64)
	if err != nil || secs <= 0 {
		return 0, false
	}
	return time.Duration(secs * float64(time.Second)), true
}

// Known reports whether both parts of the place are known.
func (p Place) Known() bool { return p.PIDNamespace != "" && p.BootID != "" }

// Alive reports whether a process with this PID exists (in this process's PID namespace). A PID
// that was reused by another process counts as alive: callers only ever act on "gone".
func Alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
