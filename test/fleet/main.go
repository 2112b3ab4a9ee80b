// Command fleet simulates a fleet of replctl hosts against a real Temporal server and
// measures what the server carries: N simulated hosts (each a real Temporal worker on its
// own queue, many per process, whose fake data steps sleep a configurable time and
// heartbeat like the real ones), M jobs on Temporal Schedules (the schedules `replctl
// schedule sync` makes, with an interval spec), and the real replctl workflows on the shared
// queue. It reports schedule-fire to run-start lag, overhead per run, takeover latency when a
// process holding some hosts is killed with SIGKILL, CPU and memory per server process,
// database growth and writes, history events per run, and with -ramp the highest rate of
// runs whose lag stays within -lag-limit. See docs/scale.md; `make fleet` and `make fleet-ci`
// run it through test/fleet/run.sh.
//
//	fleet [flags]          the coordinator (starts `replctl server` unless -address is given)
//	fleet agent [flags]    a worker process (the coordinator starts these)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// options are the coordinator's flags.
type options struct {
	shape       fleetShape
	address     string
	bin         string
	procs       int
	wfProcs     int
	pollers     int
	wfPollers   int
	stepTime    time.Duration
	scriptTime  time.Duration
	interval    time.Duration
	idle        time.Duration
	warmup      time.Duration
	window      time.Duration
	victims     int
	ramp        []float64
	rampStep    time.Duration
	lagLimit    time.Duration
	serverPIDs  []watched
	serverMatch *regexp.Regexp
	pgDSN       string
	// postgres starts Temporal as a cluster on PostgreSQL here (testworld.StartCluster)
	// instead of the SQLite server, with shards history shards.
	postgres bool
	shards   int
	out      string
	logs     string
	ci       bool
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("fleet", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o.shape.flags(fs)
	fs.StringVar(&o.address, "address", "", "frontend of an existing Temporal cluster (default: start `replctl server` on SQLite)")
	fs.StringVar(&o.bin, "bin", "bin/replctl", "the replctl binary (its `server`, when -address is not given)")
	fs.IntVar(&o.procs, "procs", 2, "worker processes for the simulated hosts (besides the victims' own)")
	fs.IntVar(&o.wfProcs, "wf-procs", 1, "processes running the shared workflow worker (real replctl workflows)")
	fs.IntVar(&o.pollers, "pollers", 1, "activity task pollers per simulated host")
	fs.IntVar(&o.wfPollers, "wf-pollers", 8, "workflow task pollers per workflow process")
	fs.DurationVar(&o.stepTime, "step-time", 5*time.Second, "how long each fake push and pull takes")
	fs.DurationVar(&o.scriptTime, "script-time", 500*time.Millisecond, "how long each fake quiesce, resume and takeover script takes")
	fs.DurationVar(&o.interval, "interval", 15*time.Minute, "every schedule's interval (runs/s = jobs / interval; shorter = time compression)")
	fs.DurationVar(&o.idle, "idle", 15*time.Second, "measure the idle cost of the pollers this long before creating schedules")
	fs.DurationVar(&o.warmup, "warmup", 0, "wait after creating the schedules before measuring (default: one interval)")
	fs.DurationVar(&o.window, "window", 0, "measurement window (default: one interval)")
	fs.IntVar(&o.victims, "victims", 0, "hosts in a process of their own, killed with SIGKILL after the window (0: no kill)")
	ramp := fs.String("ramp", "", "comma-separated rates (runs/s) to step through instead of one window; stops at the first that fails")
	fs.DurationVar(&o.rampStep, "ramp-step", 0, "duration of a ramp step (default: two intervals; the second is measured)")
	fs.DurationVar(&o.lagLimit, "lag-limit", 5*time.Second, "ramp: the highest acceptable lag p99")
	pids := fs.String("server-pids", "", "server processes to measure, NAME=PID,... (with -address)")
	match := fs.String("server-match", "", "regexp on /proc/*/cmdline of server processes to measure; group 1 names the service")
	fs.StringVar(&o.pgDSN, "pg-dsn", "", "PostgreSQL DSN of the cluster's database: size and write counters")
	fs.BoolVar(&o.postgres, "postgres", false, "start Temporal here as a cluster on PostgreSQL (Debian's package): frontend, history, matching and worker as four processes, each measured")
	fs.IntVar(&o.shards, "shards", 16, "with -postgres: history shards")
	fs.StringVar(&o.out, "out", "", "write the report here too")
	fs.StringVar(&o.logs, "logs", "", "logs directory (default: a new dir under /tmp)")
	fs.BoolVar(&o.ci, "ci", false, "assert: runs completed without failures, lag measured, and (with -victims) every lost step taken over")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var err error
	if o.serverPIDs, err = parsePIDs(*pids); err != nil {
		return o, err
	}
	if *match != "" {
		if o.serverMatch, err = regexp.Compile(*match); err != nil {
			return o, fmt.Errorf("-server-match: %w", err)
		}
	}
	for _, r := range strings.Split(*ramp, ",") {
		if r = strings.TrimSpace(r); r == "" {
			continue
		}
		v, err := strconv.ParseFloat(r, 64)
		if err != nil || v <= 0 {
			return o, fmt.Errorf("-ramp: bad rate %q", r)
		}
		o.ramp = append(o.ramp, v)
	}
	if o.warmup == 0 {
		o.warmup = o.interval
	}
	if o.window == 0 {
		o.window = o.interval
	}
	if o.rampStep == 0 {
		o.rampStep = 2 * o.interval
	}
	if o.shape.jobCount == 0 && len(o.ramp) > 0 {
		o.shape.jobCount = int(math.Ceil(slices.Max(o.ramp) * o.interval.Seconds()))
	}
	switch {
	case o.interval < time.Second || o.interval%time.Second != 0:
		return o, errors.New("-interval: want whole seconds, at least 1s")
	case o.procs < 1 || o.wfProcs < 1 || o.pollers < 1 || o.wfPollers < 2:
		return o, errors.New("-procs, -wf-procs and -pollers must be at least 1, -wf-pollers at least 2")
	case o.victims < 0 || o.victims > o.shape.hosts/cellSize:
		return o, fmt.Errorf("-victims: at most one per cell of %d hosts (%d)", cellSize, o.shape.hosts/cellSize)
	case o.postgres && (o.address != "" || o.shards < 1):
		return o, errors.New("-postgres starts its own cluster (no -address) and needs -shards of at least 1")
	case o.address == "" && (len(o.serverPIDs) > 0 || o.serverMatch != nil):
		return o, errors.New("-server-pids and -server-match go with -address (the server started here is measured anyway)")
	}
	return o, nil
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "agent" {
		if err := agentMain(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "fleet agent:", err)
			os.Exit(1)
		}
		return
	}
	o, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "fleet:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "fleet:", err)
		os.Exit(1)
	}
}

// victimHosts picks n hosts, at most one per cell, spread over the fleet and over the cell
// positions, so that each has live peers to take over from it.
func victimHosts(hosts, n int) []int {
	cells := hosts / cellSize
	var out []int
	for k := 0; k < n; k++ {
		cell := k * cells / n
		out = append(out, cell*cellSize+k%cellSize)
	}
	return out
}

// splitHosts deals the hosts not in skip to n processes, in contiguous runs.
func splitHosts(hosts int, skip []int, n int) [][]int {
	dead := map[int]bool{}
	for _, v := range skip {
		dead[v] = true
	}
	var rest []int
	for h := 0; h < hosts; h++ {
		if !dead[h] {
			rest = append(rest, h)
		}
	}
	out := make([][]int, 0, n)
	for i := 0; i < n; i++ {
		part := rest[i*len(rest)/n : (i+1)*len(rest)/n]
		if len(part) > 0 {
			out = append(out, part)
		}
	}
	return out
}
