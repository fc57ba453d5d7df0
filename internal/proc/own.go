package proc

import (
	"os"
	"sync"
)

// A record that names this process's PID in this place (a lock object, a scratch folder's name)
// was made either by this process or by an earlier one that had the same PID: a service that was
// killed (SIGKILL, the OOM killer) and restarted by systemd inside a container gets the PID its
// predecessor had, since the container's PID namespace numbers its processes alike at every
// start. Alive cannot tell the two apart (this process exists); this process's own record of what
// it holds can. That record is package state on purpose: it describes the process itself, and
// every Repository and every scratch folder of the process must consult the same one. It is
// guarded by its mutex and only ever holds what this process holds right now.
var own = struct {
	mu   sync.Mutex
	keys map[string]int // key -> how many claims of it are not released
}{keys: map[string]int{}}

// Claim records that this process holds the thing key names (a lock object's name, a scratch
// folder's name), from before it is created until release is called, once it is removed or given
// up. Keys are names unique to the thing, such as a name with a random part; release may be
// called more than once.
func Claim(key string) (release func()) {
	own.mu.Lock()
	own.keys[key]++
	own.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			own.mu.Lock()
			defer own.mu.Unlock()
			if own.keys[key]--; own.keys[key] <= 0 {
				delete(own.keys, key)
			}
		})
	}
}

// Claimed reports whether this process holds the thing key names (see Claim).
func Claimed(key string) bool {
	own.mu.Lock()
	defer own.mu.Unlock()
	return own.keys[key] > 0
}

// Running reports whether the process that left the thing key names, recorded as pid in this
// process's place, may still be running. For another PID that is Alive; for this process's own
// PID it is whether this process holds key: if it does not, an earlier process that had this PID
// left it, and that process is gone.
func Running(pid int, key string) bool {
	if pid == os.Getpid() {
		return Claimed(key)
	}
	return Alive(pid)
}
