// Command chaos runs randomized fault trials against replctl's failover protocol: a real
// Temporal server process, four agent processes each behind its own TCP proxy, a source
// dataset rewritten every trial, and one fault per trial (kill -9, SIGSTOP, network cut of the
// active agent, kill of the application host's agent during quiesce, server restart) at a
// random moment of a random step. A reader samples the target replica all the time; a
// checker judges every run. It prints one line per trial and one summary line:
//
//	trials=N completed=N corrupt=0 mixed=0 frozen=0 stale_accepted=0 takeover_p50=…s takeover_p99=…s
//
// (takeover percentiles over the agent faults; the server-restart kind has its own line), and exits non-zero if any trial did not complete or any counter is not zero. Run it
// with `make chaos TRIALS=20` (test/chaos/run.sh builds bin/replctl first).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/replctl/replctl/activities"
)

// options are the harness's flags.
type options struct {
	trials, deadQueue int
	kinds             []string // fault kinds to cycle through (default faultKinds)
	bin               string
	heartbeat, s2s    time.Duration
	scriptSleep       time.Duration
	shape             datasetShape
	seed              uint64
	runTimeout        time.Duration
	zombieWait        time.Duration
	reconnectWait     time.Duration
	workDir           string
	logsDir           string
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.trials, "trials", 20, "fault trials (kinds round-robin: kill, stop, cut, kill-app, restart)")
	fs.IntVar(&o.deadQueue, "dead-queue", 3, "extra trials where an agent is killed before its step is scheduled")
	kinds := fs.String("kinds", strings.Join(faultKinds, ","), "comma-separated fault kinds to cycle through")
	fs.StringVar(&o.bin, "bin", "bin/replctl", "the replctl binary")
	fs.DurationVar(&o.heartbeat, "heartbeat", 2*time.Second, "the job's heartbeat timeout")
	fs.DurationVar(&o.s2s, "schedule-to-start", 3*time.Second, "the job's schedule-to-start timeout")
	fs.DurationVar(&o.scriptSleep, "script-sleep", 800*time.Millisecond, "how long freeze.sh and thaw.sh take")
	fs.IntVar(&o.shape.FilesMin, "files-min", 40, "fewest files per generation")
	fs.IntVar(&o.shape.FilesMax, "files-max", 80, "most files per generation")
	sizeMin := fs.Int("size-min-kib", 64, "smallest file (KiB)")
	sizeMax := fs.Int("size-max-kib", 2048, "largest file (KiB)")
	fs.Uint64Var(&o.seed, "seed", 0, "random seed (0: from the clock; printed so a run can be repeated)")
	fs.DurationVar(&o.runTimeout, "run-timeout", 3*time.Minute, "a run that takes longer fails its trial")
	fs.DurationVar(&o.zombieWait, "zombie-wait", 3*time.Second, "wait after SIGCONT or proxy restore before checking, so a zombie can try to publish")
	fs.DurationVar(&o.reconnectWait, "reconnect-wait", 30*time.Second, "how long an agent may take to poll again after a cut or a server restart")
	fs.StringVar(&o.workDir, "workdir", "", "parent of the temporary world (default: the system temp dir)")
	fs.StringVar(&o.logsDir, "logs", "", "where logs are kept when something failed (default: a new dir under /tmp)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 1 {
		return o, fmt.Errorf("want at most one argument (the number of trials), got %q", fs.Args())
	}
	if fs.NArg() == 1 {
		n, err := strconv.Atoi(fs.Arg(0))
		if err != nil {
			return o, fmt.Errorf("number of trials %q: %w", fs.Arg(0), err)
		}
		o.trials = n
	}
	o.shape.SizeMin, o.shape.SizeMax = int64(*sizeMin)<<10, int64(*sizeMax)<<10
	for _, k := range strings.Split(*kinds, ",") {
		if k = strings.TrimSpace(k); k == "" {
			continue
		}
		if !slices.Contains(faultKinds, k) {
			return o, fmt.Errorf("-kinds: unknown fault kind %q (kinds: %s)", k, strings.Join(faultKinds, ", "))
		}
		o.kinds = append(o.kinds, k)
	}
	if len(o.kinds) == 0 {
		return o, fmt.Errorf("-kinds: want at least one of %s", strings.Join(faultKinds, ", "))
	}
	switch {
	case o.trials < 0 || o.deadQueue < 0:
		return o, errors.New("-trials and -dead-queue must not be negative")
	case o.shape.FilesMin < 1 || o.shape.FilesMax < o.shape.FilesMin:
		return o, fmt.Errorf("-files-min %d / -files-max %d: want 1 <= min <= max", o.shape.FilesMin, o.shape.FilesMax)
	case o.shape.SizeMin < headerSize || o.shape.SizeMax < o.shape.SizeMin:
		return o, fmt.Errorf("-size-min-kib %d / -size-max-kib %d: want 1 <= min <= max", *sizeMin, *sizeMax)
	case o.heartbeat <= 0 || o.s2s <= 0:
		return o, errors.New("-heartbeat and -schedule-to-start must be positive")
	}
	if o.seed == 0 {
		o.seed = uint64(time.Now().UnixNano())
	}
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ok, err := run(ctx, o, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(1)
	}
	if !ok {
		os.Exit(1)
	}
}

