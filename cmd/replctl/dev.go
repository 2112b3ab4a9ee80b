//go:build !noserver

package main

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/workers"
)

// DevOptions are the flags of `replctl dev`.
type DevOptions struct {
	Server ServerOptions
	// Sample creates a small sample dataset for each job whose source does not exist yet.
	Sample bool
	// Run starts a run of this job once everything is up, waits for it and prints its status.
	Run string
	// Exit stops everything after the --run job ended (its exit code is dev's).
	Exit bool
	// MetricsAddr serves the agents' Prometheus metrics there when set.
	MetricsAddr string
	// ShutdownGrace bounds the wait on Ctrl-C for the runs to resume what an agent quiesced.
	ShutdownGrace time.Duration
	// Check runs `replctl check` on every agent once they run and prints its table.
	Check bool
}

// NewCmdDev is `replctl dev`: the embedded server, the Web UI and every agent of the config
// in one process, for a first try on one machine.
func NewCmdDev(f *Factory, runF func(*DevOptions) error) *cobra.Command {
	o := &DevOptions{}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run an embedded Temporal server, the Web UI and all agents of the config in one process",
		Long: "Run everything on one machine: a real Temporal server (SQLite file under the state dir), its Web UI,\n" +
			"and one agent per host of the config (default: " + DefaultConfig + ").\n" +
			"Then, in another terminal: replctl start orders --wait",
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkShutdownGrace(o.ShutdownGrace); err != nil {
				return err
			}
			if runF != nil {
				return runF(o)
			}
			return runDev(cmd, f, o)
		},
	}
	o.Server.AddFlags(cmd.Flags(), "")
	cmd.Flags().BoolVar(&o.Sample, "sample", true, "create a small sample dataset for jobs whose source dataset does not exist")
	cmd.Flags().StringVar(&o.Run, "run", "", "run this job once everything is up, wait for it and print its status")
	cmd.Flags().StringVar(&o.MetricsAddr, "metrics", "", "serve the agents' Prometheus metrics at http://ADDR/metrics")
	cmd.Flags().BoolVar(&o.Check, "check", true, "run `replctl check` on every agent at start and print its table (failures only warn)")
	cmd.Flags().BoolVar(&o.Exit, "exit", false, "with --run: stop after the run, exiting with its exit code")
	addShutdownGraceFlag(cmd.Flags(), &o.ShutdownGrace)
	return cmd
}

func runDev(cmd *cobra.Command, f *Factory, o *DevOptions) error {
	ctx := cmd.Context()
	cfg, err := f.Config()
	if err != nil {
		return err
	}
	state := os.Getenv("REPLCTL_STATE")
	if o.Server.DBFile == "" && state != "" {
		o.Server.DBFile = filepath.Join(state, "temporal.db")
	}
	if !cmd.Flags().Changed("port") {
		o.Server.Port = portOf(cfg.Temporal.Address, o.Server.Port)
	}
	if !cmd.Flags().Changed("server-namespace") {
		o.Server.Namespace = cfg.Temporal.Namespace
	}
	if !cmd.Flags().Changed("task-queue") {
		o.Server.TaskQueue = cfg.Temporal.TaskQueue
	}
	if o.Sample {
		if err := makeSamples(f, cfg); err != nil {
			return err
		}
	}
	for _, h := range cfg.Hosts {
		if err := checkAgentStorage(cfg, h.Name); err != nil {
			return err
		}
	}
	if o.MetricsAddr != "" {
		if err := serveMetrics(f, o.MetricsAddr); err != nil {
			return err
		}
	}
	srv, err := o.Server.start(ctx, f)
	if err != nil {
		return err
	}
	defer srv.Stop()
	f.Address = srv.FrontendAddress()
	c, err := f.Client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	// The agents stop together and before the server: while one holds an application
	// quiesced they all keep working, so the steps it hands over have somewhere to run.
	var agents []*workers.Agent
	defer func() { stopAgents(f, agents, o.ShutdownGrace) }()
	for _, h := range cfg.Hosts {
		a, err := startAgent(c, cfg, h.Name, newSDKLogger(f.Logger()), agentJournal{})
		if err != nil {
			return err
		}
		agents = append(agents, a)
	}
	names := make([]string, 0, len(cfg.Jobs))
	for _, j := range cfg.Jobs {
		names = append(names, j.Name)
	}
	fmt.Fprintf(f.ErrOut, "%d agents running (%s); jobs: %s\n", len(agents), hostNames(agents), strings.Join(names, ", "))
	syncSchedulesOnStart(ctx, f, c, cfg)
	if o.Check {
		checkOnStart(ctx, f, c, cfg)
	}
	if o.Run != "" {
		if _, err := cfg.Job(o.Run); err != nil {
			return &ExitError{Code: ExitUsage, Err: err}
		}
		err := startRun(ctx, f, c, cfg.Temporal.TaskQueue, &StartOptions{Job: o.Run, Wait: true, Output: "table"})
		if o.Exit {
			return err
		}
		if err != nil {
			fmt.Fprintln(f.ErrOut, "replctl:", err)
		}
	}
	fmt.Fprintf(f.ErrOut, "try:  go run ./cmd/replctl start %s --wait   (Ctrl-C here stops everything)\n", firstOr(names, "JOB"))
	<-ctx.Done()
	fmt.Fprintln(f.ErrOut, "stopping agents and server")
	return nil
}

