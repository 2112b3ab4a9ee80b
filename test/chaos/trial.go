package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"syscall"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/internal/testworld"
	"github.com/replctl/replctl/workflows"
)

// Fault kinds (the brief's a–e), plus the two kinds that inject nothing mid-step.
const (
	kindKill      = "kill"     // a: kill -9 of the agent running the step
	kindStop      = "stop"     // b: SIGSTOP of that agent, SIGCONT after the takeover
	kindCut       = "cut"      // c: its proxy drops and refuses its connections until the takeover
	kindKillApp   = "kill-app" // d: kill -9 of the application host's agent during quiesce
	kindRestart   = "restart"  // e: kill -9 and restart of the Temporal server
	kindNone      = "none"     // warm-up run: no fault
	kindDeadQueue = "dead"     // the agent is killed before its step is scheduled
)

// faultKinds are the kinds the trials cycle through, round-robin.
var faultKinds = []string{kindKill, kindStop, kindCut, kindKillApp, kindRestart}

// kindSteps are the steps each kind may hit.
var kindSteps = map[string][]activities.Step{
	kindKill:    agentSteps,
	kindStop:    agentSteps,
	kindCut:     agentSteps,
	kindKillApp: {activities.StepQuiesce},
	kindRestart: {activities.StepQuiesce, activities.StepPush, activities.StepResume, activities.StepPull},
}

// agentSteps are the steps of a run during which an agent is faulted.
var agentSteps = []activities.Step{activities.StepPrecopy, activities.StepQuiesce, activities.StepPush, activities.StepResume, activities.StepPull}

// trialResult is everything one trial saw.
type trialResult struct {
	label, kind string
	step        activities.Step
	gen         int
	genBytes    int64
	runID       string

	victim   string
	delay    time.Duration // from the step's start to the fault
	faultAt  time.Time
	healedAt time.Time // SIGCONT or proxy restore
	missed   string    // why no fault was injected mid-step, if so
	late     bool      // the step had already completed when the fault landed

	takeovers []workflows.Takeover
	from, to  string
	latency   time.Duration // fault → the next agent's first activity start
	hasLat    bool
	// detect is fault → the server timing out the lost attempt (the rest of latency is the
	// hand-off: workflow task, scheduling on the next queue, its agent starting).
	detect    time.Duration
	hasDetect bool
	dead      []time.Duration // dead-queue takeovers: scheduled → next agent's start
	// wfTimeouts are the timeout types of the run's timed-out workflow tasks (each one
	// delays the run, e.g. by waiting on the sticky queue of a lost agent).
	wfTimeouts []string

	completed   bool
	runErr      string
	corrupt     bool
	frozen      bool
	stale       bool
	early       bool // replica of a superseded epoch, published before the fence moved
	reader      readerCounts
	problems    []string
	notes       []string
	replicaName string
	began       time.Time
	took        time.Duration
}

func (r *trialResult) problem(format string, a ...any) {
	r.problems = append(r.problems, fmt.Sprintf(format, a...))
}

func (r *trialResult) note(format string, a ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, a...))
}

// ok tells whether the trial passed every check.
func (r *trialResult) ok() bool {
	return r.completed && !r.corrupt && !r.frozen && !r.stale && r.reader.problems() == 0
}

// harness runs trials in a world.
type harness struct {
	w      *world
	opt    options
	rng    *rand.Rand // fault choices (main goroutine only)
	wrng   *rand.Rand // the application writer's sizes
	gens   *generations
	genN   int
	reader *reader
	// est is the expected duration of the script steps and perByte that of the data steps
	// per byte of the generation, for "a random moment 0–80% into the step".
	est     map[activities.Step]time.Duration
	perByte map[activities.Step]float64
	// reconnectRestarts counts agents restarted because they did not poll again in time.
	reconnectRestarts int
}