// run sets up the world, runs the trials, tears everything down and prints the summary.
// ok is false when a trial failed a check.
func run(ctx context.Context, o options, out io.Writer) (ok bool, err error) {
	bin, err := filepath.Abs(o.bin)
	if err != nil {
		return false, err
	}
	if _, err := os.Stat(bin); err != nil {
		return false, fmt.Errorf("replctl binary: %w (build it: go build -o bin/replctl ./cmd/replctl)", err)
	}
	dir, err := os.MkdirTemp(o.workDir, "replctl-chaos-")
	if err != nil {
		return false, err
	}
	fmt.Fprintf(out, "chaos: world %s, seed %d, heartbeat=%s schedule_to_start=%s\n", dir, o.seed, o.heartbeat, o.s2s)

	// A private copy of the binary: a rebuild of bin/replctl during a long run must not
	// change the agents restarted between trials.
	own := filepath.Join(dir, "replctl")
	if err := copyExecutable(bin, own); err != nil {
		_ = os.RemoveAll(dir)
		return false, err
	}
	w, err := newWorld(ctx, dir, own, o.heartbeat, o.s2s, o.scriptSleep)
	defer func() {
		w.teardown()
		if !ok || err != nil {
			logs := o.logsDir
			if logs == "" {
				logs = filepath.Join(os.TempDir(), "replctl-chaos-logs-"+time.Now().Format("20060102-150405"))
			}
			if kerr := w.keepLogs(logs); kerr == nil {
				fmt.Fprintf(out, "chaos: logs kept in %s\n", logs)
			}
		}
		_ = os.RemoveAll(dir)
	}()
	if err != nil {
		return false, fmt.Errorf("setting up the world: %w", err)
	}

	h := &harness{
		w: w, opt: o,
		rng:  rand.New(rand.NewPCG(o.seed, 1)),
		wrng: rand.New(rand.NewPCG(o.seed, 2)),
		gens: &generations{},
		est: map[activities.Step]time.Duration{
			activities.StepQuiesce: o.scriptSleep, activities.StepResume: o.scriptSleep, activities.StepPrecopy: time.Second, activities.StepPush: time.Second, activities.StepPull: time.Second,
		},
		perByte: map[activities.Step]float64{},
	}
	h.reader = newReader(w.targetLink(), w.fenceFile(), h.gens, o.seed)
	rctx, rcancel := context.WithCancel(ctx)
	readerDone := make(chan struct{})
	go func() { h.reader.run(rctx); close(readerDone) }()
	defer func() { rcancel(); <-readerDone }()

	// A warm-up run without a fault: the target gets its first replica and the harness
	// learns how long each step takes.
	warm := h.runTrial(ctx, "warm-up", kindNone, "", "")
	printTrial(out, warm)
	if !warm.ok() {
		return false, errors.New("the warm-up run without a fault failed: the world is broken, not the protocol")
	}
	if err := h.heal(ctx, warm); err != nil {
		return false, err
	}
	fmt.Fprintf(out, "chaos: step estimates quiesce=%s resume=%s push=%.0fMB/s pull=%.0fMB/s\n",
		secs(h.est[activities.StepQuiesce]), secs(h.est[activities.StepResume]), mbps(h.perByte[activities.StepPush]), mbps(h.perByte[activities.StepPull]))

	// Each kind cycles through its steps in a random order: random, yet 4 rounds of kinds
	// cover every (kind, step) pair.
	rotation := map[string][]activities.Step{}
	for _, k := range o.kinds {
		s := append([]activities.Step(nil), kindSteps[k]...)
		h.rng.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
		rotation[k] = s
	}
	var results, dead []*trialResult
	for i := 0; i < o.trials && ctx.Err() == nil; i++ {
		kind := o.kinds[i%len(o.kinds)]
		steps := rotation[kind]
		step := steps[(i/len(o.kinds))%len(steps)]
		r := h.runTrial(ctx, fmt.Sprintf("trial %d/%d", i+1, o.trials), kind, step, "")
		printTrial(out, r)
		results = append(results, r)
		if err := h.heal(ctx, r); err != nil {
			return false, fmt.Errorf("after %s: bringing the agents back: %w", r.label, err)
		}
	}
	victims := []string{"b1", "a1"}
	for i := 0; i < o.deadQueue && ctx.Err() == nil; i++ {
		v := victims[i%len(victims)]
		r := h.runTrial(ctx, fmt.Sprintf("dead-queue %d/%d", i+1, o.deadQueue), kindDeadQueue, "", v)
		printTrial(out, r)
		dead = append(dead, r)
		if err := h.heal(ctx, r); err != nil {
			return false, fmt.Errorf("after %s: bringing the agents back: %w", r.label, err)
		}
	}
	if ctx.Err() != nil {
		return false, fmt.Errorf("interrupted: %w", ctx.Err())
	}
	rcancel()
	<-readerDone
	return printSummary(out, o, h, results, dead), nil
}

