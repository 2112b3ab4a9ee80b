package test

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/workers"
	"github.com/replctl/replctl/workflows"
)

// -record makes the integration tests write their runs' histories to testdata/histories,
// for the replay tests; existing files are kept. After a deliberate, versioned workflow
// change, give the test's recording a new name and record it.
var record = flag.Bool("record", false, "record workflow histories of integration runs into testdata/histories")

const historiesDir = "testdata/histories"

func recordHistory(t *testing.T, e *env, workflowID, runID, name string) {
	t.Helper()
	if !*record {
		return
	}
	file := filepath.Join(historiesDir, name+".json")
	if _, err := os.Stat(file); err == nil {
		// Recorded histories are what older code wrote: keep them, so replay keeps proving
		// that old runs still replay. New behaviour gets a new name.
		t.Logf("history %s exists: not overwritten", file)
		return
	}
	iter := e.c.GetWorkflowHistory(context.Background(), workflowID, runID, false, 0)
	h := &historypb.History{}
	for iter.HasNext() {
		ev, err := iter.Next()
		require.NoError(t, err)
		h.Events = append(h.Events, ev)
	}
	b, err := protojson.MarshalOptions{Indent: "  "}.Marshal(h)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(file, b, 0o644))
}

func histories(t *testing.T) []string {
	files, err := filepath.Glob(filepath.Join(historiesDir, "*.json"))
	require.NoError(t, err)
	require.NotEmpty(t, files, "no recorded histories in %s (run the integration tests with -record)", historiesDir)
	return files
}

// Every recorded history replays against the current workflow code: a change that would
// break running workflows fails here.
func TestReplayRecordedHistories(t *testing.T) {
	for _, f := range histories(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			r := worker.NewWorkflowReplayer()
			workers.Register(r)
			require.NoError(t, replayFile(t, r, f))
		})
	}
}

// A changed workflow (a non-deterministic change made without workflow.GetVersion) must
// fail replay of every recorded history: a replication that skips quiesce, a scheduled
// maintenance that starts no child.
func TestReplayDetectsNonDeterministicChange(t *testing.T) {
	for _, f := range histories(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			r := worker.NewWorkflowReplayer()
			switch wt := workflowType(t, f); wt {
			case workflows.ReplicationWorkflowName:
				r.RegisterWorkflowWithOptions(skipsQuiesce, workflow.RegisterOptions{Name: workflows.ReplicationWorkflowName})
			case workflows.ScheduledMaintenanceWorkflowName:
				r.RegisterWorkflowWithOptions(startsNoChild, workflow.RegisterOptions{Name: workflows.ScheduledMaintenanceWorkflowName})
			case workflows.CheckWorkflowName:
				r.RegisterWorkflowWithOptions(checksNoHost, workflow.RegisterOptions{Name: wt})
			case workflows.VerifyWorkflowName, workflows.RestoreWorkflowName:
				r.RegisterWorkflowWithOptions(skipsPlan, workflow.RegisterOptions{Name: wt})
			default:
				t.Fatalf("history of workflow type %q: add a non-deterministic variant of it here", wt)
			}
			err := replayFile(t, r, f)
			require.Error(t, err)
			require.Contains(t, err.Error(), "TMPRL1100", "a non-determinism error")
		})
	}
}

// replayFile replays the recorded history in file. A replication run or a repair is replayed
// under its job's workflow ID (the history does not hold its own ID, and the workflow checks it): the
// job comes from the run's input.
func replayFile(t *testing.T, r worker.WorkflowReplayer, file string) error {
	t.Helper()
	fh, err := os.Open(file)
	require.NoError(t, err)
	defer fh.Close()
	h, err := client.HistoryFromJSON(fh, client.HistoryJSONOptions{})
	require.NoError(t, err)
	opts := worker.ReplayWorkflowHistoryOptions{}
	started := h.Events[0].GetWorkflowExecutionStartedEventAttributes()
	var in struct {
		Job    string
		Repair bool
	}
	if p := started.GetInput().GetPayloads(); len(p) > 0 {
		_ = json.Unmarshal(p[0].GetData(), &in)
	}
	// A repair (replctl verify --repair) holds the job's ID too.
	if wt := started.GetWorkflowType().GetName(); wt == workflows.ReplicationWorkflowName || wt == workflows.VerifyWorkflowName && in.Repair {
		opts.OriginalExecution = workflow.Execution{ID: workflows.WorkflowID(in.Job), RunID: started.GetOriginalExecutionRunId()}
	}
	return r.ReplayWorkflowHistoryWithOptions(nil, h, opts)
}

// workflowType is the workflow type of the recorded history in file.
func workflowType(t *testing.T, file string) string {
	t.Helper()
	fh, err := os.Open(file)
	require.NoError(t, err)
	defer fh.Close()
	h, err := client.HistoryFromJSON(fh, client.HistoryJSONOptions{})
	require.NoError(t, err)
	require.NotEmpty(t, h.Events, file)
	started := h.Events[0].GetWorkflowExecutionStartedEventAttributes()
	require.NotNil(t, started, "%s: first event is not WorkflowExecutionStarted", file)
	return started.GetWorkflowType().GetName()
}

// startsNoChild returns at once where ScheduledMaintenance starts its child.
func startsNoChild(ctx workflow.Context, in workflows.ScheduledMaintenanceInput) (workflows.ScheduledResult, error) {
	return workflows.ScheduledResult{}, nil
}

// checksNoHost returns at once where Check asks every host.
func checksNoHost(ctx workflow.Context, in workflows.CheckInput) (workflows.CheckResult, error) {
	return workflows.CheckResult{}, nil
}

// skipsPlan is a target step (verify, restore) that runs its activity without the plan.
func skipsPlan(ctx workflow.Context, in map[string]any) error {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: 30e9, TaskQueue: "replctl-host-b1"})
	return workflow.ExecuteActivity(ctx, activities.VerifyName, in).Get(ctx, nil)
}

// skipsQuiesce plans like Replication but then goes straight to the pull.
func skipsQuiesce(ctx workflow.Context, in workflows.ReplicationInput) (workflows.Status, error) {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: 30e9, TaskQueue: "replctl-host-b1"})
	err := workflow.ExecuteActivity(ctx, "Pull", in).Get(ctx, nil)
	return workflows.Status{}, err
}
