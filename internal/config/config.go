// Package config reads etcdguard's YAML configuration file. Unknown keys are an error, so a typo
// never silently turns a setting off. Flags and ETCDCTL_* environment variables override it; that
// merging happens in the CLI, which owns the flags and the environment.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

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
}

// Default returns the settings used when neither the file nor a flag says otherwise.
func Default() Config {
	return Config{
		Endpoints:      []string{"127.0.0.1:2379"},
		DialTimeout:    Duration(2 * time.Second),
		CommandTimeout: Duration(5 * time.Second),
		Compression:    repository.CompressionZstd,
		StateDir:       "/var/lib/etcdguard",
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
	for _, t := range c.Targets {
		n := t
		if err := n.Normalize(); err != nil {
			return err
		}
		if t.Name != "" && names[t.Name] {
			return fmt.Errorf("two targets are named %q: give each a distinct name", t.Name)
		}
		names[t.Name] = true
	}
	if c.DialTimeout < 0 || c.CommandTimeout < 0 {
		return errors.New("timeouts must not be negative")
	}
	return nil
}
