package main

// The worker processes of the simulator (`fleet agent`): simulated hosts, each a real
// Temporal worker on its own queue (workflows.HostQueue) with fake activities under the real
// names, and the shared workflow worker running the real replctl workflows. Many hosts share
// one process and one client connection. Every activity start and end is one line on stdout,
// which the coordinator reads (events.go).

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/workers"
	"github.com/replctl/replctl/workflows"
)

// agentOptions are the flags of one worker process.
type agentOptions struct {
	address    string
	hosts      []int // indices of the simulated hosts this process runs
	workflow   bool  // run the shared workflow worker (and the Plan fake)
	shape      fleetShape
	stepTime   time.Duration // how long a push or a pull takes
	scriptTime time.Duration // how long a quiesce, resume or takeover script takes
	pollers    int           // activity task pollers per simulated host
	wfPollers  int           // workflow task pollers of the workflow worker
}

func parseAgentFlags(args []string, stderr io.Writer) (agentOptions, error) {
	var o agentOptions
	fs := flag.NewFlagSet("fleet agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.address, "address", "", "Temporal frontend host:port")
	hosts := fs.String("run-hosts", "", "simulated hosts of this process: comma-separated indices or FROM-TO ranges (TO excluded)")
	fs.BoolVar(&o.workflow, "workflow", false, "run the shared workflow worker and the Plan fake")
	o.shape.flags(fs)
	fs.DurationVar(&o.stepTime, "step-time", 5*time.Second, "how long a fake push or pull takes")
	fs.DurationVar(&o.scriptTime, "script-time", 500*time.Millisecond, "how long a fake quiesce, resume or takeover script takes")
	fs.IntVar(&o.pollers, "pollers", 1, "activity task pollers per simulated host")
	fs.IntVar(&o.wfPollers, "wf-pollers", 8, "workflow (and activity) task pollers of the workflow worker")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	var err error
	if o.hosts, err = parseHostList(*hosts); err != nil {
		return o, fmt.Errorf("-run-hosts: %w", err)
	}
	if o.address == "" || (len(o.hosts) == 0 && !o.workflow) {
		return o, errors.New("want -address and -run-hosts or -workflow")
	}
	o.shape.address = o.address
	return o, nil
}

// parseHostList reads "1,5,10-20".
func parseHostList(s string) ([]int, error) {
	var out []int
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		from, to, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(from)
		if err != nil {
			return nil, err
		}
		b := a + 1
		if isRange {
			if b, err = strconv.Atoi(to); err != nil {
				return nil, err
			}
		}
		for i := a; i < b; i++ {
			out = append(out, i)
		}
	}
	return out, nil
}

