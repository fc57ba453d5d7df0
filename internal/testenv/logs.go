package testenv

import (
	"bytes"
	"strings"
	"sync"
)

// Logs is a log sink that a test reads while the code under test writes to it.
type Logs struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Count returns how many times sub occurs in what was written so far.
func (l *Logs) Count(sub string) int { return strings.Count(l.String(), sub) }
