// Command etcdguard backs up, verifies, diagnoses and restores etcd clusters. main wires the
// process's streams, environment and clock into the CLI and turns the error it returns into one
// line on stderr and a documented exit code.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/etcdguard/etcdguard/internal/backend"
	"github.com/etcdguard/etcdguard/internal/certs"
	"github.com/etcdguard/etcdguard/internal/cli"
	"github.com/etcdguard/etcdguard/internal/doctor"
	"github.com/etcdguard/etcdguard/internal/drill"
	"github.com/etcdguard/etcdguard/internal/etcdx"
	"github.com/etcdguard/etcdguard/internal/policy"
	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/restore"
	"github.com/etcdguard/etcdguard/internal/snapshot"
)

// exitCode is one documented exit code and the errors that produce it.
type exitCode struct {
	code    int
	meaning string
	errs    []error
}

// errInterrupted marks the error of a run that a signal (SIGINT, SIGTERM) stopped.
var errInterrupted = errors.New("interrupted by a signal")

// exitCodes is the table of exit codes, in the order they are checked: the first row whose
// error matches decides. It is printed in every command's help and copied in the README.
func exitCodes() []exitCode {
	return []exitCode{
		{0, "success", nil},
		{130, "interrupted: SIGINT (Ctrl-C) or SIGTERM stopped the run; what it was writing is removed, nothing is stored (the agent, stopped so, exits 0)", []error{errInterrupted}},
		{2, "usage: a bad flag, argument or configuration file", []error{cli.ErrUsage, restore.ErrInput}},
		{3, "partial: the backup is stored and verified, but at least one target failed", []error{snapshot.ErrPartial}},
		{4, "etcd unavailable: no member could be used (down, TLS or certificate problem)", []error{etcdx.ErrUnavailable}},
		{5, "integrity: a backup copy or snapshot failed verification, or the age key does not match", []error{snapshot.ErrCorrupt, repository.ErrWrongKey}},
		{6, "locked: another etcdguard run holds the repository lock in a way that excludes this one (waited for up to a minute first; saves, copies and reads share a target, a clean-up or deletion needs it alone), or another recover holds the recovery state dir", []error{repository.ErrLocked, restore.ErrRecoveryRunning}},
		{7, "not found: no such backup or file", []error{repository.ErrNotFound}},
		{8, "storage: no target could store or read the backup, or a target to prune could not be used (unreachable, full, access denied, bad credentials)", []error{snapshot.ErrNoTarget, backend.ErrUnavailable, backend.ErrNoSpace, backend.ErrDenied, backend.ErrUnreachable}},
		{9, "refused: the data dir holds data (add --quarantine to move it aside) or is in use by a running etcd, a recovery plan does not match what is found (or is too old to resume), no recovery is safe from what is known, the backup is of a newer etcd than the member will run (add --allow-version-skew), the CA to renew from is itself invalid, or a restore drill's work dir has less free space than the drill needs", []error{restore.ErrDataDirInUse, restore.ErrPlanMismatch, restore.ErrUnsafe, restore.ErrVersionSkew, certs.ErrCAInvalid, drill.ErrBudget}},
		{12, "unfinished: this host's part of a recovery is done; members on other hosts must be recovered there (the message says the command for each host)", []error{restore.ErrOtherHost}},
		{13, "drill failed: the backup was fetched and checked, but it did not restore, etcd did not start on it, or the scratch member did not serve what the backup records (a damaged backup exits 5, a target that cannot be read 8)", []error{drill.ErrFailed}},
		{10, "doctor, certs check, policy check: the worst finding is a warning (policy check: a rule judged only from an unmounted medium's recorded inventory, a target unreadable, or an inventory that could not be read or recorded)", []error{doctor.ErrWarning, policy.ErrUnchecked}},
		{11, "doctor, certs check, policy check: at least one finding is critical (policy check: a 3-2-1 rule is broken)", []error{doctor.ErrCritical, policy.ErrBroken}},
		{1, "any other failure", nil},
	}
}

func codeFor(err error) int {
	if err == nil {
		return 0
	}
	for _, c := range exitCodes() {
		for _, e := range c.errs {
			if errors.Is(err, e) {
				return c.code
			}
		}
	}
	return 1
}

// classFor returns the exit code of err and its class: the words its meaning starts with
// ("partial", "etcd unavailable"), for the agent's log of a failed run.
func classFor(err error) (int, string) {
	code := codeFor(err)
	for _, c := range exitCodes() {
		if c.code == code {
			class, _, _ := strings.Cut(c.meaning, ":")
			return code, class
		}
	}
	return code, "failure"
}

// notify relays signals to a channel until stop: the agent's SIGHUP.
func notify(sig ...os.Signal) (<-chan os.Signal, func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, sig...)
	return ch, func() { signal.Stop(ch) }
}

func exitCodeHelp() string {
	var b strings.Builder
	for _, c := range exitCodes() {
		fmt.Fprintf(&b, "  %d  %s\n", c.code, c.meaning)
	}
	return b.String()
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	return runAt(args, stdout, stderr, time.Now)
}

// runAt is run with a clock: tests inject one to play clock skew and clock resets.
func runAt(args []string, stdout, stderr io.Writer, now func() time.Time) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	isTTY := false
	if f, ok := stdout.(*os.File); ok {
		isTTY = term.IsTerminal(int(f.Fd()))
	}
	root := cli.NewRootCommand(cli.Env{
		Stdin: os.Stdin, Stdout: stdout, Stderr: stderr, Getenv: os.Getenv, IsTerminal: isTTY, Now: now,
		ExitCodes: exitCodeHelp(), Classify: classFor, Notify: notify,
	})
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	if ctx.Err() != nil {
		// A signal arrived and the run failed: whatever the error says (a cancelled upload
		// looks like a failed target), the cause is the interruption.
		err = fmt.Errorf("%w: %w", errInterrupted, err)
	}
	code := codeFor(err)
	// cobra (args.go, legacyArgs) reports a mistyped command with a plain fmt.Errorf("unknown
	// command ...") and has no type or sentinel for it (SetFlagErrorFunc covers flags only), so
	// its text is the one thing to go by. Every other error is matched by errors.Is on the table.
	if code == 1 && strings.HasPrefix(err.Error(), "unknown command") {
		code = 2
	}
	fmt.Fprintln(stderr, "Error:", oneLine(err))
	return code
}

// oneLine drops the sentinel prefixes that only serve exit-code mapping and joins lines.
func oneLine(err error) string {
	msg := err.Error()
	for _, p := range []string{cli.ErrUsage.Error() + ": "} {
		msg = strings.ReplaceAll(msg, p, "")
	}
	return strings.ReplaceAll(msg, "\n", "; ")
}
