package runhistory

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/api/enums/v1"
	failurepb "go.temporal.io/api/failure/v1"
	historypb "go.temporal.io/api/history/v1"
	taskqueuepb "go.temporal.io/api/taskqueue/v1"
	"go.temporal.io/sdk/converter"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/replctl/replctl/activities"
)

// Steps come from the activity type (and the script's input), timeouts from the failure or
// its cause, and a timed-out workflow task names the sticky queue it waited on.
func TestParse(t *testing.T) {
	dc := converter.GetDefaultDataConverter()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var evs []*historypb.HistoryEvent
	add := func(typ enums.EventType, set func(*historypb.HistoryEvent)) int64 {
		ev := &historypb.HistoryEvent{EventId: int64(len(evs) + 1), EventTime: timestamppb.New(t0.Add(time.Duration(len(evs)) * time.Second)), EventType: typ}
		set(ev)
		evs = append(evs, ev)
		return ev.EventId
	}
	schedule := func(typ string, in any) int64 {
		p, err := dc.ToPayloads(in)
		require.NoError(t, err)
		return add(enums.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED, func(ev *historypb.HistoryEvent) {
			ev.Attributes = &historypb.HistoryEvent_ActivityTaskScheduledEventAttributes{ActivityTaskScheduledEventAttributes: &historypb.ActivityTaskScheduledEventAttributes{
				ActivityType: &commonpb.ActivityType{Name: typ}, TaskQueue: &taskqueuepb.TaskQueue{Name: "q"}, Input: p}}
		})
	}
	schedule(activities.RunScriptName, activities.ScriptInput{Step: "takeover", FailedHost: "a1"})
	warm := schedule(activities.WarmName, activities.WarmInput{Agent: "b1"})
	pull := schedule(activities.PullName, activities.PullInput{Epoch: 4})
	schedule(activities.PublishGroupName, struct{}{})
	schedule(activities.PrecopyName, struct{}{})
	schedule(activities.PushName, activities.PushInput{Quiesce: &activities.ScriptInput{Step: "quiesce", Script: "freeze.sh"}})
	schedule(activities.PushName, activities.PushInput{})
	add(enums.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT, func(ev *historypb.HistoryEvent) {
		ev.Attributes = &historypb.HistoryEvent_ActivityTaskTimedOutEventAttributes{ActivityTaskTimedOutEventAttributes: &historypb.ActivityTaskTimedOutEventAttributes{
			ScheduledEventId: pull, Failure: &failurepb.Failure{Cause: &failurepb.Failure{FailureInfo: &failurepb.Failure_TimeoutFailureInfo{
				TimeoutFailureInfo: &failurepb.TimeoutFailureInfo{TimeoutType: enums.TIMEOUT_TYPE_HEARTBEAT}}}}}}
	})
	wft := add(enums.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED, func(ev *historypb.HistoryEvent) {
		ev.Attributes = &historypb.HistoryEvent_WorkflowTaskScheduledEventAttributes{WorkflowTaskScheduledEventAttributes: &historypb.WorkflowTaskScheduledEventAttributes{
			TaskQueue: &taskqueuepb.TaskQueue{Name: "sticky-1", Kind: enums.TASK_QUEUE_KIND_STICKY, NormalName: "replctl"}}}
	})
	add(enums.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT, func(ev *historypb.HistoryEvent) {
		ev.Attributes = &historypb.HistoryEvent_WorkflowTaskTimedOutEventAttributes{WorkflowTaskTimedOutEventAttributes: &historypb.WorkflowTaskTimedOutEventAttributes{
			ScheduledEventId: wft, TimeoutType: enums.TIMEOUT_TYPE_SCHEDULE_TO_START}}
	})
	add(enums.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED, func(ev *historypb.HistoryEvent) {
		ev.Attributes = &historypb.HistoryEvent_WorkflowExecutionTerminatedEventAttributes{WorkflowExecutionTerminatedEventAttributes: &historypb.WorkflowExecutionTerminatedEventAttributes{Reason: "by hand"}}
	})

	h := Parse(evs, dc)
	var steps []activities.Step
	for _, a := range h.Attempts {
		steps = append(steps, a.Step)
	}
	require.Equal(t, []activities.Step{activities.StepTakeover, activities.StepPull, activities.StepPublish, activities.StepPrecopy, activities.StepPush, activities.StepPush}, steps)
	require.Equal(t, "freeze.sh", h.Attempts[4].Script.Script, "the quiesce a push carried")
	require.Nil(t, h.Attempts[5].Script)
	require.Equal(t, "a1", h.Attempts[0].Script.FailedHost)
	require.Equal(t, int64(4), h.Attempts[1].Pull.Epoch)
	require.Equal(t, TimedOut, h.Attempts[1].Outcome)
	require.Equal(t, enums.TIMEOUT_TYPE_HEARTBEAT, h.Attempts[1].TimeoutType)
	require.Equal(t, Open, h.Attempts[2].Outcome)
	require.Len(t, h.WorkflowTaskTimeouts, 1)
	require.Equal(t, "sticky queue of replctl", h.WorkflowTaskTimeouts[0].Queue)
	require.Equal(t, "schedule_to_start", TimeoutName(h.WorkflowTaskTimeouts[0].TimeoutType))
	require.Equal(t, enums.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED, h.EndType)
	require.Equal(t, "by hand", h.TerminateReason)
	require.Equal(t, t0.Add(10*time.Second), h.End)
	// The read-ahead is no step's attempt: it is kept apart, still open.
	require.Len(t, h.ReadAheads, 1)
	require.Equal(t, warm, h.ReadAheads[0].ScheduledID)
	require.Equal(t, Open, h.ReadAheads[0].Outcome)
}
