// Package config reads etcdguard's YAML configuration file. Unknown keys are an error, so a typo
// never silently turns a setting off. Flags and ETCDCTL_* environment variables override it; that
// merging happens in the CLI, which owns the flags and the environment.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	"gopkg.in/yaml.v3"

	"github.com/etcdguard/etcdguard/internal/cluster"
	"github.com/etcdguard/etcdguard/internal/repository"
)

// Config is the content of the configuration file.
type Config struct {
	// Connection settings, named as etcdctl's flags.
	Endpoints      []string `yaml:"endpoints"`
	CACert         string   `yaml:"cacert"`
	Cert           string   `yaml:"cert"`
	Key            string   `yaml:"key"`
	DialTimeout    Duration `yaml:"dial-timeout"`
	CommandTimeout Duration `yaml:"command-timeout"`

	// Targets are where backups are copied to.
	Targets []repository.Target `yaml:"targets"`

	// Compression is zstd (the default) or none.
	Compression string `yaml:"compression"`
	// AgeRecipients encrypt backups: age public keys, or paths of recipients files.
	AgeRecipients []string `yaml:"age-recipients"`
	// AgeIdentities are age identity files used to read encrypted backups.
	AgeIdentities []string `yaml:"age-identities"`
	// WorkDir holds scratch copies of snapshots while they are verified.
	WorkDir string `yaml:"work-dir"`

	// Cluster describes the members for `etcdguard recover`.
	Cluster cluster.Cluster `yaml:"cluster"`
	// StateDir keeps recovery plans until they are finished.
	StateDir string `yaml:"state-dir"`

	// Agent holds the settings of `etcdguard agent` only; every one has a default.
	Agent Agent `yaml:"agent"`

	// Policy is the 3-2-1 rule `etcdguard policy check` and the agent judge the targets by.
	Policy Policy `yaml:"policy"`
}

// Policy is the `policy:` section: the 3-2-1 rule's numbers (default 3 copies, 2 media, 1
// offline copy at most 7 days old).
type Policy struct {
	Copies        int      `yaml:"copies"`
	Media         int      `yaml:"media"`
	Offline       int      `yaml:"offline"`
	OfflineMaxAge Duration `yaml:"offline-max-age"`
}

// Agent is the `agent:` section: what only the long-running agent uses.
type Agent struct {
	// SnapshotSchedule says when full snapshots are taken, in cron syntax (see ParseSchedule).
	SnapshotSchedule string `yaml:"snapshot-schedule"`
	// ListenAddress is the host:port of the agent's HTTP endpoints (/-/healthy, /-/ready).
	ListenAddress string `yaml:"listen-address"`
	// DeltaLog turns the delta log on (the default) or off.
	DeltaLog *bool `yaml:"delta-log"`
	// DeltaTarget names the target that keeps the delta log's open segment: a file:// target
	// that is not offline (the first such one when empty). Sealed segments are shipped from it to every other target.
	DeltaTarget string `yaml:"delta-target"`
	// DeltaSyncInterval is how often the open segment is made durable (default 50ms);
	// DeltaSealInterval how often it is sealed, stored and shipped (default 10s).
	DeltaSyncInterval Duration `yaml:"delta-sync-interval"`
	DeltaSealInterval Duration `yaml:"delta-seal-interval"`
	// PolicyCheckInterval is how often the agent checks the 3-2-1 rule (default 15m; it also
	// checks after each snapshot it stores).
	PolicyCheckInterval Duration `yaml:"policy-check-interval"`
	// Drill turns the scheduled restore drills on (the default) or off; DrillSchedule says when
	// (cron, default daily at 03:30); DrillTarget names the target drilled (default: the first
	// that is not a folder of this host, the copy a disaster leaves).
	Drill         *bool  `yaml:"drill"`
	DrillSchedule string `yaml:"drill-schedule"`
	DrillTarget   string `yaml:"drill-target"`
	// Prune turns the scheduled pruning on (the default: only targets with a keep: policy are
	// pruned); PruneSchedule says when (cron, default hourly at minute 15).
	Prune         *bool  `yaml:"prune"`
	PruneSchedule string `yaml:"prune-schedule"`
}