// runTrial runs one replication with one fault and checks the outcome.
func (h *harness) runTrial(ctx context.Context, label, kind string, step activities.Step, deadVictim string) *trialResult {
	r := &trialResult{label: label, kind: kind, step: step, began: time.Now()}
	defer func() { r.took = time.Since(r.began) }()

	// 1. A new generation of the source: the application wrote it before this run.
	h.genN++
	g, err := writeGeneration(h.w.source(), h.genN, h.opt.shape, h.wrng)
	if err != nil {
		r.problem("writing generation %d: %v", h.genN, err)
		return r
	}
	h.gens.add(g)
	r.gen, r.genBytes = g.N, g.Bytes

	if kind == kindDeadQueue {
		r.victim = deadVictim
		r.faultAt = time.Now()
		h.w.agents[deadVictim].proc.Kill()
	}

	// 2. The run.
	run, err := h.w.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: workflows.WorkflowID(job), TaskQueue: workflows.DefaultTaskQueue,
		WorkflowIDReusePolicy:    enums.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		WorkflowExecutionTimeout: h.opt.runTimeout,
		WorkflowTaskTimeout:      workflows.WorkflowTaskTimeout, // as `replctl start` sets it
	}, workflows.ReplicationWorkflowName, workflows.ReplicationInput{Job: job})
	if err != nil {
		r.problem("starting run: %v", err)
		return r
	}
	r.runID = run.GetRunID()
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	wt := newWatcher(h.w.c, run.GetID(), run.GetRunID())
	go wt.run(wctx)
	writerDone := make(chan error, 1)
	go func() { writerDone <- h.applicationWriter(wctx, wt) }()

	// 3. The fault.
	if kind != kindNone && kind != kindDeadQueue {
		h.inject(ctx, wt, r)
	}

	// 4. The end of the run, then time for a zombie to try its luck.
	st, runErr := h.waitRun(ctx, run)
	r.completed = runErr == nil
	if runErr != nil {
		r.runErr = runErr.Error()
		if st.Error != "" {
			r.runErr = st.Error
		}
	}
	r.takeovers = st.Takeovers
	if err := <-writerDone; err != nil {
		r.problem("application writer: %v", err)
	}
	if !r.healedAt.IsZero() {
		sleepUntil(ctx, r.healedAt.Add(h.opt.zombieWait))
	}

	// 5. Checks.
	h.check(ctx, r, run, st, g)
	var rp []string
	r.reader, rp = h.reader.takeTrial()
	r.problems = append(r.problems, rp...)
	return r
}

// estimate is how long step should take for a generation of the given size.
func (h *harness) estimate(step activities.Step, bytes int64) time.Duration {
	if pb := h.perByte[step]; pb > 0 {
		return time.Duration(pb * float64(bytes) * float64(time.Second))
	}
	return h.est[step]
}

