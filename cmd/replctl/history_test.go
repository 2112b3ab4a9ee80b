package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/api/enums/v1"
	failurepb "go.temporal.io/api/failure/v1"
	historypb "go.temporal.io/api/history/v1"
	sdkpb "go.temporal.io/api/sdk/v1"
	taskqueuepb "go.temporal.io/api/taskqueue/v1"
	"go.temporal.io/sdk/converter"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/workflows"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/*.golden")

// A run with every kind of step outcome (ok, failed, timed out, cancelled with the run,
// running) and a takeover: `replctl history` prints and encodes it exactly as the golden
// file says.
func TestHistoryGolden(t *testing.T) {
	dc := converter.GetDefaultDataConverter()
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var evs []*historypb.HistoryEvent
	add := func(ms int, typ enums.EventType, set func(*historypb.HistoryEvent)) int64 {
		ev := &historypb.HistoryEvent{EventId: int64(len(evs) + 1), EventTime: timestamppb.New(t0.Add(time.Duration(ms) * time.Millisecond)), EventType: typ}
		if set != nil {
			set(ev)
		}
		evs = append(evs, ev)
		return ev.EventId
	}
	payloads := func(v any) *commonpb.Payloads {
		p, err := dc.ToPayloads(v)
		require.NoError(t, err)
		return p
	}
	schedule := func(ms int, typ, host, summary string, in any) int64 {
		return add(ms, enums.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED, func(ev *historypb.HistoryEvent) {
			ev.Attributes = &historypb.HistoryEvent_ActivityTaskScheduledEventAttributes{ActivityTaskScheduledEventAttributes: &historypb.ActivityTaskScheduledEventAttributes{
				ActivityId: typ + "-" + host, ActivityType: &commonpb.ActivityType{Name: typ},
				TaskQueue: &taskqueuepb.TaskQueue{Name: workflows.HostQueue(host)}, Input: payloads(in)}}
			if summary != "" {
				s, err := dc.ToPayload(summary)
				require.NoError(t, err)
				ev.UserMetadata = &sdkpb.UserMetadata{Summary: s}
			}
		})
	}
	started := func(ms int, id int64, host string) {
		add(ms, enums.EVENT_TYPE_ACTIVITY_TASK_STARTED, func(ev *historypb.HistoryEvent) {
			ev.Attributes = &historypb.HistoryEvent_ActivityTaskStartedEventAttributes{ActivityTaskStartedEventAttributes: &historypb.ActivityTaskStartedEventAttributes{
				ScheduledEventId: id, Identity: workflows.AgentIdentity(host), Attempt: 1}}
		})
	}
	completed := func(ms int, id int64, res any) {
		add(ms, enums.EVENT_TYPE_ACTIVITY_TASK_COMPLETED, func(ev *historypb.HistoryEvent) {
			ev.Attributes = &historypb.HistoryEvent_ActivityTaskCompletedEventAttributes{ActivityTaskCompletedEventAttributes: &historypb.ActivityTaskCompletedEventAttributes{
				ScheduledEventId: id, Result: payloads(res)}}
		})
	}
	a1Script := activities.ScriptInput{Step: "quiesce", Host: activities.HostPlan{Name: "a1"}, Script: "freeze.sh"}

	add(0, enums.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED, nil)
	id := schedule(10, activities.PlanName, "a1", "", activities.PlanInput{Job: "orders"})
	started(11, id, "a1")
	completed(20, id, activities.PlanResult{Agent: "a1"})
	id = schedule(30, activities.RunScriptName, "a1", "", a1Script)
	started(31, id, "a1")
	completed(60, id, activities.ScriptResult{Script: "freeze.sh", ExitCode: 0})
	id = schedule(70, activities.PushName, "a1", "", activities.PushInput{})
	started(71, id, "a1")
	add(2100, enums.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT, func(ev *historypb.HistoryEvent) {
		ev.Attributes = &historypb.HistoryEvent_ActivityTaskTimedOutEventAttributes{ActivityTaskTimedOutEventAttributes: &historypb.ActivityTaskTimedOutEventAttributes{
			ScheduledEventId: id, Failure: &failurepb.Failure{Message: "activity timeout", Cause: &failurepb.Failure{
				FailureInfo: &failurepb.Failure_TimeoutFailureInfo{TimeoutFailureInfo: &failurepb.TimeoutFailureInfo{TimeoutType: enums.TIMEOUT_TYPE_HEARTBEAT}}}}}}
	})
	add(2110, enums.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT, func(ev *historypb.HistoryEvent) {
		ev.Attributes = &historypb.HistoryEvent_WorkflowTaskTimedOutEventAttributes{WorkflowTaskTimedOutEventAttributes: &historypb.WorkflowTaskTimedOutEventAttributes{TimeoutType: enums.TIMEOUT_TYPE_SCHEDULE_TO_START}}
	})
	takeover := activities.ScriptInput{Step: "takeover", Host: activities.HostPlan{Name: "a1"}, Script: "takeover.sh", FailedHost: "a1"}
	id = schedule(2120, activities.RunScriptName, "a2", "takeover on a1 (took over from a1)", takeover)
	started(2121, id, "a2")
	completed(2200, id, activities.ScriptResult{Script: "takeover.sh", Remote: true})
	id = schedule(2210, activities.PushName, "a2", "push (took over from a1)", activities.PushInput{})
	started(2211, id, "a2")
	completed(3000, id, activities.PushResult{ImageID: "k1", Files: 10, Bytes: 12345, ReusedDirs: 3, PartialDirs: 2})
	id = schedule(3010, activities.PullName, "b1", "", activities.PullInput{Epoch: 7})
	started(3011, id, "b1")
	add(3500, enums.EVENT_TYPE_ACTIVITY_TASK_FAILED, func(ev *historypb.HistoryEvent) {
		ev.Attributes = &historypb.HistoryEvent_ActivityTaskFailedEventAttributes{ActivityTaskFailedEventAttributes: &historypb.ActivityTaskFailedEventAttributes{
			ScheduledEventId: id, Identity: workflows.AgentIdentity("b1"), Failure: &failurepb.Failure{Message: "disk full",
				FailureInfo: &failurepb.Failure_ApplicationFailureInfo{ApplicationFailureInfo: &failurepb.ApplicationFailureInfo{Type: "NoSpace"}}}}}
	})
	id = schedule(3600, activities.PullName, "b2", "", activities.PullInput{Epoch: 8, Defer: true, Dataset: "orders"})
	started(3601, id, "b2")
	add(3700, enums.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED, func(ev *historypb.HistoryEvent) {
		ev.Attributes = &historypb.HistoryEvent_ActivityTaskCancelRequestedEventAttributes{ActivityTaskCancelRequestedEventAttributes: &historypb.ActivityTaskCancelRequestedEventAttributes{ScheduledEventId: id}}
	})
	schedule(3650, activities.RunScriptName, "a2", "", activities.ScriptInput{Step: "resume", Host: activities.HostPlan{Name: "a1"}, Script: "thaw.sh"})
	add(4000, enums.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED, func(ev *historypb.HistoryEvent) {
		ev.Attributes = &historypb.HistoryEvent_WorkflowExecutionFailedEventAttributes{WorkflowExecutionFailedEventAttributes: &historypb.WorkflowExecutionFailedEventAttributes{
			Failure: &failurepb.Failure{Message: "activity error", FailureInfo: &failurepb.Failure_ActivityFailureInfo{ActivityFailureInfo: &failurepb.ActivityFailureInfo{}},
				Cause: &failurepb.Failure{Message: "disk full", FailureInfo: &failurepb.Failure_ApplicationFailureInfo{ApplicationFailureInfo: &failurepb.ApplicationFailureInfo{Type: "NoSpace"}}}}}}
	})

	local := time.Local
	time.Local = time.UTC
	defer func() { time.Local = local }()
	v := historyView{Job: "orders", WorkflowID: workflows.WorkflowID("orders"), RunID: "r1", Status: "Failed", Start: t0}
	v.Steps, v.End, v.Error = historyRows(evs, t0.Add(5*time.Second), dc)
	var out bytes.Buffer
	printHistory(&out, v)
	js, err := json.MarshalIndent(v, "", "  ")
	require.NoError(t, err)
	out.Write(js)
	out.WriteString("\n")
	golden := filepath.Join("testdata", "history.golden")
	if *updateGolden {
		require.NoError(t, os.WriteFile(golden, out.Bytes(), 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err)
	require.Equal(t, string(want), out.String())
}
