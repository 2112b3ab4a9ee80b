// Package runhistory reads a replication run's Temporal history as the attempts of its
// activities: which step each was, the queue it was sent to, the worker that started it,
// when it was scheduled, started and closed, and how it ended. `replctl history`, the fault
// trials (test/chaos) and the benchmark (test/bench) all read runs through it, each
// describing the attempts its own way.
package runhistory

import (
	"context"
	"strings"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/api/enums/v1"
	failurepb "go.temporal.io/api/failure/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/replctl/replctl/activities"
)

// Outcome is how an attempt closed ("" while it is open).
type Outcome string

const (
	Open      Outcome = ""
	Completed Outcome = "completed"
	Failed    Outcome = "failed"
	TimedOut  Outcome = "timed_out"
	Canceled  Outcome = "canceled"
)

// Attempt is one scheduled activity of a run. With a retry policy the history holds only
// an activity's last attempt (its started event is written when it closes); replctl's
// workflows schedule a new activity for each try, so every try is an Attempt.
type Attempt struct {
	ScheduledID int64
	ActivityID  string
	Type        string // activity type: Plan, RunScript, Push, Pull, ...
	// Step is the step the activity runs: the script's step (quiesce, resume, takeover) for
	// RunScript, publish for PublishGroup, else the type in lower case (plan, push, pull).
	// "" for a RunScript whose input cannot be decoded.
	Step activities.Step
	// Queue is the activity's task queue; "" for a local activity (Local).
	Queue string
	// Local says the activity ran as a local activity of the workflow worker that ran the
	// workflow task (the plan, since issue 16). Its history holds one marker, written with
	// that task's completion: Scheduled and Started are the task's start, Closed the time
	// the worker recorded for the result, Identity that worker; the input is not recorded.
	Local bool
	// Summary is the activity's summary (user metadata), e.g. "... (took over from a1)".
	Summary string
	Input   *commonpb.Payloads
	// Script and Pull are the decoded inputs of RunScript and Pull (nil for other types, or
	// when the input cannot be decoded); Script is also the quiesce a Push carried
	// (PushInput.Quiesce: the quiesce step's attempt, pushing too).
	Script *activities.ScriptInput
	Pull   *activities.PullInput
	// Before is the preflight and precopy such a Push did first (PushInput.Before).
	Before *activities.BeforeQuiesce
	// Thaw is the resume script such a Push ran once it pushed (PushInput.Thaw).
	Thaw *activities.ScriptInput

	Scheduled time.Time
	Started   time.Time // zero if it never started (or, still running, not yet written)
	Identity  string    // the worker that started it
	Attempt   int32
	Closed    time.Time
	// ClosedBy is the identity on the completed or failed event ("" if none).
	ClosedBy        string
	Outcome         Outcome
	Result          *commonpb.Payloads // Completed
	Failure         *failurepb.Failure // Failed
	TimeoutType     enums.TimeoutType  // TimedOut
	CancelRequested bool
}

// WorkflowTask is a workflow task that timed out: it delays the run (e.g. a task sent to
// the sticky queue of an agent that is gone).
type WorkflowTask struct {
	ScheduledID int64
	// Queue is the task's queue; a sticky one reads "sticky queue of <normal queue>".
	Queue       string
	Scheduled   time.Time
	TimedOut    time.Time
	TimeoutType enums.TimeoutType
}

// History is a run as its events tell it.
type History struct {
	Start time.Time // the started event (zero if the events lack it)
	// End is when the run closed (completed, failed, cancelled, terminated, timed out or
	// continued as new); zero while it runs.
	End time.Time
	// EndType is the event type that closed the run (unspecified while it runs).
	EndType enums.EventType
	// Failure is the run's failure when EndType is WORKFLOW_EXECUTION_FAILED.
	Failure *failurepb.Failure
	// TerminateReason is the reason given when the run was terminated.
	TerminateReason string
	// Attempts are the run's activities in the order they were scheduled, but for its
	// read-aheads.
	Attempts []*Attempt
	// ReadAheads are the run's WarmReplica activities (workflows/warm.go): no step's, run
	// beside the steps and never awaited, so they are kept apart from the steps' attempts
	// that the history view, the fault trials and the bench read.
	ReadAheads []*Attempt
	// WorkflowTaskTimeouts are the workflow tasks that timed out, in order.
	WorkflowTaskTimeouts []*WorkflowTask
}

