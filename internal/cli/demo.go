package cli

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/etcdguard/etcdguard/internal/cluster"
	"github.com/etcdguard/etcdguard/internal/doctor"
	"github.com/etcdguard/etcdguard/internal/etcdx"
	"github.com/etcdguard/etcdguard/internal/repository"
	"github.com/etcdguard/etcdguard/internal/restore"
	"github.com/etcdguard/etcdguard/internal/scratch"
)

type demoOptions struct {
	dir  string
	keys int
}

func newDemoCommand(env Env, g *globalOptions) *cobra.Command {
	o := &demoOptions{}
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Play the incident: a local 3-member TLS cluster, backups, a power cut, and the recovery",
		Long: `Start a local 3-member etcd cluster with TLS (members run from etcdguard's own embedded etcd
server, so nothing else needs installing), load Kubernetes-shaped data
(/registry/<resource>/<namespace>/<name>), and take, list, verify and fetch backups in a local
repository, printing each command and its output. Then the incident: under a steady write load
the power goes (all three members SIGKILLed at once), one member's WAL tail is torn and another's
database damaged, and 'etcdguard recover' brings the cluster back, printing the plan, the
timeline and how many acknowledged writes were lost (the writer logs them: measured, not
estimated). The cluster is stopped at the end; its folder, certificates and backups are kept in
--dir for you to look at.`,
		Example: `  go run ./cmd/etcdguard demo
  etcdguard demo --dir /tmp/etcdguard-demo --keys 5000`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDemo(commandContext(cmd), env, o)
		},
	}
	cmd.Flags().StringVar(&o.dir, "dir", "", "folder for the demo cluster and its backups (default: a new temporary folder)")
	cmd.Flags().IntVar(&o.keys, "keys", 3000, "number of Kubernetes-shaped keys to load")
	return cmd
}

func runDemo(ctx context.Context, env Env, o *demoOptions) error {
	start := env.Now()
	dir := o.dir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "etcdguard-demo-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find etcdguard's own binary: %w", err)
	}
	say := func(format string, args ...any) {
		fmt.Fprintf(env.Stdout, "\n== [%5.1fs] "+format+"\n", append([]any{env.Now().Sub(start).Seconds()}, args...)...)
	}

	say("starting a 3-member etcd cluster with TLS in %s", dir)
	sc, err := scratch.Start(ctx, scratch.Options{
		Size: 3, TLS: true, Command: []string{self, "etcd"}, Dir: filepath.Join(dir, "cluster"),
	})
	if err != nil {
		return fmt.Errorf("start the demo cluster: %w", err)
	}
	defer sc.Close()
	for _, m := range sc.Members() {
		fmt.Fprintf(env.Stdout, "   %s  client %s  data %s\n", m.Name, m.ClientURL, m.DataDir)
	}

	say("loading %d Kubernetes-shaped keys (/registry/<resource>/<namespace>/<name>)", o.keys)
	cli, err := sc.Client(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	if err := loadRegistry(ctx, cli, 0, o.keys); err != nil {
		return err
	}

	repo := filepath.Join(dir, "backups")
	tape := filepath.Join(dir, "tape", "etcd")
	common := []string{
		"--endpoints", sc.Endpoints()[0],
		"--cacert", sc.CAFile, "--cert", sc.ClientCertFile, "--key", sc.ClientKeyFile,
		"--target", "file://" + repo,
		"--target", "file://" + tape + "?offline=true&media=tape&name=tape",
	}
	run := func(args ...string) error {
		fmt.Fprintf(env.Stdout, "$ etcdguard %s\n", strings.Join(args, " "))
		root := NewRootCommand(env)
		root.SetArgs(append(args, common...))
		return root.ExecuteContext(ctx)
	}

	say("taking a backup; the tape is not mounted, so that copy is skipped with a warning")
	if err := run("snapshot", "save"); err != nil {
		return err
	}

	say("more writes, then a second backup")
	if err := loadRegistry(ctx, cli, o.keys, o.keys/3); err != nil {
		return err
	}
	if err := run("snapshot", "save"); err != nil {
		return err
	}

	say("the tape is mounted again: copy every backup it lacks, verifying each copy")
	if err := os.MkdirAll(tape, 0o700); err != nil {
		return err
	}
	if err := run("snapshot", "copy", "--to", "tape"); err != nil {
		return err
	}

	say("every backup across all targets")
	if err := run("snapshot", "list"); err != nil {
		return err
	}

	say("re-reading and checking every stored copy")
	if err := run("snapshot", "verify", "--all"); err != nil {
		return err
	}

	out := filepath.Join(dir, "restore-me.db")
	say("fetching the newest backup as a plain etcd snapshot, ready for etcdutl snapshot restore")
	if err := run("snapshot", "get", "latest", "--output", out); err != nil {
		return err
	}
	if err := run("snapshot", "status", out); err != nil {
		return err
	}

	// The incident: a steady write load, a backup, then the power goes.
	say("a steady Kubernetes-shaped write load starts; every acknowledged write is logged")
	w := scratch.StartWriter(ctx, cli, "default")
	time.Sleep(time.Second)
	if err := run("snapshot", "save"); err != nil {
		w.Halt()
		return err
	}
	time.Sleep(1500 * time.Millisecond)

	say("POWER CUT: all three members SIGKILLed at the same moment")
	var wg sync.WaitGroup
	for _, m := range sc.Members() {
		wg.Go(func() { _ = m.Kill() })
	}
	wg.Wait()
	acked := w.Halt()
	fmt.Fprintf(env.Stdout, "   the writer had %d writes acknowledged before the cut\n", len(acked))
	ms := sc.Members()
	if err := ms[0].TearWALTail(); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "   %s: WAL tail torn (the last record cut short)\n", ms[0].Name)
	if err := ms[1].ZeroDBPages(2, 4); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "   %s: database pages 2-5 zeroed\n", ms[1].Name)

	say("etcdguard doctor: what is wrong, and what to run (kube-apiserver saw only 'connection refused')")
	doctorArgs := []string{"doctor", "--endpoints", strings.Join(sc.Endpoints(), ","),
		"--cacert", sc.CAFile, "--cert", sc.ClientCertFile, "--key", sc.ClientKeyFile,
		"--target", "file://" + repo, "--target", "file://" + tape + "?offline=true&media=tape&name=tape"}
	for _, m := range ms {
		doctorArgs = append(doctorArgs, "--data-dir", m.DataDir)
	}
	fmt.Fprintf(env.Stdout, "$ etcdguard %s\n", strings.Join(doctorArgs, " "))
	root := NewRootCommand(env)
	root.SetArgs(doctorArgs)
	// Critical findings are the point here: doctor's exit code says so, the demo goes on.
	if err := root.ExecuteContext(ctx); err != nil && !errors.Is(err, doctor.ErrCritical) && !errors.Is(err, doctor.ErrWarning) {
		return err
	}

	say("etcdguard recover: assess every member, decide, carry out, verify")
	r := &restore.Recoverer{
		Etcd:     etcdx.Config{CACert: sc.CAFile, Cert: sc.ClientCertFile, Key: sc.ClientKeyFile},
		Targets:  []repository.Target{{Name: "local", URL: "file://" + repo, Media: "disk"}},
		StateDir: filepath.Join(dir, "state"), Now: env.Now,
		Logger:      slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Controllers: map[string]cluster.Controller{},
	}
	for _, m := range ms {
		r.Cluster.Members = append(r.Cluster.Members, cluster.Member{
			Name: m.Name, PeerURL: m.PeerURL, ClientURL: m.ClientURL, DataDir: m.DataDir,
			StartCommand: "(run by the demo)", StopCommand: "(run by the demo)",
		})
		r.Controllers[m.Name] = demoControl{m}
	}
	plan, err := r.Plan(ctx)
	if err != nil {
		return err
	}
	printPlan(env.Stdout, plan)
	rep, err := r.Apply(ctx, plan, nil)
	printReport(env.Stdout, rep)
	if err != nil {
		return err
	}

	cli2, err := sc.Client(ctx)
	if err != nil {
		return err
	}
	defer cli2.Close()
	lost := 0
	for _, k := range acked {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := cli2.Get(cctx, k, clientv3.WithCountOnly())
		cancel()
		if err != nil {
			return err
		}
		if resp.Count == 0 {
			lost++
		}
	}
	say("acknowledged writes lost: %d of %d (measured: every acknowledged key was read back)", lost, len(acked))
	say("done in %s; stopping the cluster. Cluster, certificates and backups are kept in %s", env.Now().Sub(start).Round(time.Second), dir)
	return nil
}

