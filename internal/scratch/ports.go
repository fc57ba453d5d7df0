package scratch

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// FreePorts returns n distinct TCP ports that are free on 127.0.0.1 at the time of the call.
//
// Ports are drawn at random from below the kernel's ephemeral range rather than by binding
// port 0: a port the kernel just handed out and we closed again goes back into the ephemeral
// pool, where an outgoing connection (etcd members dial each other constantly) can take it as
// its source port before the member binds it. Below the ephemeral range only listeners compete,
// and a clash with another test's listener is caught by Start, which retries with new ports.
func FreePorts(n int) ([]int, error) {
	lo, hi := portRange()
	seen := make(map[int]bool, n)
	ports := make([]int, 0, n)
	for attempt := 0; len(ports) < n; attempt++ {
		if attempt > 100*n {
			return nil, fmt.Errorf("find %d free ports in %d-%d: gave up after %d attempts", n, lo, hi, attempt)
		}
		port := lo + rand.IntN(hi-lo)
		if seen[port] {
			continue
		}
		seen[port] = true
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		if err := l.Close(); err != nil {
			return nil, fmt.Errorf("close probe listener on port %d: %w", port, err)
		}
		ports = append(ports, port)
	}
	return ports, nil
}

// portRange returns the range [lo, hi) to draw listening ports from: the 10000 ports below the
// ephemeral range when there is room, else the ports above it.
func portRange() (lo, hi int) {
	ephLo, ephHi := 32768, 60999 // Linux's default
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			l, err1 := strconv.Atoi(f[0])
			h, err2 := strconv.Atoi(f[1])
			if err1 == nil && err2 == nil && l <= h {
				ephLo, ephHi = l, h
			}
		}
	}
	switch {
	case ephLo >= 11024:
		return ephLo - 10000, ephLo
	case ephHi <= 65535-2000:
		return ephHi + 1, 65536
	default:
		// The ephemeral range covers nearly everything: share it, and rely on Start's retry.
		return 1024, 65536
	}
}
