package scratch

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Linux's I/O priority classes and targets (linux/ioprio.h); golang.org/x/sys has the system
// call's number but no wrapper or constants.
const (
	ioprioWhoProcess = 1
	ioprioClassIdle  = 3
	ioprioClassShift = 13
)

// lowerPriority lowers the calling thread's CPU priority to niceness nice (when above 0) and
// puts its disk I/O in the idle class (when idle). On Linux both are attributes of a thread, not
// of the process (setpriority and ioprio_set with who 0 name the calling thread), and a process
// forked by the thread inherits them and keeps them across exec. Lowering needs no privilege;
// raising them again would, so the caller never gives the thread back.
func lowerPriority(nice int, idle bool) error {
	if nice > 0 {
		if err := unix.Setpriority(unix.PRIO_PROCESS, 0, nice); err != nil {
			return fmt.Errorf("setpriority %d: %w", nice, err)
		}
	}
	if idle {
		prio := uintptr(ioprioClassIdle << ioprioClassShift)
		if _, _, errno := unix.Syscall(unix.SYS_IOPRIO_SET, ioprioWhoProcess, 0, prio); errno != 0 {
			return fmt.Errorf("ioprio_set idle: %w", errno)
		}
	}
	return nil
}
