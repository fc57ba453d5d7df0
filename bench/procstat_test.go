package bench

import (
	"fmt"
	"os"
	"sync"
	"time"
)

// lossStats are the mean and the largest loss window of some power cuts.
func lossStats(rs []killResult) (mean, worst time.Duration) {
	for _, r := range rs {
		mean += r.loss
		worst = max(worst, r.loss)
	}
	return mean / time.Duration(max(len(rs), 1)), worst
}

// cpuTime is the user and system CPU time a process has used (/proc/PID/stat, in clock ticks of
// 1/100 s, which Linux uses on every platform Go supports).
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses and may hold spaces.
	var utime, stime int64
	s := string(b)
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == ')' {
			s = s[i+2:]
			break
		}
	}
	var skip string
	// state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime
	if _, err := fmt.Sscan(s, &skip, &skip, &skip, &skip, &skip, &skip, &skip, &skip, &skip, &skip, &skip, &utime, &stime); err != nil {
		return 0
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// sampleRSS samples the RssAnon of pid every 50 ms until stop is closed, and returns the peak
// and the peak of each 10-second window (to show whether it grows with time).
func sampleRSS(pid int, stop <-chan struct{}) (peak int64, windows []int64) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	start := time.Now()
	for {
		select {
		case <-stop:
			return peak, windows
		case <-t.C:
		}
		v := rssAnon(pid)
		peak = max(peak, v)
		w := int(time.Since(start) / (10 * time.Second))
		for len(windows) <= w {
			windows = append(windows, 0)
		}
		windows[w] = max(windows[w], v)
	}
}

// rssWatch runs sampleRSS in the background; the returned func stops it and gives its result.
func rssWatch(pid int) func() (int64, []int64) {
	stop := make(chan struct{})
	var peak int64
	var windows []int64
	var wg sync.WaitGroup
	wg.Go(func() { peak, windows = sampleRSS(pid, stop) })
	return func() (int64, []int64) { close(stop); wg.Wait(); return peak, windows }
}
