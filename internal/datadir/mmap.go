package datadir

import (
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// readAheadWindow is how much of a file each read-ahead request asks for. The kernel caps one
// request at the device's read-ahead size (128 KiB to a few MiB), so a whole file is asked for
// in windows, one after another.
const readAheadWindow = 8 << 20

// mapFile maps the first size bytes of f read-only. With readAhead, it also asks the kernel to
// read the whole file ahead, in file order, while the caller works on it: the page walk visits
// a database's pages in tree order, and left to its page faults it reads a cold file in small,
// scattered requests, about half as fast as a sequential read (measured: docs/benchmarks.md).
// A WAL segment is read in file order and does better without. release stops the read-ahead
// and unmaps the file.
func mapFile(f *os.File, size int64, readAhead bool) (data []byte, release func(), err error) {
	data, err = unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, nil, err
	}
	unmap := func() { _ = unix.Munmap(data) }
	if !readAhead {
		return data, unmap, nil
	}
	// The read-ahead has a descriptor of its own: the caller may close f once it is mapped.
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		return data, unmap, nil
	}
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer unix.Close(fd)
		for off := int64(0); off < size && !stop.Load(); off += readAheadWindow {
			// Advice only: a kernel that ignores it leaves the walk slower, not wrong.
			if unix.Fadvise(fd, off, readAheadWindow, unix.FADV_WILLNEED) != nil {
				return
			}
		}
	}()
	return data, func() {
		stop.Store(true)
		<-done
		unmap()
	}, nil
}