// demoControl stops and starts a demo member, which the demo runs itself.
type demoControl struct{ m *scratch.Member }

func (d demoControl) Describe() string { return "the demo" }

func (d demoControl) Stop(ctx context.Context) error {
	if !d.m.Running() {
		return nil
	}
	return d.m.Stop(ctx)
}

func (d demoControl) Start(ctx context.Context, _ cluster.StartEnv) error {
	if d.m.Running() {
		return nil
	}
	// Restart waits for the member to serve; the recovery waits for quorum itself, so members
	// started together must not wait for one another here.
	go func() { _ = d.m.Restart(context.WithoutCancel(ctx)) }()
	return nil
}

// loadRegistry writes n keys shaped like Kubernetes objects, starting at index from.
func loadRegistry(ctx context.Context, cli *clientv3.Client, from, n int) error {
	resources := []string{"pods", "deployments", "services", "configmaps", "secrets", "leases"}
	namespaces := []string{"default", "kube-system", "payments", "orders", "monitoring"}
	buf := make([]byte, 48)
	const batch = 100 // etcd's default --max-txn-ops is 128
	for lo := from; lo < from+n; lo += batch {
		var ops []clientv3.Op
		for i := lo; i < min(lo+batch, from+n); i++ {
			res := resources[i%len(resources)]
			ns := namespaces[(i/len(resources))%len(namespaces)]
			key := fmt.Sprintf("/registry/%s/%s/%s-%05d", res, ns, res[:len(res)-1], i)
			_, _ = rand.Read(buf)
			val := fmt.Sprintf(`{"kind":%q,"apiVersion":"v1","metadata":{"name":"%s-%05d","namespace":%q,"uid":%q},"data":%q}`,
				res, res[:len(res)-1], i, ns, base64.RawURLEncoding.EncodeToString(buf[:16]), base64.StdEncoding.EncodeToString(buf))
			ops = append(ops, clientv3.OpPut(key, val))
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := cli.Txn(cctx).Then(ops...).Commit()
		cancel()
		if err != nil {
			return fmt.Errorf("write demo data: %w", err)
		}
	}
	return nil
}
