package datadir

import (
	"os"
	"strconv"
	"strings"
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
	if !fitsInMemory(size) {
		// Read far ahead of the walk, the first pages would leave the page cache before the walk
		// reaches them, and be read twice; the cache of a busy host would be flushed for nothing.
		return data, unmap, nil
	}
	// The read-ahead has a descriptor of its own (closed on exec, as Go's are): the caller may
	// close f once it is mapped.
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
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

// fitsInMemory reports whether size bytes take at most half of the memory the kernel says is
// available (MemAvailable), so that reading them ahead evicts nothing needed.
func fitsInMemory(size int64) bool {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return err == nil && size <= kb<<10/2
		}
	}
	return false
}