// copyExecutable copies the binary src to dst (mode 0755).
func copyExecutable(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copying %s to %s: %w", src, dst, err)
	}
	return out.Close()
}

// printTrial prints the one line of a trial, then its problems and notes indented.
func printTrial(out io.Writer, r *trialResult) {
	verdict := "ok"
	if !r.ok() {
		var why []string
		if !r.completed {
			why = append(why, "not completed")
		}
		for _, c := range []struct {
			bad  bool
			name string
		}{{r.corrupt, "corrupt"}, {r.frozen, "frozen"}, {r.stale, "stale_accepted"}, {r.reader.Mixed > 0, "mixed"}, {r.reader.Partial > 0, "partial"}, {r.reader.Bad > 0, "bad_content"}} {
			if c.bad {
				why = append(why, c.name)
			}
		}
		verdict = "FAIL(" + strings.Join(why, ",") + ")"
	}
	step, delay, agent, takeover, lat := dash(string(r.step)), "-", dash(r.victim), "-", "-"
	if !r.faultAt.IsZero() && r.kind != kindDeadQueue {
		delay = secs(r.delay)
	}
	if r.missed != "" {
		delay = "missed"
	}
	if r.to != "" {
		takeover = r.from + "->" + r.to
	}
	if r.hasLat {
		lat = secs(r.latency)
	}
	if len(r.dead) > 0 {
		var ds []string
		for _, d := range r.dead {
			ds = append(ds, secs(d))
		}
		lat = strings.Join(ds, ",") + "(dead-queue)"
	}
	fmt.Fprintf(out, "%-15s kind=%-8s step=%-7s delay=%-6s agent=%-6s takeover=%-8s latency=%-7s gen=%d replica=%s early=%t reader=%d/%d verdict=%s (%s)\n",
		r.label, r.kind, step, delay, agent, takeover, lat, r.gen, dash(r.replicaName), r.early, r.reader.Samples, r.reader.Full, verdict, secs(r.took))
	if !r.completed {
		fmt.Fprintf(out, "    run error: %s\n", r.runErr)
	}
	if r.missed != "" {
		fmt.Fprintf(out, "    fault missed: %s\n", r.missed)
	}
	for _, p := range r.problems {
		fmt.Fprintf(out, "    problem: %s\n", p)
	}
	for _, n := range r.notes {
		fmt.Fprintf(out, "    note: %s\n", n)
	}
}

