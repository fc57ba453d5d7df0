package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/etcdguard/etcdguard/internal/atomicfile"
)

// StartEnv is what a member is started with: the cluster state, membership and token etcd uses
// when its data dir is empty (a replaced member joins "existing"; a restored member has data and
// ignores them).
type StartEnv struct {
	State          string // "new" or "existing"
	InitialCluster string
	Token          string
}

// Controller stops and starts one member's etcd.
type Controller interface {
	// Stop stops the member and returns once it is stopped (or was not running).
	Stop(ctx context.Context) error
	// Start starts the member and returns once it is started; it does not wait for health.
	Start(ctx context.Context, env StartEnv) error
	// Describe says how the member is controlled, for the plan.
	Describe() string
}

// NewController returns the controller a member's description asks for.
func NewController(m Member) Controller {
	switch {
	case m.SystemdUnit != "":
		return &systemdControl{unit: m.SystemdUnit}
	case m.StaticPodManifest != "":
		return StaticPodController(m.StaticPodManifest)
	}
	return &commandControl{start: m.StartCommand, stop: m.StopCommand}
}

// StaticPodController stops and starts whatever a kubeadm static-pod manifest runs (an etcd
// member, or the control plane's kube-apiserver, controller-manager and scheduler, which recover
// stops around a restore) by moving the manifest out of the kubelet's folder and back.
func StaticPodController(manifest string) Controller { return &staticPodControl{manifest: manifest} }

// commandControl runs shell commands.
type commandControl struct{ start, stop string }

func (c *commandControl) Describe() string { return "commands" }

func (c *commandControl) Stop(ctx context.Context) error {
	return runShell(ctx, c.stop, nil)
}

func (c *commandControl) Start(ctx context.Context, env StartEnv) error {
	return runShell(ctx, c.start, []string{
		"ETCD_INITIAL_CLUSTER_STATE=" + env.State,
		"ETCD_INITIAL_CLUSTER=" + env.InitialCluster,
		"ETCD_INITIAL_CLUSTER_TOKEN=" + env.Token,
	})
}

func runShell(ctx context.Context, command string, env []string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("run %q: %w: %s", command, err, strings.TrimSpace(lastLines(out.String(), 5)))
	}
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// systemdControl runs systemctl. The start environment is given to the unit through a runtime
// drop-in (/run/systemd/system/UNIT.d/50-etcdguard.conf), gone at the next boot.
type systemdControl struct{ unit string }

func (c *systemdControl) Describe() string { return "systemd unit " + c.unit }

func (c *systemdControl) Stop(ctx context.Context) error {
	return runCommand(ctx, "systemctl", "stop", c.unit)
}

func (c *systemdControl) Start(ctx context.Context, env StartEnv) error {
	dir := filepath.Join("/run/systemd/system", c.unit+".d")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create systemd drop-in folder %s: %w", dir, err)
	}
	dropIn := fmt.Sprintf("# written by etcdguard recover; removed at the next boot\n[Service]\nEnvironment=ETCD_INITIAL_CLUSTER_STATE=%s\nEnvironment=ETCD_INITIAL_CLUSTER=%s\nEnvironment=ETCD_INITIAL_CLUSTER_TOKEN=%s\n",
		env.State, env.InitialCluster, env.Token)
	if err := os.WriteFile(filepath.Join(dir, "50-etcdguard.conf"), []byte(dropIn), 0o644); err != nil {
		return fmt.Errorf("write systemd drop-in: %w", err)
	}
	if err := runCommand(ctx, "systemctl", "daemon-reload"); err != nil {
		return err
	}
	return runCommand(ctx, "systemctl", "start", c.unit)
}

func runCommand(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(lastLines(string(out), 5)))
	}
	return nil
}

// staticPodControl moves a kubeadm static-pod manifest out of the kubelet's folder (the kubelet
// stops the pod) and back (the kubelet starts it). Before starting a member that joins an
// existing cluster, it sets --initial-cluster-state and --initial-cluster in the manifest; the
// manifest as it was is kept beside the held one.
type staticPodControl struct{ manifest string }