// Events reads all events of a run.
func Events(ctx context.Context, c client.Client, workflowID, runID string) ([]*historypb.HistoryEvent, error) {
	it := c.GetWorkflowHistory(ctx, workflowID, runID, false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	var events []*historypb.HistoryEvent
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			return nil, err
		}
		events = append(events, e)
	}
	return events, nil
}

// Load reads a run's history with the default data converter (no payload codec).
func Load(ctx context.Context, c client.Client, workflowID, runID string) (*History, error) {
	events, err := Events(ctx, c, workflowID, runID)
	if err != nil {
		return nil, err
	}
	return Parse(events, converter.GetDefaultDataConverter()), nil
}

// Parse reads a run's events. dc decodes the activities' inputs and summaries (the
// connection's: with the payload codec when it is on); what it cannot decode stays unset.
func Parse(events []*historypb.HistoryEvent, dc converter.DataConverter) *History {
	h := &History{}
	byID := map[int64]*Attempt{}
	wfTasks := map[int64]*WorkflowTask{}
	var taskStarted time.Time // the latest workflow task's start
	var taskIdentity string   // and the worker that completed it
	for _, e := range events {
		t := e.GetEventTime().AsTime()
		switch e.GetEventType() {
		case enums.EVENT_TYPE_WORKFLOW_TASK_STARTED:
			taskStarted = t
		case enums.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
			taskIdentity = e.GetWorkflowTaskCompletedEventAttributes().GetIdentity()
		case enums.EVENT_TYPE_MARKER_RECORDED:
			if a := localActivity(e, taskStarted, taskIdentity, dc); a != nil {
				h.Attempts = append(h.Attempts, a)
			}
		case enums.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
			h.Start = t
		case enums.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
			at := e.GetActivityTaskScheduledEventAttributes()
			a := &Attempt{ScheduledID: e.GetEventId(), ActivityID: at.GetActivityId(), Type: at.GetActivityType().GetName(),
				Queue: at.GetTaskQueue().GetName(), Input: at.GetInput(), Scheduled: t}
			decodeInput(a, dc)
			a.Summary = summary(e, dc)
			byID[a.ScheduledID] = a
			if a.Type == activities.WarmName {
				h.ReadAheads = append(h.ReadAheads, a)
				continue
			}
			h.Attempts = append(h.Attempts, a)
		case enums.EVENT_TYPE_ACTIVITY_TASK_STARTED:
			at := e.GetActivityTaskStartedEventAttributes()
			if a := byID[at.GetScheduledEventId()]; a != nil {
				a.Started, a.Identity, a.Attempt = t, at.GetIdentity(), at.GetAttempt()
			}
		case enums.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
			at := e.GetActivityTaskCompletedEventAttributes()
			if a := byID[at.GetScheduledEventId()]; a != nil {
				a.Closed, a.Outcome, a.ClosedBy, a.Result = t, Completed, at.GetIdentity(), at.GetResult()
			}
		case enums.EVENT_TYPE_ACTIVITY_TASK_FAILED:
			at := e.GetActivityTaskFailedEventAttributes()
			if a := byID[at.GetScheduledEventId()]; a != nil {
				a.Closed, a.Outcome, a.ClosedBy, a.Failure = t, Failed, at.GetIdentity(), at.GetFailure()
			}
		case enums.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
			at := e.GetActivityTaskTimedOutEventAttributes()
			if a := byID[at.GetScheduledEventId()]; a != nil {
				tt := at.GetFailure().GetTimeoutFailureInfo().GetTimeoutType()
				if tt == enums.TIMEOUT_TYPE_UNSPECIFIED {
					tt = at.GetFailure().GetCause().GetTimeoutFailureInfo().GetTimeoutType()
				}
				a.Closed, a.Outcome, a.TimeoutType = t, TimedOut, tt
			}
		case enums.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED:
			if a := byID[e.GetActivityTaskCancelRequestedEventAttributes().GetScheduledEventId()]; a != nil {
				a.CancelRequested = true
			}
		case enums.EVENT_TYPE_ACTIVITY_TASK_CANCELED:
			if a := byID[e.GetActivityTaskCanceledEventAttributes().GetScheduledEventId()]; a != nil {
				a.Closed, a.Outcome = t, Canceled
			}
		case enums.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
			at := e.GetWorkflowTaskScheduledEventAttributes()
			q := at.GetTaskQueue().GetName()
			if at.GetTaskQueue().GetKind() == enums.TASK_QUEUE_KIND_STICKY {
				q = "sticky queue of " + at.GetTaskQueue().GetNormalName()
			}
			wfTasks[e.GetEventId()] = &WorkflowTask{ScheduledID: e.GetEventId(), Queue: q, Scheduled: t}
		case enums.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
			at := e.GetWorkflowTaskTimedOutEventAttributes()
			w := wfTasks[at.GetScheduledEventId()]
			if w == nil { // the scheduled event is not in the events read
				w = &WorkflowTask{ScheduledID: at.GetScheduledEventId()}
			}
			w.TimedOut, w.TimeoutType = t, at.GetTimeoutType()
			h.WorkflowTaskTimeouts = append(h.WorkflowTaskTimeouts, w)
		case enums.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED, enums.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
			enums.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED, enums.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT:
			h.End, h.EndType = t, e.GetEventType()
		case enums.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
			h.End, h.EndType = t, e.GetEventType()
			h.Failure = e.GetWorkflowExecutionFailedEventAttributes().GetFailure()
		case enums.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED:
			h.End, h.EndType = t, e.GetEventType()
			h.TerminateReason = e.GetWorkflowExecutionTerminatedEventAttributes().GetReason()
		}
	}
	return h
}

