// Command bench measures replctl against cp -a and rsync -a --delete on the same machine, in
// the same run: full and 1 % incremental replication of a large-file dataset (A) and a
// small-file dataset (B), the application's freeze window, the agents' peak RSS, the
// orchestration overhead (an empty dataset) and the takeover latency after kill -9 of the
// pushing agent. `make bench` / `make bench-small` run it through test/bench/run.sh.
//
// Timings are reported, never asserted: the command fails only when something breaks,
// e.g. a replica that differs from its source.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/replctl/replctl/internal/testworld"
)

// options are the command's flags.
type options struct {
	mode      string
	dir       string
	bin       string
	serverBin string
	runs      int
	emptyRuns int
	takeovers int
	heartbeat time.Duration
	timeout   time.Duration
	step      time.Duration
	profile   bool
	only      string
	rev       string
	journal   string
}

func main() {
	var o options
	flag.StringVar(&o.mode, "mode", "small", "dataset sizes: small (CI) or full")
	flag.StringVar(&o.dir, "dir", envOr("BENCH_DIR", "/tmp/replctl-bench"), "bench directory: cached datasets, targets, results (env BENCH_DIR)")
	flag.StringVar(&o.bin, "replctl", "bin/replctl", "replctl binary to benchmark: the CLI and the agents")
	flag.StringVar(&o.serverBin, "replctl-server", "", "replctl binary that runs `replctl server` (default -replctl; run.sh passes the full build and a -tags noserver -replctl, as the packages ship them)")
	flag.IntVar(&o.runs, "runs", 3, "timed runs per tool, dataset and mode (medians are reported)")
	flag.IntVar(&o.emptyRuns, "empty-runs", 5, "timed runs of the empty dataset (orchestration overhead)")
	flag.IntVar(&o.takeovers, "takeovers", 2, "takeover samples (kill -9 of the pushing agent)")
	flag.DurationVar(&o.heartbeat, "heartbeat", 2*time.Second, "heartbeat timeout of the bench jobs")
	flag.DurationVar(&o.timeout, "timeout", 0, "limit for the whole bench (default 45m small, 4h full)")
	flag.DurationVar(&o.step, "step-timeout", 0, "limit for one copy by any tool (default 10m small, 60m full)")
	flag.BoolVar(&o.profile, "profile", true, "take CPU profiles of a full push and pull of dataset B")
	flag.StringVar(&o.rev, "rev", "", "what replctl was built from (run.sh passes the git commit)")
	flag.StringVar(&o.journal, "change-journal", "off", "the agents' --change-journal (off, preflight or push)")
	flag.StringVar(&o.only, "only", "", "comma list of phases to run (a,b,c,sparse,empty,takeover,profile); default all")
	flag.Parse()
	if o.mode != "small" && o.mode != "full" {
		fmt.Fprintf(os.Stderr, "bench: -mode %q: want small or full\n", o.mode)
		os.Exit(2)
	}
	if o.timeout == 0 {
		o.timeout = map[string]time.Duration{"small": 45 * time.Minute, "full": 4 * time.Hour}[o.mode]
	}
	if o.step == 0 {
		o.step = map[string]time.Duration{"small": 10 * time.Minute, "full": 60 * time.Minute}[o.mode]
	}
	if o.runs < 1 {
		o.runs = 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	err := run(ctx, o)
	cancel()
	stop()
	// Whatever happened, no server or agent outlives the bench.
	stopAll()
	if err != nil {
		if errors.Is(err, context.Canceled) {
			err = fmt.Errorf("interrupted (%w); its servers and agents are stopped", err)
		}
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w (the whole bench is limited to %s: -timeout)", err, o.timeout)
		}
		fmt.Fprintln(os.Stderr, "bench: FAILED:", err)
		os.Exit(1)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// specs are the datasets of each mode.
func specs(mode string) []Spec {
	if mode == "full" {
		return []Spec{
			{Name: "a", Files: 2048, MinSize: 1 << 20, MaxSize: 1 << 20, PerDir: 256, Seed: 1},
			{Name: "b", Files: 200000, MinSize: 1024, MaxSize: 8192, PerDir: 1000, AddDel: 20, Seed: 2},
			{Name: "c", Files: 1000000, MinSize: 256, MaxSize: 1024, PerDir: 1000, Seed: 3, Growth: true},
		}
	}
	return []Spec{
		{Name: "a", Files: 64, MinSize: 1 << 20, MaxSize: 1 << 20, PerDir: 16, Seed: 1},
		{Name: "b", Files: 5000, MinSize: 1024, MaxSize: 8192, PerDir: 500, AddDel: 5, Seed: 2},
		{Name: "c", Files: 20000, MinSize: 256, MaxSize: 1024, PerDir: 500, Seed: 3, Growth: true},
	}
}

// bench is one bench run's state.
type bench struct {
	o         options
	h         *replctlHarness
	report    *Report
	datasets  map[string]*Dataset
	srcDigest map[string]testworld.Tree // dataset → digest of its current state
	logMu     sync.Mutex
	logFile   *os.File
}

func (b *bench) logf(format string, args ...any) {
	line := time.Now().Format("15:04:05") + " " + fmt.Sprintf(format, args...)
	b.logMu.Lock()
	defer b.logMu.Unlock()
	fmt.Println(line)
	if b.logFile != nil {
		fmt.Fprintln(b.logFile, line)
	}
}

func (b *bench) phase(name string) bool {
	if b.o.only == "" {
		return true
	}
	for _, p := range strings.Split(b.o.only, ",") {
		if strings.TrimSpace(p) == name {
			return true
		}
	}
	return false
}

func run(ctx context.Context, o options) error {
	var err error
	if o.dir, err = filepath.Abs(o.dir); err != nil {
		return err
	}
	if o.serverBin == "" {
		o.serverBin = o.bin
	}
	for _, b := range []struct {
		path *string
		what string
	}{{&o.bin, "replctl binary"}, {&o.serverBin, "replctl server binary"}} {
		if *b.path, err = filepath.Abs(*b.path); err != nil {
			return err
		}
		if _, err := os.Stat(*b.path); err != nil {
			return fmt.Errorf("%s %s: %w (run.sh builds it)", b.what, *b.path, err)
		}
	}
	for _, tool := range []string{"rsync", "cp", "sync"} {
		if _, err := lookPath(tool); err != nil {
			return fmt.Errorf("%s not found on PATH: install it (`make test-deps` installs rsync)", tool)
		}
	}
	// Each mode has its own cached datasets, work area, log, profiles and lock, so a small run
	// (CI) and a full run can share BENCH_DIR; two runs of one mode cannot.
	work := filepath.Join(o.dir, "work", o.mode)
	dataDir, metaDir := filepath.Join(o.dir, "data", o.mode), filepath.Join(o.dir, "meta", o.mode)
	for _, d := range []string{o.dir, dataDir, metaDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	unlock, err := lockDir(filepath.Join(o.dir, ".lock-"+o.mode))
	if err != nil {
		return err
	}
	defer unlock()
	// Entries of an older layout (directly under data/, meta/, work/, profiles/) are stale.
	for _, d := range []string{"data", "meta", "work", "profiles"} {
		ents, _ := os.ReadDir(filepath.Join(o.dir, d))
		for _, e := range ents {
			if e.Name() != "small" && e.Name() != "full" {
				if err := removeAll(ctx, filepath.Join(o.dir, d, e.Name())); err != nil {
					return err
				}
			}
		}
	}
	for _, f := range []string{"bench", "bench.log"} { // older layout, too
		if err := os.Remove(filepath.Join(o.dir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	b := &bench{o: o, datasets: map[string]*Dataset{}, srcDigest: map[string]testworld.Tree{}}
	if b.logFile, err = os.Create(filepath.Join(o.dir, "bench-"+o.mode+".log")); err != nil {
		return err
	}
	defer b.logFile.Close()
	b.report = newReport(o)
	b.logf("replctl bench, mode %s, %d run(s) per tool, dir %s", o.mode, o.runs, o.dir)
	b.logf("machine: %s", b.report.Machine)
	if o.journal != "off" {
		b.logf("agents run with --change-journal=%s", o.journal)
	}
	if o.rev != "" {
		b.logf("replctl built from %s", o.rev)
	}

	// Probe once whether the page cache can be dropped; every timed run says so again.
	b.report.CacheDrop = dropCaches()
	if b.report.CacheDrop {
		b.logf("page cache: dropped before every timed run (sync; echo 3 > /proc/sys/vm/drop_caches)")
	} else {
		b.logf("page cache: CANNOT be dropped here (needs root and a writable /proc/sys): timings are warm-cache")
	}

	// The working area holds targets and agent state; it is rebuilt every run.
	b.logf("cleaning %s", work)
	if err := removeAll(ctx, work); err != nil {
		return err
	}
	for _, d := range []string{"logs", "storage", "hosts", "peers"} {
		if err := os.MkdirAll(filepath.Join(work, d), 0o755); err != nil {
			return err
		}
	}

	for _, s := range specs(o.mode) {
		if s.Growth && !b.phase(s.Name) { // C takes minutes to make: only when it is measured
			continue
		}
		t := time.Now()
		ds, err := PrepareDataset(s, filepath.Join(dataDir, s.Name), metaDir, b.logf)
		if err != nil {
			return err
		}
		b.datasets[s.Name] = ds
		b.report.Datasets = append(b.report.Datasets, ds.Spec)
		b.logf("dataset %s: ready after %s", s.Name, time.Since(t).Round(time.Second))
	}
	if err := os.MkdirAll(filepath.Join(dataDir, "empty"), 0o755); err != nil {
		return err
	}
	if b.datasets["sparse"], err = prepareSparse(filepath.Join(dataDir, "sparse"), sparseApparent(o.mode)); err != nil {
		return err
	}

	b.h = &replctlHarness{
		bin: o.bin, serverBin: o.serverBin, work: work, srcRoot: dataDir, heartbeat: o.heartbeat,
		cfgFile: filepath.Join(work, "replctl.yaml"), markers: filepath.Join(work, "markers.log"),
		agents: map[string]*testworld.Proc{}, pprof: map[string]string{}, logf: b.logf, journal: o.journal,
		jobs: []benchJob{
			{Name: "bench-a", Dataset: "a", Target: "tgt-a"},
			{Name: "bench-b", Dataset: "b", Target: "tgt-b"},
			{Name: "bench-c", Dataset: "c", Target: "tgt-c"},
			{Name: "bench-empty", Dataset: "empty", Target: "tgt-empty"},
			{Name: "bench-sparse", Dataset: "sparse", Target: "tgt-sparse"},
			{Name: "bench-tk-a", Dataset: "a", Target: "tgt-tk-a"},
			{Name: "bench-tk-b", Dataset: "b", Target: "tgt-tk-b"},
		},
	}
	if err := resetPeakRSS(os.Getpid()); err != nil {
		b.h.restartForRSS = true
		b.report.RSSMethod = "VmHWM of each agent process from /proc/PID/status; clear_refs is not permitted here (" + err.Error() +
			"), so agents are RESTARTED before every timed run to reset it. cp/rsync: sum of the VmHWM of every process of the tool, polled every 20 ms while it runs."
	}
	b.logf("peak RSS: %s", b.report.RSSMethod)
	for _, host := range []string{"a1", "b1"} {
		port, err := testworld.FreePort()
		if err != nil {
			return err
		}
		b.h.pprof[host] = fmt.Sprintf("127.0.0.1:%d", port)
	}
	if err := b.h.writeScripts(); err != nil {
		return err
	}
	b.logf("starting replctl server")
	if err := b.h.startServer(ctx); err != nil {
		return err
	}
	defer b.h.stopServer()
	defer b.h.stopAgents()
	if err := b.h.writeConfig(); err != nil {
		return err
	}
	if out, err := runCmd(ctx, time.Minute, o.bin, "config", "validate", b.h.cfgFile); err != nil {
		return fmt.Errorf("bench config %s is invalid: %w\n%s", b.h.cfgFile, err, out)
	}
	for _, j := range b.h.jobs {
		if err := b.h.wipeTarget(ctx, j); err != nil {
			return err
		}
	}
	b.logf("server on %s; config %s", b.h.addr, b.h.cfgFile)

	// Write what we have even when a later phase fails: partial results are still results.
	defer func() {
		b.report.Finished = time.Now()
		if err := b.report.write(o.dir, o.mode); err != nil {
			b.logf("writing results: %v", err)
		}
	}()

	for _, name := range []string{"a", "b"} {
		if !b.phase(name) {
			continue
		}
		if err := b.datasetPhase(ctx, b.datasets[name]); err != nil {
			return fmt.Errorf("dataset %s: %w", name, err)
		}
	}
	if b.phase("c") {
		if err := b.growthPhase(ctx, b.datasets["c"]); err != nil {
			return fmt.Errorf("dataset c: %w", err)
		}
	}
	if b.phase("sparse") {
		if err := b.sparsePhase(ctx); err != nil {
			return fmt.Errorf("sparse dataset: %w", err)
		}
	}
	if b.phase("empty") {
		if err := b.emptyPhase(ctx); err != nil {
			return fmt.Errorf("empty dataset: %w", err)
		}
	}
	if b.phase("takeover") && o.takeovers > 0 {
		if err := b.takeoverPhase(ctx); err != nil {
			return fmt.Errorf("takeover: %w", err)
		}
	}
	if b.phase("profile") && o.profile {
		if err := b.profilePhase(ctx); err != nil {
			return fmt.Errorf("profile: %w", err)
		}
	}
	b.report.finish()
	// The copies take several GiB (full); logs and config stay. After a failure everything
	// stays, for a look at what broke.
	b.h.stopAgents()
	for _, d := range []string{"storage", "peers", "hosts"} {
		if err := removeAll(ctx, filepath.Join(work, d)); err != nil {
			return err
		}
	}
	fmt.Println()
	fmt.Print(b.report.text())
	b.logf("results: %s and %s (also results-%s.md/.json)", filepath.Join(o.dir, "results.md"), filepath.Join(o.dir, "results.json"), o.mode)
	return nil
}

func lookPath(tool string) (string, error) {
	for _, d := range filepath.SplitList(os.Getenv("PATH")) {
		p := filepath.Join(d, tool)
		if info, err := os.Stat(p); err == nil && !info.IsDir() && info.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", os.ErrNotExist
}

// machineInfo describes the machine for the report.
func machineInfo() string {
	mem, _ := procMeminfoKB("MemTotal")
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("%d CPUs, %.1f GiB RAM, Linux %s, %s", runtime.NumCPU(), float64(mem)/(1<<20), strings.TrimSpace(string(kernel)), runtime.Version())
}

func procMeminfoKB(key string) (int64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, key+":") {
			var v int64
			_, err := fmt.Sscanf(strings.TrimSpace(line[len(key)+1:]), "%d", &v)
			return v, err
		}
	}
	return 0, fmt.Errorf("/proc/meminfo has no %s", key)
}

// load1 is the 1-minute load average: other work on the machine skews timings.
func load1() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	var v float64
	fmt.Sscanf(string(b), "%f", &v)
	return v
}