func (c *staticPodControl) Describe() string { return "static pod " + c.manifest }

// held is where the manifest waits while the member is stopped: outside the kubelet's folder.
func (c *staticPodControl) held() string {
	return filepath.Join(filepath.Dir(filepath.Dir(c.manifest)), "etcdguard-held-"+filepath.Base(c.manifest))
}

func (c *staticPodControl) Stop(context.Context) error {
	if _, err := os.Stat(c.manifest); errors.Is(err, fs.ErrNotExist) {
		if _, herr := os.Stat(c.held()); herr == nil {
			return nil // already stopped by an earlier run
		}
		return fmt.Errorf("static-pod manifest %s does not exist", c.manifest)
	}
	if err := os.Rename(c.manifest, c.held()); err != nil {
		return fmt.Errorf("move %s out of the kubelet's folder: %w", c.manifest, err)
	}
	return nil
}

func (c *staticPodControl) Start(_ context.Context, env StartEnv) error {
	src := c.held()
	if _, err := os.Stat(src); errors.Is(err, fs.ErrNotExist) {
		if _, merr := os.Stat(c.manifest); merr == nil {
			return nil // already started
		}
		return fmt.Errorf("static-pod manifest %s is neither in place nor held at %s", c.manifest, src)
	}
	if env.State == "existing" {
		data, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		edited, err := SetEtcdFlags(data, map[string]string{
			"initial-cluster-state": env.State, "initial-cluster": env.InitialCluster,
		})
		if err != nil {
			return fmt.Errorf("edit %s: %w", src, err)
		}
		if err := keepOriginal(src, data); err != nil {
			return err
		}
		if err := atomicfile.Write(src, edited, 0o600); err != nil {
			return err
		}
	}
	if err := os.Rename(src, c.manifest); err != nil {
		return fmt.Errorf("move %s back into the kubelet's folder: %w", c.manifest, err)
	}
	return nil
}

// keepOriginal saves a manifest as it was before etcdguard edits it, beside the held one, as
// HELD.orig, and never over an earlier saved copy: a member replaced a second time starts from
// the manifest the first replace edited, and the operator's own manifest is the first copy. Later
// copies are HELD.orig-2, HELD.orig-3, ...
func keepOriginal(held string, data []byte) error {
	name := held + ".orig"
	for i := 2; ; i++ {
		err := atomicfile.WriteNew(name, data, 0o600)
		if !errors.Is(err, fs.ErrExist) {
			return err
		}
		name = fmt.Sprintf("%s.orig-%d", held, i)
	}
}

// SetEtcdFlags sets --NAME=VALUE flags in the etcd container's command of a static-pod
// manifest, replacing the flags already there and adding the others.
func SetEtcdFlags(manifest []byte, flags map[string]string) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(manifest, &doc); err != nil {
		return nil, err
	}
	cmd := findEtcdCommand(&doc)
	if cmd == nil {
		return nil, errors.New("no container with an etcd command in the manifest")
	}
	done := map[string]bool{}
	for _, item := range cmd.Content {
		for name, val := range flags {
			if strings.HasPrefix(item.Value, "--"+name+"=") {
				item.Value = "--" + name + "=" + val
				done[name] = true
			}
		}
	}
	for _, name := range sortedKeys(flags) {
		if !done[name] {
			cmd.Content = append(cmd.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "--" + name + "=" + flags[name]})
		}
	}
	return yaml.Marshal(&doc)
}

func findEtcdCommand(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == "command" && n.Content[i+1].Kind == yaml.SequenceNode {
				seq := n.Content[i+1]
				if len(seq.Content) > 0 && filepath.Base(seq.Content[0].Value) == "etcd" {
					return seq
				}
			}
		}
	}
	for _, c := range n.Content {
		if found := findEtcdCommand(c); found != nil {
			return found
		}
	}
	return nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