// localActivityMarker is the SDK's name of a local activity's marker, and localActivityData
// the fields of its "data" detail that are read here (the SDK's own record, JSON).
const localActivityMarker = "LocalActivity"

type localActivityData struct {
	ActivityID   string
	ActivityType string
	ReplayTime   time.Time
	Attempt      int32
}

// localActivity reads a local activity's marker as an Attempt (nil for any other marker, or
// one whose data cannot be decoded).
func localActivity(e *historypb.HistoryEvent, taskStarted time.Time, identity string, dc converter.DataConverter) *Attempt {
	at := e.GetMarkerRecordedEventAttributes()
	if at.GetMarkerName() != localActivityMarker {
		return nil
	}
	var d localActivityData
	if dc.FromPayloads(at.GetDetails()["data"], &d) != nil || d.ActivityType == "" {
		return nil
	}
	a := &Attempt{ScheduledID: e.GetEventId(), ActivityID: d.ActivityID, Type: d.ActivityType, Local: true,
		Scheduled: taskStarted, Started: taskStarted, Identity: identity, Attempt: d.Attempt,
		Closed: d.ReplayTime, ClosedBy: identity}
	if a.Closed.IsZero() {
		a.Closed = e.GetEventTime().AsTime()
	}
	if f := at.GetFailure(); f != nil {
		a.Outcome, a.Failure = Failed, f
	} else {
		a.Outcome, a.Result = Completed, at.GetDetails()["result"]
	}
	a.Summary = summary(e, dc)
	decodeInput(a, dc)
	return a
}

// summary is an event's summary (user metadata), "" if it has none or it cannot be decoded.
func summary(e *historypb.HistoryEvent, dc converter.DataConverter) string {
	var s string
	if md := e.GetUserMetadata(); md != nil && md.GetSummary() != nil && dc.FromPayload(md.GetSummary(), &s) != nil {
		return ""
	}
	return s
}

// decodeInput sets the step and the decoded input of an attempt.
func decodeInput(a *Attempt, dc converter.DataConverter) {
	switch a.Type {
	case activities.RunScriptName:
		var in activities.ScriptInput
		if dc.FromPayloads(a.Input, &in) == nil {
			a.Script, a.Step = &in, in.Step
		}
	case activities.PullName:
		a.Step = activities.StepPull
		var in activities.PullInput
		if dc.FromPayloads(a.Input, &in) == nil {
			a.Pull = &in
		}
	case activities.PublishGroupName:
		a.Step = activities.StepPublish
	case activities.PushName:
		a.Step = activities.StepPush
		var in activities.PushInput
		if dc.FromPayloads(a.Input, &in) == nil {
			a.Script, a.Before, a.Thaw = in.Quiesce, in.Before, in.Thaw
		}
	default:
		a.Step = activities.Step(strings.ToLower(a.Type))
	}
}

// FirstStartBy is the first attempt started after t by a worker that ok accepts.
func (h *History) FirstStartBy(ok func(identity string) bool, after time.Time) *Attempt {
	var best *Attempt
	for _, a := range h.Attempts {
		if !a.Started.IsZero() && ok(a.Identity) && a.Started.After(after) && (best == nil || a.Started.Before(best.Started)) {
			best = a
		}
	}
	return best
}

// TimeoutName is a timeout type in lower case without its prefix: heartbeat,
// schedule_to_start, start_to_close, schedule_to_close.
func TimeoutName(tt enums.TimeoutType) string {
	return strings.ToLower(strings.TrimPrefix(enums.TimeoutType_name[int32(tt)], "TIMEOUT_TYPE_"))
}
