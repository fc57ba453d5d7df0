// Package failpoint marks the step boundaries of etcdguard's long commands, where a crash must
// leave nothing lost and nothing half-written: the next run either completes or refuses with a
// clear message. In etcdguard as shipped a failpoint does nothing. Tests arm one (Arm) to kill
// the process there, as a power cut or a SIGKILL would, and run the command again.
package failpoint

import "sync/atomic"

// armed is what happens at a failpoint; nil in etcdguard as shipped. Only tests set it.
var armed atomic.Pointer[func(name string)]

// Arm makes every failpoint call fn with its name. It exists for tests: etcdguard itself never
// calls it.
func Arm(fn func(name string)) { armed.Store(&fn) }

// Here marks a step boundary named name, such as "recover/after-quarantine".
func Here(name string) {
	if fn := armed.Load(); fn != nil {
		(*fn)(name)
	}
}
