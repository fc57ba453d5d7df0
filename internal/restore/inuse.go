package restore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"syscall"
	"time"
)

// checkNotRunning refuses to move a data dir aside while an etcd may be running on it: a running
// member keeps acknowledging writes into the moved folder, and they are gone once it restarts on
// the restored one. It is running when its database is locked (etcd holds an flock on it while it
// runs) or when something accepts connections on its peer URLs.
func checkNotRunning(ctx context.Context, dataDir string, peerURLs []string) error {
	db := filepath.Join(dataDir, "member", "snap", "db")
	if fileLocked(db) {
		return fmt.Errorf("%w: %s is locked by a running process (etcd holds its database while it runs): stop the member first, then restore again", ErrDataDirInUse, db)
	}
	for _, pu := range peerURLs {
		u, err := url.Parse(pu)
		if err != nil || u.Host == "" {
			continue
		}
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		conn, err := (&net.Dialer{}).DialContext(dctx, "tcp", u.Host)
		cancel()
		if cerr := ctx.Err(); cerr != nil {
			return cerr // a dial cut short by the caller proves nothing
		}
		if err == nil {
			conn.Close()
			return fmt.Errorf("%w: something accepts connections on the member's peer URL %s, so its etcd may still be running on %s: stop the member first, then restore again", ErrDataDirInUse, u.Host, dataDir)
		}
	}
	return nil
}

// fileLocked reports whether another process holds an flock on path (etcd holds its database's).
func fileLocked(path string) bool {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer syscall.Close(fd)
	if err := syscall.Flock(fd, syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		return errors.Is(err, syscall.EWOULDBLOCK)
	}
	_ = syscall.Flock(fd, syscall.LOCK_UN)
	return false
}
