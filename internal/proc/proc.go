// Package proc tells whether a process recorded by an earlier run (in a lock, in the name of a
// scratch folder) may still be running on this host. A PID means something only in the PID
// namespace and the boot it was recorded in: the same number in another container or after a
// reboot is another process.
package proc

import (
	"errors"
	"os"
	"strings"
	"syscall"
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
