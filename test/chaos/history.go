package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/workflows"
)

// workflowTask is the Type and Step of the workflow tasks loadHistory reports.
const workflowTask = "WorkflowTask"

// attempt is one activity of a run as its history tells it, or a workflow task that timed
// out (Type workflowTask).
type attempt struct {
	ScheduledID int64
	Type        string // Plan, RunScript, Push, Pull
	Step        activities.Step
	Queue       string
	Scheduled   time.Time
	Started     time.Time // zero if it never started
	Identity    string    // worker that started it
	Closed      time.Time
	Outcome     string // completed, failed: …, timed out (Heartbeat), ...
	TimedOut    enums.TimeoutType
	Epoch       int64 // Pull attempts only
}

// agent is the host whose agent started the attempt ("" if none did).
func (a *attempt) agent() string { return hostOf(a.Identity) }

// hostOf is the host whose agent has identity id ("" if none).
func hostOf(id string) string {
	host, _ := workflows.HostOfIdentity(id)
	return host
}

// loadHistory reads a run's activity attempts (and timed-out workflow tasks) in order.
func loadHistory(ctx context.Context, c client.Client, id, runID string) ([]*attempt, error) {
	dc := converter.GetDefaultDataConverter()
	it := c.GetWorkflowHistory(ctx, id, runID, false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	byID := map[int64]*attempt{}
	wfTasks := map[int64]*attempt{}
	var out []*attempt
	for it.HasNext() {
		ev, err := it.Next()
		if err != nil {
			return nil, fmt.Errorf("reading history of %s/%s: %w", id, runID, err)
		}
		t := ev.GetEventTime().AsTime()
		switch ev.GetEventType() {
		case enums.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
			at := ev.GetActivityTaskScheduledEventAttributes()
			a := &attempt{ScheduledID: ev.GetEventId(), Type: at.GetActivityType().GetName(), Queue: at.GetTaskQueue().GetName(), Scheduled: t}
			switch a.Type {
			case activities.RunScriptName:
				var in activities.ScriptInput
				if err := dc.FromPayloads(at.GetInput(), &in); err == nil {
					a.Step = in.Step
				}
			case activities.PullName:
				var in activities.PullInput
				if err := dc.FromPayloads(at.GetInput(), &in); err != nil {
					return nil, fmt.Errorf("decoding Pull input (event %d): %w", ev.GetEventId(), err)
				}
				a.Step, a.Epoch = activities.StepPull, in.Epoch
			case activities.PushName:
				a.Step = activities.StepPush
			case activities.PrecopyName:
				a.Step = activities.StepPrecopy
			case activities.PlanName:
				a.Step = activities.StepPlan
			}
			byID[a.ScheduledID] = a
			out = append(out, a)
		case enums.EVENT_TYPE_ACTIVITY_TASK_STARTED:
			at := ev.GetActivityTaskStartedEventAttributes()
			if a := byID[at.GetScheduledEventId()]; a != nil {
				a.Started, a.Identity = t, at.GetIdentity()
			}
		case enums.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
			if a := byID[ev.GetActivityTaskCompletedEventAttributes().GetScheduledEventId()]; a != nil {
				a.Closed, a.Outcome = t, "completed"
			}
		case enums.EVENT_TYPE_ACTIVITY_TASK_FAILED:
			at := ev.GetActivityTaskFailedEventAttributes()
			if a := byID[at.GetScheduledEventId()]; a != nil {
				a.Closed, a.Outcome = t, "failed: "+truncate(at.GetFailure().GetMessage(), 120)
			}
		case enums.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
			at := ev.GetActivityTaskTimedOutEventAttributes()
			if a := byID[at.GetScheduledEventId()]; a != nil {
				tt := at.GetFailure().GetTimeoutFailureInfo().GetTimeoutType()
				if tt == enums.TIMEOUT_TYPE_UNSPECIFIED {
					tt = at.GetFailure().GetCause().GetTimeoutFailureInfo().GetTimeoutType()
				}
				a.Closed, a.Outcome, a.TimedOut = t, "timed out ("+tt.String()+")", tt
			}
		case enums.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
			at := ev.GetWorkflowTaskScheduledEventAttributes()
			q := at.GetTaskQueue().GetName()
			if at.GetTaskQueue().GetKind() == enums.TASK_QUEUE_KIND_STICKY {
				q = "sticky queue of " + at.GetTaskQueue().GetNormalName()
			}
			wfTasks[ev.GetEventId()] = &attempt{ScheduledID: ev.GetEventId(), Type: workflowTask, Step: workflowTask, Queue: q, Scheduled: t}
		case enums.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
			// Only timed-out workflow tasks are kept: they delay the run (e.g. a task
			// waiting on the sticky queue of an agent that is gone).
			at := ev.GetWorkflowTaskTimedOutEventAttributes()
			if a := wfTasks[at.GetScheduledEventId()]; a != nil {
				a.Closed, a.Outcome, a.TimedOut = t, "timed out ("+at.GetTimeoutType().String()+")", at.GetTimeoutType()
				out = append(out, a)
			}
		case enums.EVENT_TYPE_ACTIVITY_TASK_CANCELED:
			if a := byID[ev.GetActivityTaskCanceledEventAttributes().GetScheduledEventId()]; a != nil {
				a.Closed, a.Outcome = t, "cancelled"
			}
		}
	}
	return out, nil
}

// maxEpoch is the highest epoch issued to a Pull attempt of the run (0 if none).
func maxEpoch(as []*attempt) int64 {
	var m int64
	for _, a := range as {
		if a.Type == activities.PullName && a.Epoch > m {
			m = a.Epoch
		}
	}
	return m
}

// firstStartBy is the first attempt started by host's agent after t.
func firstStartBy(as []*attempt, host string, after time.Time) *attempt {
	var best *attempt
	for _, a := range as {
		if a.agent() == host && !a.Started.IsZero() && a.Started.After(after) && (best == nil || a.Started.Before(best.Started)) {
			best = a
		}
	}
	return best
}

// lostAttempt is host's first attempt the server timed out after the fault.
func lostAttempt(as []*attempt, host string, after time.Time) *attempt {
	for _, a := range as {
		if a.agent() == host && a.Type != workflowTask && a.TimedOut != enums.TIMEOUT_TYPE_UNSPECIFIED && a.Closed.After(after) {
			return a
		}
	}
	return nil
}

// stepDurations returns, per step, how long its first attempt ran, when that attempt
// completed (a taker's attempt reuses the lost one's work and says little about the step).
func stepDurations(as []*attempt) map[activities.Step]time.Duration {
	out := map[activities.Step]time.Duration{}
	seen := map[activities.Step]bool{}
	for _, a := range as {
		if seen[a.Step] || a.Type == workflowTask {
			continue
		}
		seen[a.Step] = true
		if a.Outcome == "completed" && !a.Started.IsZero() {
			out[a.Step] = a.Closed.Sub(a.Started)
		}
	}
	return out
}

// snapshot is what DescribeWorkflowExecution said at one moment.
type snapshot struct {
	at    time.Time
	d     *workflowservice.DescribeWorkflowExecutionResponse
	phase string
	// open is false once the run closed (completed, failed, ...).
	open bool
}

// watcher polls one run's description (pending activities, phase, status) in the
// background, so the fault injector and the application writer can wait for moments of the
// run without each hammering the server. It survives a server restart (errors are retried).
type watcher struct {
	c         client.Client
	id, runID string

	mu   sync.Mutex
	last snapshot
}

func newWatcher(c client.Client, id, runID string) *watcher {
	return &watcher{c: c, id: id, runID: runID, last: snapshot{open: true}}
}

func (w *watcher) run(ctx context.Context) {
	dc := converter.GetDefaultDataConverter()
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		d, err := w.c.DescribeWorkflowExecution(cctx, w.id, w.runID)
		cancel()
		if err == nil {
			s := snapshot{at: time.Now(), d: d, open: d.GetWorkflowExecutionInfo().GetStatus() == enums.WORKFLOW_EXECUTION_STATUS_RUNNING}
			if p := d.GetWorkflowExecutionInfo().GetSearchAttributes().GetIndexedFields()[workflows.AttrPhase.GetName()]; p != nil {
				_ = dc.FromPayload(p, &s.phase)
			}
			w.mu.Lock()
			w.last = s
			w.mu.Unlock()
			if !s.open {
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(25 * time.Millisecond):
		}
	}
}

func (w *watcher) snap() snapshot {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

// phaseRank orders the phases of a run; the closing phases rank last.
func phaseRank(p string) int {
	for i, q := range []string{workflows.PhasePlanning, workflows.PhasePrecopying, workflows.PhaseQuiescing, workflows.PhasePushing, workflows.PhaseResuming, workflows.PhasePulling} {
		if p == q {
			return i
		}
	}
	if p == "" {
		return -1
	}
	return 10
}

// stepPhase is the phase during which a step runs.
func stepPhase(step activities.Step) string {
	switch step {
	case activities.StepPrecopy:
		return workflows.PhasePrecopying
	case activities.StepQuiesce:
		return workflows.PhaseQuiescing
	case activities.StepPush:
		return workflows.PhasePushing
	case activities.StepResume:
		return workflows.PhaseResuming
	default:
		return workflows.PhasePulling
	}
}

// running is the step's started activity in the snapshot: its worker and start time.
func (s snapshot) running(step activities.Step) (host string, started time.Time, ok bool) {
	if s.d == nil || s.phase != stepPhase(step) {
		return "", time.Time{}, false
	}
	for _, pa := range s.d.GetPendingActivities() {
		if pa.GetActivityType().GetName() == step.Info().Activity && pa.GetState() == enums.PENDING_ACTIVITY_STATE_STARTED {
			return hostOf(pa.GetLastWorkerIdentity()), pa.GetLastStartedTime().AsTime(), true
		}
	}
	return "", time.Time{}, false
}

// startedByOther tells whether an activity was started after t by another agent than host.
func (s snapshot) startedByOther(host string, t time.Time) (string, bool) {
	if s.d == nil {
		return "", false
	}
	for _, pa := range s.d.GetPendingActivities() {
		who := hostOf(pa.GetLastWorkerIdentity())
		if pa.GetState() == enums.PENDING_ACTIVITY_STATE_STARTED && who != "" && who != host && pa.GetLastStartedTime().AsTime().After(t) {
			return who, true
		}
	}
	return "", false
}
