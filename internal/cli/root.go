// Package cli is etcdguard's command line: one file per command, each with an options struct,
// its flags and a run function. Nothing here exits the process; cmd/etcdguard maps the errors
// returned to exit codes.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/etcdguard/etcdguard/internal/config"
	"github.com/etcdguard/etcdguard/internal/etcdx"
	"github.com/etcdguard/etcdguard/internal/redact"
	"github.com/etcdguard/etcdguard/internal/repository"
)

// ErrUsage is returned (wrapped) for invalid flags, arguments or configuration.
var ErrUsage = errors.New("usage error")

// Env is what the CLI takes from the process: standard streams, the environment and the clock.
type Env struct {
	// Stdin answers confirmation prompts.
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Getenv reads an environment variable (os.Getenv in main).
	Getenv func(string) string
	// IsTerminal reports whether stdout is a terminal, for progress display.
	IsTerminal bool
	// Now is the clock; time.Now in main.
	Now func() time.Time
	// ExitCodes is the exit code table, rendered by cmd/etcdguard, shown in every command's help.
	ExitCodes string
	// Classify returns the exit code an error maps to and its class in a word or two
	// ("partial", "etcd unavailable"): the agent logs them for a failed run. It is cmd/etcdguard's
	// table; nil logs errors without them.
	Classify func(err error) (code int, class string)
	// Notify relays the signals named to the channel it returns until stop is called
	// (signal.Notify in main); nil: the agent is not reloaded by signals.
	Notify func(sig ...os.Signal) (ch <-chan os.Signal, stop func())
}

// globalOptions are the flags every command shares.
type globalOptions struct {
	configFile     string
	endpoints      []string
	cacert         string
	cert           string
	key            string
	dialTimeout    time.Duration
	commandTimeout time.Duration
	targets        []string
	output         string
	logLevel       string
	workDir        string
	ageRecipients  []string
	ageIdentities  []string
	compression    string

	flags *pflag.FlagSet
}