// PruneOn reports whether scheduled pruning is on: unless prune is false.
func (a Agent) PruneOn() bool { return a.Prune == nil || *a.Prune }

// DrillOn reports whether scheduled drills are on: unless drill is false.
func (a Agent) DrillOn() bool { return a.Drill == nil || *a.Drill }

// DeltaLogOn reports whether the delta log is on: unless delta-log is false.
func (a Agent) DeltaLogOn() bool { return a.DeltaLog == nil || *a.DeltaLog }

// Default agent settings.
const (
	// DefaultSnapshotSchedule takes a full snapshot every 30 minutes.
	DefaultSnapshotSchedule = "*/30 * * * *"
	// DefaultListenAddress serves the agent's endpoints on the loopback interface only.
	DefaultListenAddress = "127.0.0.1:9479"
	// DefaultDrillSchedule runs a restore drill every day at 03:30.
	DefaultDrillSchedule = "30 3 * * *"
	// DefaultPruneSchedule prunes every hour, at minute 15 (between the default snapshots).
	DefaultPruneSchedule = "15 * * * *"
)

// Schedule says when a recurring job is due.
type Schedule interface {
	// Next returns the first time the job is due strictly after t.
	Next(t time.Time) time.Time
}

var scheduleParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseSchedule reads a cron schedule: the standard five fields (minute, hour, day of month,
// month, day of week; "*/30 * * * *"), or @hourly, @daily, @every 10m and the like, in the host's
// time zone unless it starts with CRON_TZ=Zone. A sixth, leading field of seconds is accepted
// for tests ("*/2 * * * * *"); production schedules have no use for it. A schedule that never
// fires, such as 31 February, is refused: the agent would never take a snapshot.
func ParseSchedule(spec string) (Schedule, error) {
	// robfig/cron cuts a time zone prefix at the first space and panics (slice bounds) when
	// there is none: "CRON_TZ=UTC" alone crashed the agent at start or at a reload.
	if (strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ=")) && !strings.Contains(spec, " ") {
		return nil, fmt.Errorf("agent: snapshot-schedule %q has a time zone but no schedule after it: write them separated by a space, such as \"CRON_TZ=UTC 0 3 * * *\"", spec)
	}
	s, err := scheduleParser.Parse(spec)
	if err != nil {
		return nil, fmt.Errorf("agent: snapshot-schedule %q is not a cron schedule such as \"*/30 * * * *\" (minute, hour, day of month, month, day of week): %w", spec, err)
	}
	// robfig/cron turns a duration under a second into one second: @every 0s or -30m would run
	// a snapshot every second.
	if d, ok := everyDuration(spec); ok && d <= 0 {
		return nil, fmt.Errorf("agent: snapshot-schedule %q: @every needs a positive duration such as @every 30m (%s would take a snapshot every second)", spec, d)
	}
	// robfig/cron's Next looks five years ahead and returns the zero time when it finds nothing.
	// A cron schedule has no year field: one that fires at all fires within four years of a leap
	// year's 1 January (29 February is the rarest date). A fixed start, not the clock, keeps the
	// check the same on every host and in every test.
	if s.Next(time.Date(2024, time.January, 1, 0, 0, 0, 0, time.UTC)).IsZero() {
		return nil, fmt.Errorf("agent: snapshot-schedule %q never fires: no date matches its day of month and month (such as 31 February), so no snapshot would ever be taken", spec)
	}
	return s, nil
}

// everyDuration returns the duration of an "@every" schedule that robfig/cron has parsed, after
// its CRON_TZ= or TZ= prefix, read as robfig/cron reads it; false for any other schedule.
func everyDuration(spec string) (time.Duration, bool) {
	if strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ=") {
		_, rest, _ := strings.Cut(spec, " ")
		spec = strings.TrimSpace(rest)
	}
	rest, ok := strings.CutPrefix(spec, "@every ")
	if !ok {
		return 0, false
	}
	d, err := time.ParseDuration(rest)
	return d, err == nil
}