func hostNames(agents []*workers.Agent) string {
	s := make([]string, len(agents))
	for i, a := range agents {
		s[i] = a.Host
	}
	return strings.Join(s, ", ")
}

func firstOr(s []string, def string) string {
	if len(s) > 0 {
		return s[0]
	}
	return def
}

// makeSamples creates a small sample dataset for each job whose source dataset is missing,
// only inside the dev state dir (REPLCTL_STATE): a dataset path that leads out of it (a
// storage path that is a symlink to /etc, say) refuses them all before any is written.
func makeSamples(f *Factory, cfg *config.Config) error {
	state := os.Getenv("REPLCTL_STATE")
	type sample struct{ job, dir string }
	var todo []sample
	for _, j := range cfg.Jobs {
		p, err := activities.NewPlan(cfg, j.Name)
		if err != nil {
			return err
		}
		src, err := p.SourceDir(p.Order.Source[0])
		if err != nil {
			return err
		}
		if _, err := os.Lstat(src); err == nil {
			continue
		}
		if err := withinStateDir(state, src); err != nil {
			return &ExitError{Code: ExitUsage, Err: fmt.Errorf("sample dataset for job %s: %w; nothing was written (create the dataset yourself, or run dev with --sample=false)", j.Name, err)}
		}
		todo = append(todo, sample{j.Name, src})
	}
	for _, s := range todo {
		n, size, err := writeSample(s.dir, s.job)
		if err != nil {
			return fmt.Errorf("sample dataset for job %s: %w", s.job, err)
		}
		fmt.Fprintf(f.ErrOut, "created sample dataset %s (%d files, %d KiB)\n", s.dir, n, size/1024)
	}
	return nil
}

// withinStateDir refuses a path to be created that resolves (through any symlink on the way)
// outside the dev state dir state, which it creates when missing.
func withinStateDir(state, p string) error {
	if state == "" {
		return fmt.Errorf("%s: no dev state dir to create it in (set --state-dir or REPLCTL_STATE)", p)
	}
	if err := os.MkdirAll(state, 0o755); err != nil {
		return err
	}
	realState, err := filepath.EvalSymlinks(state)
	if err != nil {
		return err
	}
	// The nearest existing parent is resolved; the missing rest has no symlink to follow.
	existing, rest := filepath.Clean(p), ""
	for {
		if _, err := os.Lstat(existing); err == nil {
			break
		}
		parent := filepath.Dir(existing)
		if parent == existing {
			break
		}
		rest = filepath.Join(filepath.Base(existing), rest)
		existing = parent
	}
	real, err := filepath.EvalSymlinks(existing)
	if err != nil {
		return err
	}
	real = filepath.Join(real, rest)
	if !strings.HasPrefix(real, realState+string(filepath.Separator)) {
		return fmt.Errorf("%s resolves to %s, outside the dev state dir %s (is a storage path a symlink?)", p, real, state)
	}
	return nil
}

// writeSample writes a deterministic little tree: nested dirs, files of varied sizes, an
// empty file, an empty dir and a symlink.
func writeSample(dir, seed string) (files int, bytes int64, err error) {
	h := sha256.Sum256([]byte(seed))
	rng := rand.New(rand.NewPCG(binary.LittleEndian.Uint64(h[:8]), binary.LittleEndian.Uint64(h[8:16])))
	tmp := dir + ".creating"
	if err := os.RemoveAll(tmp); err != nil {
		return 0, 0, err
	}
	for d := 0; d < 8; d++ {
		sub := filepath.Join(tmp, fmt.Sprintf("table-%02d", d), fmt.Sprintf("part-%d", d%3))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			return 0, 0, err
		}
		for i := 0; i < 25; i++ {
			buf := make([]byte, 512+rng.IntN(64*1024))
			for k := range buf {
				buf[k] = byte(rng.Uint32())
			}
			if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("rows-%03d.dat", i)), buf, 0o644); err != nil {
				return 0, 0, err
			}
			files++
			bytes += int64(len(buf))
		}
	}
	if err := os.WriteFile(filepath.Join(tmp, "EMPTY"), nil, 0o600); err != nil {
		return 0, 0, err
	}
	if err := os.MkdirAll(filepath.Join(tmp, "empty-dir"), 0o755); err != nil {
		return 0, 0, err
	}
	if err := os.Symlink("table-00/part-0/rows-000.dat", filepath.Join(tmp, "latest")); err != nil {
		return 0, 0, err
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return 0, 0, err
	}
	return files + 1, bytes, os.Rename(tmp, dir)
}