// printSummary prints the per-kind latencies, the dead-queue figures, the reader's totals
// and, last, the one summary line. It returns whether everything passed.
func printSummary(out io.Writer, o options, h *harness, results, dead []*trialResult) bool {
	var completed, corrupt, frozen, stale, early, missed, late, delayed int
	wfTimeouts := map[string]int{}
	var all []time.Duration
	perKind := map[string][]time.Duration{}
	detect, handoff := map[string][]time.Duration{}, map[string][]time.Duration{}
	for _, r := range results {
		if r.completed {
			completed++
		}
		corrupt += b2i(r.corrupt)
		frozen += b2i(r.frozen)
		stale += b2i(r.stale)
		early += b2i(r.early)
		if r.missed != "" {
			missed++
		}
		late += b2i(r.late)
		delayed += b2i(len(r.wfTimeouts) > 0)
		for _, t := range r.wfTimeouts {
			wfTimeouts[t]++
		}
		if r.hasLat {
			// The headline is the agent-loss takeover; a server restart's takeovers also
			// wait for the server to come back and are reported on their own kind line.
			if r.kind != kindRestart {
				all = append(all, r.latency)
			}
			perKind[r.kind] = append(perKind[r.kind], r.latency)
			if r.hasDetect {
				detect[r.kind] = append(detect[r.kind], r.detect)
				handoff[r.kind] = append(handoff[r.kind], r.latency-r.detect)
			}
		}
	}
	fmt.Fprintf(out, "chaos: heartbeat=%s schedule_to_start=%s seed=%d files=%d-%d size=%d-%dKiB script_sleep=%s\n",
		o.heartbeat, o.s2s, o.seed, o.shape.FilesMin, o.shape.FilesMax, o.shape.SizeMin>>10, o.shape.SizeMax>>10, o.scriptSleep)
	for _, k := range faultKinds {
		n := 0
		for _, r := range results {
			n += b2i(r.kind == k)
		}
		ls := perKind[k]
		fmt.Fprintf(out, "kind %-8s trials=%d takeovers=%d latency p50=%s p99=%s max=%s (fault->timed out p50=%s p99=%s; timed out->next start p50=%s p99=%s)\n",
			k, n, len(ls), pct(ls, 0.5), pct(ls, 0.99), pct(ls, 1),
			pct(detect[k], 0.5), pct(detect[k], 0.99), pct(handoff[k], 0.5), pct(handoff[k], 0.99))
	}
	deadOK := true
	var dl []time.Duration
	for _, r := range dead {
		dl = append(dl, r.dead...)
		deadOK = deadOK && r.ok()
	}
	goal := o.s2s + time.Second
	met := 0
	for _, d := range dl {
		met += b2i(d <= goal)
	}
	fmt.Fprintf(out, "dead_queue trials=%d ok=%d takeovers=%d latency p50=%s p99=%s max=%s goal<=%s (schedule_to_start+1s) met=%d/%d\n",
		len(dead), countOK(dead), len(dl), pct(dl, 0.5), pct(dl, 0.99), pct(dl, 1), secs(goal), met, len(dl))
	rt := h.reader.totals()
	fmt.Fprintf(out, "reader samples=%d full_checks=%d partial=%d mixed=%d bad_content=%d\n", rt.Samples, rt.Full, rt.Partial, rt.Mixed, rt.Bad)
	fmt.Fprintf(out, "notes early_publish=%d (replica published by a superseded attempt before the fence moved: accepted, not stale) faults_missed=%d faults_after_step=%d agent_restarts_for_reconnect=%d\n",
		early, missed, late, h.reconnectRestarts)
	var wt []string
	for _, k := range sortedKeys(wfTimeouts) {
		wt = append(wt, fmt.Sprintf("%s=%d", k, wfTimeouts[k]))
	}
	if len(wt) == 0 {
		wt = []string{"none"}
	}
	fmt.Fprintf(out, "workflow_task_timeouts trials=%d %s (a lost agent's sticky queue or a frozen poller holds the next workflow task)\n", delayed, strings.Join(wt, " "))
	fmt.Fprintf(out, "trials=%d completed=%d corrupt=%d mixed=%d frozen=%d stale_accepted=%d takeover_p50=%s takeover_p99=%s\n",
		len(results), completed, corrupt, rt.Mixed, frozen, stale, pct(all, 0.5), pct(all, 0.99))
	return completed == len(results) && corrupt == 0 && frozen == 0 && stale == 0 && rt.problems() == 0 && deadOK
}

// pct is the nearest-rank percentile p of ds, in seconds ("n/a" when empty).
func pct(ds []time.Duration, p float64) string {
	if len(ds) == 0 {
		return "n/a"
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(float64(len(s))*p+0.999999) - 1
	i = max(0, min(i, len(s)-1))
	return secs(s[i])
}

// mbps turns seconds per byte into MB/s.
func mbps(secPerByte float64) float64 {
	if secPerByte <= 0 {
		return 0
	}
	return 1 / secPerByte / 1e6
}

func secs(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', 2, 64) + "s" }

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func countOK(rs []*trialResult) int {
	n := 0
	for _, r := range rs {
		n += b2i(r.ok())
	}
	return n
}