// Default returns the settings used when neither the file nor a flag says otherwise.
func Default() Config {
	return Config{
		Endpoints:      []string{"127.0.0.1:2379"},
		DialTimeout:    Duration(2 * time.Second),
		CommandTimeout: Duration(5 * time.Second),
		Compression:    repository.CompressionZstd,
		StateDir:       "/var/lib/etcdguard",
		Agent:          Agent{SnapshotSchedule: DefaultSnapshotSchedule, ListenAddress: DefaultListenAddress, DrillSchedule: DefaultDrillSchedule, PruneSchedule: DefaultPruneSchedule},
		Policy:         Policy{Copies: 3, Media: 2, Offline: 1, OfflineMaxAge: Duration(7 * 24 * time.Hour)},
	}
}

// Duration is a time.Duration written as "5s" in YAML.
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration such as 5s or 1m: %w", n.Line, s, err)
	}
	*d = Duration(v)
	return nil
}

// Load reads a configuration file over the defaults.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config file: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return Config{}, fmt.Errorf("config file %s: %w", path, err)
	}
	return cfg, nil
}

// Parse reads configuration YAML over the defaults, rejecting unknown keys, and checks it.
func Parse(data []byte) (Config, error) {
	cfg := Default()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, err
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// Validate checks the settings without changing them.
func (c Config) Validate() error {
	switch c.Compression {
	case repository.CompressionZstd, repository.CompressionNone:
	default:
		return fmt.Errorf("compression %q: use zstd or none", c.Compression)
	}
	names := map[string]bool{}
	normalized := map[string]bool{} // with the default names filled in
	for _, t := range c.Targets {
		n := t
		if err := n.Normalize(); err != nil {
			return err
		}
		normalized[n.Name] = true
		if t.Name != "" && names[t.Name] {
			return fmt.Errorf("two targets are named %q: give each a distinct name", t.Name)
		}
		names[t.Name] = true
	}
	if c.DialTimeout < 0 || c.CommandTimeout < 0 {
		return errors.New("timeouts must not be negative")
	}
	if _, err := ParseSchedule(c.Agent.SnapshotSchedule); err != nil {
		return err
	}
	if _, err := ParseSchedule(c.Agent.DrillSchedule); err != nil {
		return fmt.Errorf("agent: drill-schedule: %w", err)
	}
	if _, err := ParseSchedule(c.Agent.PruneSchedule); err != nil {
		return fmt.Errorf("agent: prune-schedule: %w", err)
	}
	if c.Agent.DrillTarget != "" && !normalized[c.Agent.DrillTarget] {
		return fmt.Errorf("agent: drill-target %q names no target", c.Agent.DrillTarget)
	}
	if c.Agent.DeltaSyncInterval < 0 || c.Agent.DeltaSealInterval < 0 || c.Agent.PolicyCheckInterval < 0 {
		return errors.New("agent: delta-sync-interval, delta-seal-interval and policy-check-interval must not be negative")
	}
	if p := c.Policy; p.Copies < 0 || p.Media < 0 || p.Offline < 0 || p.OfflineMaxAge < 0 {
		return errors.New("policy: copies, media, offline and offline-max-age must not be negative")
	}
	if c.Agent.DeltaTarget != "" && !normalized[c.Agent.DeltaTarget] {
		return fmt.Errorf("agent: delta-target %q names no target: use the name of a file:// target", c.Agent.DeltaTarget)
	}
	return CheckListenAddress(c.Agent.ListenAddress)
}

// CheckListenAddress checks a host:port to listen on ("127.0.0.1:9479", ":9479" for every
// interface, port 0 for any free port).
func CheckListenAddress(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err == nil {
		var n uint64
		n, err = strconv.ParseUint(port, 10, 16)
		if err == nil && n > 65535 {
			err = errors.New("port out of range")
		}
	}
	if err != nil {
		return fmt.Errorf("agent: listen-address %q is not host:port such as 127.0.0.1:9479: %w", addr, err)
	}
	return nil
}
