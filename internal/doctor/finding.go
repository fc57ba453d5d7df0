// Package doctor diagnoses an etcd cluster: each check returns findings with a severity, the
// evidence, and the next action as a command to run. Online checks talk to the members; offline
// checks read data dirs, strictly read-only.
package doctor

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
)

// Severity ranks a finding.
type Severity int

// Severities, from harmless to urgent.
const (
	OK Severity = iota
	Warning
	Critical
)

func (s Severity) String() string {
	switch s {
	case Warning:
		return "warning"
	case Critical:
		return "critical"
	}
	return "ok"
}

// MarshalJSON writes the severity as its name.
func (s Severity) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// ErrWarning and ErrCritical are returned (wrapped) by commands whose worst finding is a warning
// or critical, so that the exit code tells.
var (
	ErrWarning  = errors.New("doctor found warnings")
	ErrCritical = errors.New("doctor found critical problems")
)

// Finding is one result of one check.
type Finding struct {
	Severity Severity `json:"severity"`
	// Check names the check, such as "endpoint", "quorum", "alarm", "wal".
	Check string `json:"check"`
	// Subject is what the finding is about: an endpoint, a member, a file.
	Subject string `json:"subject"`
	// Summary says what is wrong (or right) in one sentence.
	Summary string `json:"summary"`
	// Evidence holds the numbers, files, offsets and dates behind the summary.
	Evidence []string `json:"evidence,omitempty"`
	// Next is the command to run (or the action to take); empty for OK findings.
	Next string `json:"next,omitempty"`
}

// Sort orders findings worst first, then by check and subject.
func Sort(fs []Finding) {
	sort.SliceStable(fs, func(i, j int) bool {
		if fs[i].Severity != fs[j].Severity {
			return fs[i].Severity > fs[j].Severity
		}
		if fs[i].Check != fs[j].Check {
			return fs[i].Check < fs[j].Check
		}
		return fs[i].Subject < fs[j].Subject
	})
}

// Worst returns the highest severity among findings.
func Worst(fs []Finding) Severity {
	w := OK
	for _, f := range fs {
		if f.Severity > w {
			w = f.Severity
		}
	}
	return w
}

// Err returns nil, or ErrWarning or ErrCritical by the worst finding.
func Err(fs []Finding) error {
	switch Worst(fs) {
	case Critical:
		n := count(fs, Critical)
		return fmt.Errorf("%w: %d critical finding(s)", ErrCritical, n)
	case Warning:
		return fmt.Errorf("%w: %d warning(s)", ErrWarning, count(fs, Warning))
	}
	return nil
}

func count(fs []Finding, s Severity) int {
	n := 0
	for _, f := range fs {
		if f.Severity == s {
			n++
		}
	}
	return n
}