// NewRootCommand builds the etcdguard command tree.
func NewRootCommand(env Env) *cobra.Command {
	g := &globalOptions{}
	root := &cobra.Command{
		Use:   "etcdguard",
		Short: "Verified etcd backups, diagnosis and recovery",
		Long: `etcdguard backs up, verifies and restores the etcd clusters under Kubernetes.

Connection flags and environment variables are etcdctl's: --endpoints, --cacert, --cert, --key,
ETCDCTL_ENDPOINTS, ETCDCTL_CACERT, ETCDCTL_CERT, ETCDCTL_KEY. Settings can also come from a YAML
file (--config); flags win over the environment, which wins over the file.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	// Bad flags and argument counts are usage errors (exit code 2), whichever command has them.
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return fmt.Errorf("%w: %w", ErrUsage, err) })
	pf := root.PersistentFlags()
	g.flags = pf
	pf.StringVar(&g.configFile, "config", "", "YAML configuration file (env ETCDGUARD_CONFIG)")
	pf.StringSliceVar(&g.endpoints, "endpoints", nil, "etcd client URLs, comma-separated (env ETCDCTL_ENDPOINTS; default 127.0.0.1:2379)")
	pf.StringVar(&g.cacert, "cacert", "", "CA certificate that signed the etcd server certificates (env ETCDCTL_CACERT)")
	pf.StringVar(&g.cert, "cert", "", "client certificate for etcd (env ETCDCTL_CERT)")
	pf.StringVar(&g.key, "key", "", "client key for etcd (env ETCDCTL_KEY)")
	pf.DurationVar(&g.dialTimeout, "dial-timeout", 0, "timeout to connect to each member (env ETCDCTL_DIAL_TIMEOUT; default 2s)")
	pf.DurationVar(&g.commandTimeout, "command-timeout", 0, "timeout of each request to a member (env ETCDCTL_COMMAND_TIMEOUT; default 5s)")
	pf.StringArrayVar(&g.targets, "target", nil, "backup target, repeatable: a URL (file:///dir, s3://bucket/prefix?endpoint=...&storage-class=..., file:///mnt/tape/etcd?offline=true&media=tape) or the name of a target in --config")
	pf.StringVarP(&g.output, "format", "o", "table", "output format of reports: table or json")
	pf.StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	pf.StringVar(&g.workDir, "work-dir", "", "directory for scratch copies of snapshots while they are checked (default /var/tmp)")
	pf.StringArrayVar(&g.ageRecipients, "age-recipient", nil, "encrypt backups to this age public key (age1...) or recipients file, repeatable")
	pf.StringArrayVar(&g.ageIdentities, "age-identity", nil, "age identity file to read encrypted backups, repeatable")
	pf.StringVar(&g.compression, "compression", "", "compression of new backups: zstd or none (default zstd)")

	root.AddCommand(newSnapshotCommand(env, g), newRestoreCommand(env, g), newRecoverCommand(env, g), newDoctorCommand(env, g), newPruneCommand(env, g), newCertsCommand(env, g), newDemoCommand(env, g), newAgentCommand(env, g), newPolicyCommand(env, g), newDrillCommand(env, g), newEtcdCommand(), newVersionCommand(env))
	addExitCodes(root, env.ExitCodes)
	markArgsErrors(root)
	return root
}

// markArgsErrors makes every command's argument-count errors usage errors.
func markArgsErrors(cmd *cobra.Command) {
	if args := cmd.Args; args != nil {
		cmd.Args = func(c *cobra.Command, a []string) error {
			if err := args(c, a); err != nil {
				return fmt.Errorf("%w: %w", ErrUsage, err)
			}
			return nil
		}
	}
	for _, c := range cmd.Commands() {
		markArgsErrors(c)
	}
}

func addExitCodes(cmd *cobra.Command, codes string) {
	if codes != "" && cmd.Runnable() {
		cmd.Long = strings.TrimRight(firstNonEmpty(cmd.Long, cmd.Short), "\n") + "\n\nExit codes:\n" + codes
	}
	for _, c := range cmd.Commands() {
		addExitCodes(c, codes)
	}
}

// settings is the merged configuration: flags over environment over file over defaults.
type settings struct {
	cfg    config.Config
	etcd   etcdx.Config
	output string
	logger *slog.Logger
	// recipientsFrom names where cfg.AgeRecipients came from, for messages.
	recipientsFrom string
}

func (g *globalOptions) resolve(env Env) (settings, error) {
	var s settings
	switch g.output {
	case "table", "json":
	default:
		return s, fmt.Errorf("%w: -o %q: use table or json", ErrUsage, g.output)
	}
	s.output = g.output
	cfg := config.Default()
	path := firstNonEmpty(g.configFile, env.Getenv("ETCDGUARD_CONFIG"))
	if path != "" {
		var err error
		cfg, err = config.Load(path)
		if err != nil {
			return s, fmt.Errorf("%w: %w", ErrUsage, err)
		}
	}
	if v := env.Getenv("ETCDCTL_ENDPOINTS"); v != "" {
		cfg.Endpoints = splitList(v)
	}
	overrideString(&cfg.CACert, env.Getenv("ETCDCTL_CACERT"))
	overrideString(&cfg.Cert, env.Getenv("ETCDCTL_CERT"))
	overrideString(&cfg.Key, env.Getenv("ETCDCTL_KEY"))
	for name, dst := range map[string]*config.Duration{"ETCDCTL_DIAL_TIMEOUT": &cfg.DialTimeout, "ETCDCTL_COMMAND_TIMEOUT": &cfg.CommandTimeout} {
		if v := env.Getenv(name); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				return s, fmt.Errorf("%w: %s=%q is not a duration such as 5s", ErrUsage, name, v)
			}
			*dst = config.Duration(d)
		}
	}
	f := g.flags
	if f.Changed("endpoints") {
		cfg.Endpoints = g.endpoints
	}
	if f.Changed("cacert") {
		cfg.CACert = g.cacert
	}
	if f.Changed("cert") {
		cfg.Cert = g.cert
	}
	if f.Changed("key") {
		cfg.Key = g.key
	}
	if f.Changed("dial-timeout") {
		cfg.DialTimeout = config.Duration(g.dialTimeout)
	}
	if f.Changed("command-timeout") {
		cfg.CommandTimeout = config.Duration(g.commandTimeout)
	}
	if f.Changed("target") {
		// A URL names a target; a bare name picks one of the configured targets.
		named := cfg.Targets
		cfg.Targets = nil
		for _, spec := range g.targets {
			if !strings.Contains(spec, "://") {
				t, ok := findTarget(named, spec)
				if !ok {
					return s, fmt.Errorf("%w: --target %q: no configured target has that name (configured: %s); give a URL such as file:///backup/etcd", ErrUsage, spec, targetNames(named))
				}
				cfg.Targets = append(cfg.Targets, t)
				continue
			}
			t, err := repository.ParseTarget(spec)
			if err != nil {
				return s, fmt.Errorf("%w: --target: %w", ErrUsage, err)
			}
			cfg.Targets = append(cfg.Targets, t)
		}
	}
	if f.Changed("work-dir") {
		cfg.WorkDir = g.workDir
	}
	s.recipientsFrom = "age-recipients in " + path
	if f.Changed("age-recipient") {
		cfg.AgeRecipients = g.ageRecipients
		s.recipientsFrom = "--age-recipient"
	}
	if f.Changed("age-identity") {
		cfg.AgeIdentities = g.ageIdentities
	}
	if f.Changed("compression") {
		cfg.Compression = g.compression
	}
	if err := cfg.Validate(); err != nil {
		return s, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	targets, err := repository.NormalizeTargets(cfg.Targets)
	if err != nil {
		return s, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	cfg.Targets = targets
	s.cfg = cfg
	endpoints := normalizeEndpoints(cfg.Endpoints, cfg.CACert != "" || cfg.Cert != "")
	if err := checkEndpoints(endpoints); err != nil {
		return s, err
	}
	s.etcd = etcdx.Config{
		Endpoints:      endpoints,
		CACert:         cfg.CACert,
		Cert:           cfg.Cert,
		Key:            cfg.Key,
		DialTimeout:    time.Duration(cfg.DialTimeout),
		CommandTimeout: time.Duration(cfg.CommandTimeout),
		Now:            env.Now,
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
		return s, fmt.Errorf("%w: --log-level %q: use debug, info, warn or error", ErrUsage, g.logLevel)
	}
	s.logger = slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: level}))
	return s, nil
}

func (s settings) requireTargets() error {
	if len(s.cfg.Targets) == 0 {
		return fmt.Errorf("%w: no backup target: give --target file:///backup/etcd (repeatable) or list targets in --config", ErrUsage)
	}
	return nil
}

// findTarget returns the target with a name (after normalization).
func findTarget(ts []repository.Target, name string) (repository.Target, bool) {
	norm, err := repository.NormalizeTargets(ts)
	if err != nil {
		return repository.Target{}, false
	}
	for _, t := range norm {
		if t.Name == name {
			return t, true
		}
	}
	return repository.Target{}, false
}

func targetNames(ts []repository.Target) string {
	var names []string
	for _, t := range ts {
		names = append(names, t.Name)
	}
	if len(names) == 0 {
		return "none configured"
	}
	return strings.Join(names, ", ")
}

// checkEndpoints refuses endpoints that carry credentials (user:password@ or a query): etcd's
// client URLs take none, and every message that names an endpoint would print them. The error
// shows the endpoint redacted.
func checkEndpoints(eps []string) error {
	for _, ep := range eps {
		u, err := url.Parse(ep)
		if err != nil {
			return fmt.Errorf("%w: endpoint %s is not a URL: give host:port or https://host:port", ErrUsage, redact.URL(ep))
		}
		if s := strings.ToLower(u.Scheme); s != "http" && s != "https" {
			return fmt.Errorf("%w: endpoint %s: etcdguard reaches etcd over http:// or https:// (host:port, or https://host:port)", ErrUsage, redact.Parsed(&url.URL{Scheme: u.Scheme, Host: u.Host}))
		}
		if u.User != nil || u.RawQuery != "" || u.Fragment != "" || strings.Trim(u.Path, "/") != "" {
			return fmt.Errorf("%w: endpoint %s carries credentials, a path or parameters, which etcd's client URLs do not take: give https://host:port, and authenticate with --cert and --key", ErrUsage, redact.Parsed(&url.URL{Scheme: u.Scheme, Host: u.Host}))
		}
	}
	return nil
}

// normalizeEndpoints adds a scheme to bare host:port endpoints, as etcdctl accepts them.
func normalizeEndpoints(eps []string, tls bool) []string {
	out := make([]string, 0, len(eps))
	for _, ep := range eps {
		ep = strings.TrimSpace(ep)
		if ep == "" {
			continue
		}
		if !strings.Contains(ep, "://") {
			if tls {
				ep = "https://" + ep
			} else {
				ep = "http://" + ep
			}
		}
		out = append(out, ep)
	}
	return out
}

func splitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func overrideString(dst *string, v string) {
	if v != "" {
		*dst = v
	}
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

func newVersionCommand(env Env) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print etcdguard's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(env.Stdout, "etcdguard", Version)
			return nil
		},
	}
}

// Version is etcdguard's version. It is a variable only so that the linker can set it
// (-ldflags "-X github.com/etcdguard/etcdguard/internal/cli.Version=..."); nothing assigns it.
var Version = "dev"

// commandContext returns the command's context; cobra sets it from ExecuteContext.
func commandContext(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}