// applicationWriter stands in for the application: once the resume step completed (the
// run is pulling), it writes the next generation into the source. The replica must still be
// the generation at quiesce time.
func (h *harness) applicationWriter(ctx context.Context, wt *watcher) error {
	for {
		s := wt.snap()
		if s.phase == workflows.PhasePulling || s.phase == workflows.PhaseCompleted {
			n := h.genN + 1
			g, err := writeGeneration(h.w.source(), n, h.opt.shape, h.wrng)
			if err != nil {
				return err
			}
			h.gens.add(g)
			h.genN = n
			return nil
		}
		if !s.open {
			return nil // the run ended before it resumed the application: nothing to write
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// inject waits until the step's activity is running, sleeps a random 0–80 % of the step's
// expected duration and injects the fault.
func (h *harness) inject(ctx context.Context, wt *watcher, r *trialResult) {
	deadline := time.Now().Add(h.opt.runTimeout)
	var victim string
	var stepStart time.Time
	for {
		s := wt.snap()
		if host, started, ok := s.running(r.step); ok {
			victim, stepStart = host, started
			break
		}
		if !s.open || (phaseRank(s.phase) > phaseRank(stepPhase(r.step)) && !inPhase(r.step, s.phase)) {
			r.missed = fmt.Sprintf("step %s was never seen running (phase %q)", r.step, s.phase)
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			r.missed = fmt.Sprintf("step %s did not start within %s", r.step, h.opt.runTimeout)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	planned := time.Duration(h.rng.Float64() * 0.8 * float64(h.estimate(r.step, r.genBytes)))
	sleepUntil(ctx, stepStart.Add(planned))
	if r.kind == kindKillApp {
		victim = appHost
	}
	r.victim = victim
	a := h.w.agents[victim]
	if r.kind != kindRestart && a == nil {
		r.missed = fmt.Sprintf("step %s runs on unknown worker %q", r.step, victim)
		return
	}
	r.faultAt = time.Now()
	r.delay = r.faultAt.Sub(stepStart)
	switch r.kind {
	case kindKill, kindKillApp:
		a.proc.Kill()
	case kindStop:
		if err := a.proc.Signal(syscall.SIGSTOP); err != nil {
			r.problem("SIGSTOP agent %s: %v", victim, err)
			return
		}
		a.stopped = true
		h.waitTakeover(ctx, wt, r)
		_ = a.proc.Signal(syscall.SIGCONT)
		a.stopped = false
		r.healedAt = time.Now()
	case kindCut:
		a.proxy.Stop()
		a.cut = true
		h.waitTakeover(ctx, wt, r)
		if err := a.proxy.Start(); err != nil {
			r.problem("restoring the proxy of agent %s: %v", victim, err)
		}
		a.cut = false
		r.healedAt = time.Now()
	case kindRestart:
		r.victim = "server"
		if err := h.w.restartServer(ctx); err != nil {
			r.problem("restarting the Temporal server: %v", err)
		}
		r.note("server back after %s", time.Since(r.faultAt).Round(time.Millisecond))
	}
}

// waitTakeover waits until another agent than the victim started an activity after the
// fault (the takeover happened), or the run ended, or the limit passed.
func (h *harness) waitTakeover(ctx context.Context, wt *watcher, r *trialResult) {
	limit := time.Now().Add(60 * time.Second)
	nextHistory := time.Now()
	for time.Now().Before(limit) && ctx.Err() == nil {
		s := wt.snap()
		if _, ok := s.startedByOther(r.victim, r.faultAt); ok {
			return
		}
		if !s.open {
			return
		}
		// Short activities (the takeover script) may start and end between two
		// descriptions: the history has them.
		if time.Now().After(nextHistory) {
			nextHistory = time.Now().Add(200 * time.Millisecond)
			hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			as, err := loadHistory(hctx, h.w.c, wt.id, wt.runID)
			cancel()
			if err == nil {
				for _, a := range as.Attempts {
					if who := agentOf(a); who != "" && who != r.victim && a.Started.After(r.faultAt) {
						return
					}
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.note("no takeover seen within 60s of the fault")
}

// waitRun waits for the run to end and returns its status. Errors talking to the server (it
// may be restarting) are retried until the run's own timeout has surely passed.
func (h *harness) waitRun(ctx context.Context, run client.WorkflowRun) (workflows.Status, error) {
	deadline := time.Now().Add(h.opt.runTimeout + 30*time.Second)
	for {
		var st workflows.Status
		cctx, cancel := context.WithDeadline(ctx, deadline)
		err := run.Get(cctx, &st)
		cancel()
		if err == nil {
			return st, nil
		}
		dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
		d, derr := h.w.c.DescribeWorkflowExecution(dctx, run.GetID(), run.GetRunID())
		dcancel()
		if derr == nil && d.GetWorkflowExecutionInfo().GetStatus() != enums.WORKFLOW_EXECUTION_STATUS_RUNNING {
			// A failed run has no result: ask it for its status.
			qctx, qcancel := context.WithTimeout(ctx, 10*time.Second)
			if v, qerr := h.w.c.QueryWorkflow(qctx, run.GetID(), run.GetRunID(), workflows.StatusQuery); qerr == nil {
				_ = v.Get(&st)
			}
			qcancel()
			return st, fmt.Errorf("run %s ended %s: %w", run.GetRunID(), strings.ToLower(d.GetWorkflowExecutionInfo().GetStatus().String()), err)
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return st, fmt.Errorf("run %s did not end within %s: %w", run.GetRunID(), h.opt.runTimeout, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// heal brings every agent back for the next trial: SIGCONT, proxy restored, killed agents
// restarted; and waits until each one polls again.
func (h *harness) heal(ctx context.Context, r *trialResult) error {
	if !h.w.srv.Alive() {
		r.note("the Temporal server was down after the trial; restarting it")
		if err := h.w.startServer(ctx); err != nil {
			return err
		}
	}
	for _, host := range testworld.Hosts {
		a := h.w.agents[host]
		if a.stopped {
			_ = a.proc.Signal(syscall.SIGCONT)
			a.stopped = false
		}
		if a.cut {
			if err := a.proxy.Start(); err != nil {
				return fmt.Errorf("restoring the proxy of agent %s: %w", host, err)
			}
			a.cut = false
		}
		since := time.Time{}
		switch {
		case !a.proc.Alive():
			if err := a.proc.Start(); err != nil {
				return err
			}
			since = a.proc.Started()
		case r.kind == kindCut && host == r.victim:
			since = r.healedAt
		case r.kind == kindRestart:
			since = r.faultAt
		default:
			continue
		}
		if err := h.w.waitPolling(ctx, host, since, h.opt.reconnectWait); err != nil {
			// The agent is alive but did not come back to the server in time: restart it
			// so the next trial starts from a known state, and say so.
			r.note("agent %s did not poll again within %s; restarted it", host, h.opt.reconnectWait)
			h.reconnectRestarts++
			a.proc.Kill()
			if err := a.proc.Start(); err != nil {
				return err
			}
			if err := h.w.waitPolling(ctx, host, a.proc.Started(), 60*time.Second); err != nil {
				return err
			}
		}
	}
	return nil
}

func sleepUntil(ctx context.Context, t time.Time) {
	d := time.Until(t)
	if d <= 0 {
		return
	}
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