// formatHostList is parseHostList's inverse (ranges for runs).
func formatHostList(hosts []int) string {
	var parts []string
	for i := 0; i < len(hosts); {
		j := i + 1
		for j < len(hosts) && hosts[j] == hosts[j-1]+1 {
			j++
		}
		if j-i == 1 {
			parts = append(parts, strconv.Itoa(hosts[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", hosts[i], hosts[j-1]+1))
		}
		i = j
	}
	return strings.Join(parts, ",")
}

// emitter writes the event lines; one write per line, so a line is never torn by a kill.
type emitter struct {
	mu sync.Mutex
	w  io.Writer
}

func (e *emitter) line(format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	fmt.Fprintf(e.w, format+"\n", args...)
}

// fakeHost is one simulated host's activities.
type fakeHost struct {
	name       string
	ev         *emitter
	stepTime   time.Duration
	scriptTime time.Duration
}

// work is what every fake step does: report the start, heartbeat like the real lease
// (activities/lease.go: synchronously through the client, every heartbeat timeout / 5,
// between 50 ms and 1 s) for d, report the end. A refused heartbeat (the step was taken
// over) ends it like the real lease does.
func (f *fakeHost) work(ctx context.Context, step activities.Step, d time.Duration, failed string) error {
	info := activity.GetInfo(ctx)
	run := info.WorkflowExecution.RunID
	f.ev.line("S %d %s %s %s %s", time.Now().UnixNano(), f.name, run, step, orDash(failed))
	beats, err := heartbeatFor(ctx, info, step, d)
	ok := 1
	if err != nil {
		ok = 0
	}
	f.ev.line("E %d %s %s %s %d %d %d", time.Now().UnixNano(), f.name, run, step, d.Nanoseconds(), ok, beats)
	return err
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// heartbeatFor heartbeats every interval until d has passed; beats is how many it sent.
func heartbeatFor(ctx context.Context, info activity.Info, step activities.Step, d time.Duration) (beats int, err error) {
	hb := info.HeartbeatTimeout
	if hb <= 0 {
		return 0, sleepCtx(ctx, d)
	}
	c := activity.GetClient(ctx)
	interval := min(max(hb/5, 50*time.Millisecond), time.Second)
	beat := func() error {
		beats++
		cctx, cancel := context.WithTimeout(ctx, hb/2)
		defer cancel()
		err := c.RecordActivityHeartbeat(cctx, info.TaskToken, activities.Progress{Step: step, Phase: "simulated"})
		var nf *serviceerror.NotFound
		var canceled *temporal.CanceledError
		if errors.As(err, &nf) || errors.As(err, &canceled) {
			return fmt.Errorf("%w: %v", activities.ErrTakenOver, err)
		}
		return nil // unreachable server: keep going, as the lease does until it runs out
	}
	if err := beat(); err != nil {
		return beats, err
	}
	end := time.Now().Add(d)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		left := time.Until(end)
		if left <= 0 {
			return beats, nil
		}
		select {
		case <-ctx.Done():
			return beats, ctx.Err()
		case <-time.After(left):
			return beats, nil
		case <-t.C:
			if err := beat(); err != nil {
				return beats, err
			}
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// RunScript stands in for a quiesce, resume or takeover script.
func (f *fakeHost) RunScript(ctx context.Context, in activities.ScriptInput) (activities.ScriptResult, error) {
	err := f.work(ctx, in.Step, f.scriptTime, in.FailedHost)
	return activities.ScriptResult{Step: in.Step, Host: in.Host.Name, Agent: f.name, Script: in.Script, Duration: f.scriptTime}, err
}

// Preflight stands in for the storage check: one heartbeat, no wait.
func (f *fakeHost) Preflight(ctx context.Context, in activities.PreflightInput) (activities.PreflightResult, error) {
	err := f.work(ctx, activities.StepPreflight, 0, "")
	return activities.PreflightResult{Agent: f.name, SourceDirs: in.SourceDirs}, err
}

// Push stands in for a push: an image named after the run.
// A push that carries the quiesce script (one agent is the job's application and source
// agent) stands in for the script first, and for the resume script it carries after, as
// the real agent does (activities/quiescepush.go); a lost agent's heartbeat does not carry
// the push's result here, so the workflow pushes again.
func (f *fakeHost) Push(ctx context.Context, in activities.PushInput) (activities.PushResult, error) {
	var quiesced *activities.ScriptResult
	if q := in.Quiesce; q != nil {
		res, err := f.RunScript(ctx, *q)
		if err != nil {
			return activities.PushResult{}, activities.QuiescePartError(err, res)
		}
		quiesced = &res
	}
	err := f.work(ctx, activities.StepPush, f.stepTime, "")
	out := activities.PushResult{Agent: f.name, ImageID: "fleet-" + in.RunID, Bytes: 1 << 30, Files: 10000, Duration: f.stepTime, Quiesce: quiesced}
	if t := in.Thaw; t != nil && err == nil {
		// And the resume script it carries, once pushed (activities/thawinpush.go).
		res, terr := f.RunScript(ctx, *t)
		if terr != nil {
			out.ThawFailed = terr.Error()
		} else {
			out.Thawed = &res
		}
	}
	return out, err
}

// Precopy stands in for a precopy (the fleet's jobs say precopy: never).
func (f *fakeHost) Precopy(ctx context.Context, _ activities.PrecopyInput) (activities.PrecopyResult, error) {
	err := f.work(ctx, activities.StepPrecopy, f.stepTime, "")
	return activities.PrecopyResult{Agent: f.name, Duration: f.stepTime}, err
}

// Pull stands in for a pull: a verified replica under the input's name and epoch.
func (f *fakeHost) Pull(ctx context.Context, in activities.PullInput) (activities.PullResult, error) {
	err := f.work(ctx, activities.StepPull, f.stepTime, "")
	link := filepath.Join(in.TargetRoot, in.Dataset)
	return activities.PullResult{
		Agent: f.name, ReplicaName: in.ReplicaName, ReplicaPath: filepath.Join(in.TargetRoot, ".replctl/replicas", in.Dataset, in.ReplicaName),
		LinkPath: link, Bytes: 1 << 30, Files: 10000, Verified: true, Epoch: in.Epoch, Duration: f.stepTime,
	}, err
}

// WarmReplica stands in for a target's read-ahead (a job with read_ahead): it reads nothing
// and returns at once, as the real one does once it has read.
func (f *fakeHost) WarmReplica(context.Context, activities.WarmInput) (activities.WarmResult, error) {
	return activities.WarmResult{}, nil
}

// register registers f's activities on w under the real names.
func (f *fakeHost) register(w worker.ActivityRegistry) {
	for name, fn := range map[string]any{
		activities.RunScriptName: f.RunScript, activities.PreflightName: f.Preflight, activities.PushName: f.Push,
		activities.PrecopyName: f.Precopy, activities.PullName: f.Pull, activities.WarmName: f.WarmReplica,
	} {
		w.RegisterActivityWithOptions(fn, activity.RegisterOptions{Name: name})
	}
}

// planner is the Plan fake: the real activities.NewPlan on the fleet's config held in
// memory (the real Plan reads and validates the config file on every run, which for a
// 10,000-job file would measure YAML parsing, not Temporal).
type planner struct {
	cfg *config.Config
	ev  *emitter
}

// Plan resolves the job like the real Plan activity.
func (p *planner) Plan(ctx context.Context, in activities.PlanInput) (activities.PlanResult, error) {
	info := activity.GetInfo(ctx)
	p.ev.line("S %d plan %s %s -", time.Now().UnixNano(), info.WorkflowExecution.RunID, activities.StepPlan)
	plan, err := activities.NewPlan(p.cfg, in.Job)
	if err != nil {
		return activities.PlanResult{}, temporal.NewNonRetryableApplicationError(err.Error(), activities.ErrTypeBadInput, err)
	}
	return activities.PlanResult{Plan: plan, Agent: "fleet-planner"}, nil
}

// agentMain runs one worker process until SIGTERM/SIGINT.
func agentMain(args []string) error {
	o, err := parseAgentFlags(args, os.Stderr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, err := client.DialContext(ctx, client.Options{
		HostPort: o.address, Namespace: "default",
		Logger: sdklog.NewStructuredLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))),
	})
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", o.address, err)
	}
	defer c.Close()
	ev := &emitter{w: os.Stdout}
	// As the real agents: no sticky cache (workers/agent.go says why).
	worker.SetStickyWorkflowCacheSize(0)
	var ws []worker.Worker
	defer func() {
		for _, w := range ws {
			w.Stop()
		}
	}()
	if o.workflow {
		cfg, err := o.shape.config()
		if err != nil {
			return err
		}
		w := worker.New(c, workflows.DefaultTaskQueue, worker.Options{
			Identity:                         "fleet-workflows-" + strconv.Itoa(os.Getpid()),
			MaxConcurrentWorkflowTaskPollers: o.wfPollers, MaxConcurrentActivityTaskPollers: o.wfPollers,
		})
		workers.Register(w)
		w.RegisterActivityWithOptions((&planner{cfg: cfg, ev: ev}).Plan, activity.RegisterOptions{Name: activities.PlanName})
		ws = append(ws, w)
	}
	for _, h := range o.hosts {
		name := hostName(h)
		// Only activities go to a host's queue. (The real agent's host worker does not set
		// DisableWorkflowWorker, so the SDK also polls it for workflow tasks: docs/scale.md.)
		w := worker.New(c, workflows.HostQueue(name), worker.Options{
			Identity: workflows.AgentIdentity(name), MaxConcurrentActivityTaskPollers: o.pollers, DisableWorkflowWorker: true,
		})
		(&fakeHost{name: name, ev: ev, stepTime: o.stepTime, scriptTime: o.scriptTime}).register(w)
		ws = append(ws, w)
	}
	for _, w := range ws {
		if err := w.Start(); err != nil {
			return err
		}
	}
	ev.line("READY %d %d", len(o.hosts), runtime.NumGoroutine())
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			ev.line("STAT %d", runtime.NumGoroutine())
		}
	}
}
