package workers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/temporal"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/workflows"
)

// DefaultShutdownGrace is how long a stopping agent waits for the runs to thaw what it
// quiesced before it runs the resume scripts itself.
const DefaultShutdownGrace = 60 * time.Second

// ShutdownOptions say how Shutdown waits.
type ShutdownOptions struct {
	// Grace bounds the wait for the runs to thaw the applications the agents quiesced.
	Grace time.Duration
	// Force (a second signal) ends the wait at once; the resume scripts still run.
	Force <-chan struct{}
	// Logf reports what the shutdown waits for and does.
	Logf func(format string, args ...any)
}

// Shutdown stops agents. When none holds an application quiesced they stop at once. Else
// each agent that holds one hands over its data steps (in-flight ones fail as retryable
// "shutting down" errors, new ones and new quiesce steps are refused, so the workflow moves
// them to the next agent in the order) but keeps polling, so the run can reach it with its
// resume step; the other agents (of `dev`) go on working, so the handed-over steps have
// somewhere to go. The wait ends when nothing is held any more, when Grace passes or when
// Force fires; whatever is still held then is resumed by its agent itself, locally, before
// the workers stop.
func Shutdown(agents []*Agent, o ShutdownOptions) {
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	defer func() {
		for _, a := range agents {
			a.Stop()
		}
	}()
	if len(held(agents)) == 0 {
		return
	}
	deadline := time.NewTimer(o.Grace)
	defer deadline.Stop()
	var said string
	var saidAt time.Time
	for {
		h := held(agents)
		for _, x := range h {
			x.agent.drain.start()
			x.agent.settle(x.app, o.Logf)
		}
		if h = held(agents); len(h) == 0 {
			o.Logf("stopping: every application these agents quiesced was thawed")
			return
		}
		if msg := describeHeld(h); msg != said || time.Since(saidAt) >= 10*time.Second {
			o.Logf("stopping: waiting up to %s in all for the run to resume %s (its data steps go to other agents; a second signal resumes it here at once)", o.Grace, msg)
			said, saidAt = msg, time.Now()
		}
		select {
		case <-deadline.C:
			o.Logf("stopping: still quiesced after %s: running the resume script here", o.Grace)
			resumeHeld(agents, o.Logf)
			return
		case <-o.Force:
			o.Logf("stopping at once (second signal): running the resume script here first")
			resumeHeld(agents, o.Logf)
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

type heldApp struct {
	agent *Agent
	app   activities.QuiescedApp
}

func held(agents []*Agent) []heldApp {
	var out []heldApp
	for _, a := range agents {
		for _, q := range a.Activities.Quiesced().List() {
			out = append(out, heldApp{a, q})
		}
	}
	return out
}

func describeHeld(h []heldApp) string {
	s := make([]string, len(h))
	for i, x := range h {
		s[i] = fmt.Sprintf("%s, quiesced by agent %s", x.app, x.agent.Host)
	}
	return strings.Join(s, "; ")
}

// settle asks q's run whether it still holds q's host quiesced: a run that has resumed it
// lets the agent go; a run that ended with the host still quiesced will not resume it, so
// the agent does at once. A run that cannot be asked is waited for.
func (a *Agent) settle(q activities.QuiescedApp, logf func(string, ...any)) {
	if q.WorkflowID == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	v, err := a.client.QueryWorkflow(ctx, q.WorkflowID, q.RunID, workflows.StatusQuery)
	var st workflows.Status
	if err == nil {
		err = v.Get(&st)
	}
	if err == nil && st.QuiescedHost == "" {
		if a.Activities.Quiesced().Forget(q.Job, q.RunID) {
			logf("stopping: the run resumed %s", q)
		}
		return
	}
	d, derr := a.client.DescribeWorkflowExecution(ctx, q.WorkflowID, q.RunID)
	if derr != nil || d.GetWorkflowExecutionInfo().GetStatus() == enums.WORKFLOW_EXECUTION_STATUS_RUNNING {
		return
	}
	logf("stopping: the run ended (%s) without resuming %s", d.GetWorkflowExecutionInfo().GetStatus(), q)
	a.resumeLocally(q, logf)
}

func resumeHeld(agents []*Agent, logf func(string, ...any)) {
	for _, x := range held(agents) {
		x.agent.resumeLocally(x.app, logf)
	}
}

func (a *Agent) resumeLocally(q activities.QuiescedApp, logf func(string, ...any)) {
	ctx, cancel := context.WithTimeout(context.Background(), q.Timeout+5*time.Second)
	defer cancel()
	res, err := a.Activities.ResumeLocally(ctx, q)
	if err != nil {
		logf("stopping: agent %s could not resume %s: %v; HOST LEFT QUIESCED", a.Host, q, err)
		return
	}
	logf("stopping: agent %s ran resume script %s on host %s itself (exit 0, %s)", a.Host, q.Resume, q.Host.Name, res.Duration.Round(time.Millisecond))
	// The run may still be pushing: it must not call its image application-consistent.
	if q.WorkflowID != "" {
		sig := workflows.HostResumed{Host: q.Host.Name, Agent: a.Host, Reason: "agent stopping: resumed the host itself"}
		if err := a.client.SignalWorkflow(ctx, q.WorkflowID, q.RunID, workflows.HostResumedSignal, sig); err != nil {
			logf("stopping: could not tell run %s that host %s is resumed: %v", q.RunID, q.Host.Name, err)
		}
	}
}

// errShuttingDown is the cancel cause of a data step cut short by Shutdown.
var errShuttingDown = errors.New("agent shutting down")

// dataSteps are the activities a stopping agent that holds an application quiesced hands
// over: they may run for long, and a push while quiesced keeps the application frozen.
var dataSteps = map[string]bool{activities.PushName: true, activities.PrecopyName: true, activities.PullName: true}

// drain fails an agent's data steps (and refuses quiesce steps) once its shutdown began.
type drain struct {
	host    string
	mu      sync.Mutex
	on      bool
	next    int
	running map[int]context.CancelCauseFunc
}

func (d *drain) start() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.on = true
	for _, cancel := range d.running {
		cancel(errShuttingDown)
	}
}

func (d *drain) draining() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.on
}

// isQuiesce tells whether a RunScript's arguments are a quiesce step.
func isQuiesce(args []any) bool {
	if len(args) == 0 {
		return false
	}
	switch in := args[0].(type) {
	case activities.ScriptInput:
		return in.Step == activities.StepQuiesce
	case *activities.ScriptInput:
		return in != nil && in.Step == activities.StepQuiesce
	}
	return false
}

// pushQuiesce is the quiesce script a Push's arguments carry (nil: none).
func pushQuiesce(args []any) *activities.ScriptInput {
	if in := pushInput(args); in != nil {
		return in.Quiesce
	}
	return nil
}

// pushInput is a Push's input among its arguments, nil when there is none.
func pushInput(args []any) *activities.PushInput {
	if len(args) == 0 {
		return nil
	}
	switch in := args[0].(type) {
	case activities.PushInput:
		return &in
	case *activities.PushInput:
		return in
	}
	return nil
}

// track gives a data step a context that start cancels; ok is false once draining.
func (d *drain) track(ctx context.Context) (_ context.Context, done func(), ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.on {
		return ctx, func() {}, false
	}
	if d.running == nil {
		d.running = map[int]context.CancelCauseFunc{}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	id := d.next
	d.next++
	d.running[id] = cancel
	return ctx, func() {
		d.mu.Lock()
		delete(d.running, id)
		d.mu.Unlock()
		cancel(nil)
	}, true
}

// refusal is the retryable error of a data step the shutdown cut short or refused. It
// carries the step's last progress, when the step's own error had it, for the next agent.
func (d *drain) refusal(step string, cause error) error {
	msg := fmt.Sprintf("%s on agent %s: agent shutting down (SIGINT/SIGTERM); the step goes to the next agent", step, d.host)
	var p activities.Progress
	if activities.ErrorDetails(cause, &p) && p.Step != "" {
		return temporal.NewApplicationErrorWithCause(msg, activities.ErrTypeShuttingDown, cause, p)
	}
	return temporal.NewApplicationErrorWithCause(msg, activities.ErrTypeShuttingDown, cause)
}

// refusalOf is the refusal of data step step (its arguments args) that the shutdown refused
// (cause nil) or cut short with cause. A push that carries the quiesce and had not finished
// its script is refused as that quiesce: the workflow must see the quiesce part's mark, or
// it would take the script for done.
func (d *drain) refusalOf(step string, args []any, cause error) error {
	if q, ok := activities.QuiescePart(cause); ok {
		return activities.QuiescePartError(d.refusal(string(activities.StepQuiesce), cause), q)
	}
	// Cut short before its script started, or refused, a push carrying the preflight and
	// the precopy too quiesced nothing: the workflow must not resume for it.
	if part, ok := activities.NotQuiescedPart(cause); ok {
		return activities.NotQuiescedError(d.refusal(string(part), cause), part)
	}
	if in := pushInput(args); cause == nil && step == activities.PushName && in != nil && in.Quiesce != nil && in.Before != nil {
		return activities.NotQuiescedError(d.refusal(string(activities.StepPreflight), nil), activities.StepPreflight)
	}
	if q := pushQuiesce(args); cause == nil && step == activities.PushName && q != nil {
		return activities.QuiescePartError(d.refusal(string(activities.StepQuiesce), nil),
			activities.ScriptResult{Step: activities.StepQuiesce, Host: q.Host.Name, Agent: q.Agent, Script: q.Script})
	}
	return d.refusal(step, cause)
}

// drainInterceptor puts an agent's data steps under its drain.
type drainInterceptor struct {
	interceptor.WorkerInterceptorBase
	d *drain
}

func (i *drainInterceptor) InterceptActivity(_ context.Context, next interceptor.ActivityInboundInterceptor) interceptor.ActivityInboundInterceptor {
	a := &drainActivity{d: i.d}
	a.Next = next
	return a
}

type drainActivity struct {
	interceptor.ActivityInboundInterceptorBase
	d *drain
}

func (a *drainActivity) ExecuteActivity(ctx context.Context, in *interceptor.ExecuteActivityInput) (any, error) {
	step := activity.GetInfo(ctx).ActivityType.Name
	if step == activities.RunScriptName && isQuiesce(in.Args) && a.d.draining() {
		// A stopping agent takes on nothing new to thaw.
		return nil, a.d.refusal(string(activities.StepQuiesce), nil)
	}
	if !dataSteps[step] {
		return a.Next.ExecuteActivity(ctx, in)
	}
	ctx, done, ok := a.d.track(ctx)
	if !ok {
		return nil, a.d.refusalOf(step, in.Args, nil)
	}
	defer done()
	res, err := a.Next.ExecuteActivity(ctx, in)
	if err != nil && errors.Is(context.Cause(ctx), errShuttingDown) {
		return nil, a.d.refusalOf(step, in.Args, err)
	}
	return res, err
}
