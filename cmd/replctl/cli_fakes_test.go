package main

// Unit tests of the run functions of the commands that reach Temporal only through the
// client: the Factory dials a fake (go.temporal.io/sdk/mocks, testify's mock), so each
// test says what the server answers and checks what the command prints and how it exits.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	workflowpb "go.temporal.io/api/workflow/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/mocks"
	"go.temporal.io/sdk/temporal"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/workflows"
)

// fakeNow is the clock of the fake-based tests.
var fakeNow = time.Date(2025, 6, 2, 12, 0, 0, 0, time.UTC)

// fakeCLI is a Factory whose Dial hands out a mocks.Client, with the config of the
// real-server test (jobs orders, with a daily schedule, and ticker) and a fixed clock.
type fakeCLI struct {
	t           *testing.T
	c           *mocks.Client
	f           *Factory
	out, errOut bytes.Buffer
}

func newFakeCLI(t *testing.T) *fakeCLI {
	t.Helper()
	// Not t.TempDir: a subtest's name (commas and all) would land in every path of the config.
	dir, err := os.MkdirTemp("", "replctl-fakes")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	t.Setenv("REPLCTL_STATE", dir)
	cfgFile := filepath.Join(dir, "replctl.yaml")
	writeCLIConfig(t, cfgFile, dir, ordersSchedule)
	fc := &fakeCLI{t: t, c: mocks.NewClient(t)}
	fc.c.On("Close").Return().Maybe()
	fc.f = NewFactory(&fc.out, &fc.errOut)
	fc.f.ConfigFile, fc.f.LogLevel = cfgFile, "error"
	fc.f.Dial = func(context.Context, client.Options) (client.Client, error) { return fc.c, nil }
	fc.f.Now = func() time.Time { return fakeNow }
	return fc
}

// run runs cmd with args as main does (execute: -o json failures print the error object)
// and returns stdout; stderr is in fc.errOut.
func (fc *fakeCLI) run(cmd *cobra.Command, args ...string) (string, error) {
	fc.t.Helper()
	fc.out.Reset()
	fc.errOut.Reset()
	cmd.SilenceUsage, cmd.SilenceErrors = true, true // as under the root command
	cmd.SetArgs(args)
	cmd.SetOut(&fc.out)
	cmd.SetErr(&fc.errOut)
	err := execute(context.Background(), fc.f, cmd)
	return fc.out.String(), err
}

// fail runs cmd with args, expecting it to exit with code; it returns stdout and the error.
func (fc *fakeCLI) fail(code int, cmd *cobra.Command, args ...string) (string, error) {
	fc.t.Helper()
	out, err := fc.run(cmd, args...)
	require.Error(fc.t, err)
	require.Equal(fc.t, code, exitCode(err), "%v", err)
	return out, err
}

// runJSON runs cmd (args include -o json), expecting success, and decodes stdout into v.
func (fc *fakeCLI) runJSON(v any, cmd *cobra.Command, args ...string) {
	fc.t.Helper()
	out, err := fc.run(cmd, args...)
	require.NoError(fc.t, err, fc.errOut.String())
	require.NoError(fc.t, json.Unmarshal([]byte(out), v), "printed %q", out)
}

// runFailure runs cmd (args include -o json), expecting exit code, and decodes the error
// object it printed.
func (fc *fakeCLI) runFailure(code int, cmd *cobra.Command, args ...string) jsonErrorOut {
	fc.t.Helper()
	out, err := fc.run(cmd, args...)
	require.Error(fc.t, err)
	require.Equal(fc.t, code, exitCode(err), "%v", err)
	var v jsonErrorOut
	require.NoError(fc.t, json.Unmarshal([]byte(out), &v), "printed %q", out)
	require.Equal(fc.t, code, v.Error.Code)
	require.Equal(fc.t, err.Error(), v.Error.Message)
	return v
}

// value is an EncodedValue (a query's answer) that decodes to v.
func value[T any](t *testing.T, v T) *mocks.Value {
	m := mocks.NewEncodedValue(t)
	m.On("Get", mock.Anything).Run(func(a mock.Arguments) { *a.Get(0).(*T) = v }).Return(nil).Maybe()
	return m
}

// workflowRun is a WorkflowRun of id/runID whose Get decodes to res and returns err.
func workflowRun[T any](t *testing.T, id, runID string, res T, err error) *mocks.WorkflowRun {
	r := mocks.NewWorkflowRun(t)
	r.On("GetID").Return(id).Maybe()
	r.On("GetRunID").Return(runID).Maybe()
	r.On("Get", mock.Anything, mock.Anything).Run(func(a mock.Arguments) {
		if p, ok := a.Get(1).(*T); ok {
			*p = res
		}
	}).Return(err).Maybe()
	return r
}

// describe is the server's description of run runID of id with status and start time.
func describe(id, runID string, status enums.WorkflowExecutionStatus, started time.Time, attrs map[string]string, pending ...*workflowpb.PendingActivityInfo) *workflowservice.DescribeWorkflowExecutionResponse {
	return &workflowservice.DescribeWorkflowExecutionResponse{
		WorkflowExecutionInfo: &workflowpb.WorkflowExecutionInfo{
			Execution:        &commonpb.WorkflowExecution{WorkflowId: id, RunId: runID},
			Status:           status,
			StartTime:        timestamppb.New(started),
			CloseTime:        timestamppb.New(started.Add(time.Minute)),
			SearchAttributes: searchAttrs(attrs),
		},
		PendingActivities: pending,
	}
}

func searchAttrs(attrs map[string]string) *commonpb.SearchAttributes {
	sa := &commonpb.SearchAttributes{IndexedFields: map[string]*commonpb.Payload{}}
	for k, v := range attrs {
		p, err := converter.GetDefaultDataConverter().ToPayload(v)
		if err != nil {
			panic(err)
		}
		sa.IndexedFields[k] = p
	}
	return sa
}

// completedStatus is the result of a completed run of orders that published a replica.
func completedStatus(runID string) workflows.Status {
	return workflows.Status{
		Job: "orders", RunID: runID, Phase: workflows.PhaseCompleted,
		Agents:    workflows.RoleAgents{Application: "a1", Source: "a1", Target: "b1"},
		Replica:   &workflows.Replica{Name: "r-0001", Path: "/t/orders/r-0001", Link: "/t/orders/current", Agent: "b1", Epoch: 1, Verified: true},
		StartedAt: fakeNow.Add(-2 * time.Hour), FinishedAt: fakeNow.Add(-2*time.Hour + time.Minute),
	}
}

// onSchedule makes the server's schedule of orders fire daily.
func (fc *fakeCLI) onSchedule() {
	h := mocks.NewScheduleHandle(fc.t)
	day := time.Date(2025, 6, 3, 1, 30, 0, 0, time.UTC)
	h.On("Describe", mock.Anything).Return(&client.ScheduleDescription{Info: client.ScheduleInfo{
		NextActionTimes: []time.Time{day, day.Add(24 * time.Hour), day.Add(48 * time.Hour)},
	}}, nil)
	sc := mocks.NewScheduleClient(fc.t)
	sc.On("GetHandle", mock.Anything, workflows.ScheduleID("orders")).Return(h)
	fc.c.On("ScheduleClient").Return(sc)
}

func TestStatusWithFakes(t *testing.T) {
	id := workflows.WorkflowID("orders")
	t.Run("completed run: result from the history, replica and RPO", func(t *testing.T) {
		fc := newFakeCLI(t)
		st := completedStatus("run-1")
		fc.c.On("DescribeWorkflowExecution", mock.Anything, id, "").
			Return(describe(id, "run-1", enums.WORKFLOW_EXECUTION_STATUS_COMPLETED, st.StartedAt, nil), nil)
		fc.c.On("GetWorkflow", mock.Anything, id, "run-1").Return(workflowRun(t, id, "run-1", st, nil))
		fc.onSchedule()

		out, err := fc.run(NewCmdStatus(fc.f, nil), "orders")
		require.NoError(t, err, fc.errOut.String())
		assert.Regexp(t, `run\s+replctl-orders run-1\n`, out)
		assert.Regexp(t, `phase\s+completed, took 1m0s\n`, out)
		assert.Regexp(t, `agents\s+application=a1 source=a1 target=b1\n`, out)
		assert.Regexp(t, `replica\s+/t/orders/r-0001 \(verified=true, by b1, epoch 1\)\n`, out)
		assert.Regexp(t, `rpo\s+ok: last replica 1h59m0s old, schedule "30 3 \* \* \*" allows 24h1m10s \(every 24h\)\n`, out)
		assert.NotContains(t, out, "last replica\t", "the run's own replica is not repeated")

		var v statusView
		fc.runJSON(&v, NewCmdStatus(fc.f, nil), "orders", "-o", "json")
		assert.Equal(t, "completed", v.ExecutionStatus)
		assert.Equal(t, id, v.WorkflowID)
		assert.Equal(t, "run-1", v.RunID)
		require.NotNil(t, v.LastReplica)
		assert.Equal(t, "r-0001", v.LastReplica.Name)
		assert.Equal(t, time.Minute, v.LastReplica.RunTook)
		require.NotNil(t, v.RPO)
		assert.False(t, v.RPO.Late)
		assert.Equal(t, 24*time.Hour, v.RPO.Interval)
		assert.Equal(t, 119*time.Minute, v.RPO.Age)
	})

	t.Run("running run: status query, live step, no replica yet", func(t *testing.T) {
		fc := newFakeCLI(t)
		started := fakeNow.Add(-30 * time.Second)
		details, err := converter.GetDefaultDataConverter().ToPayloads(activities.Progress{Step: "pull", Agent: "b1", BytesDone: 1 << 20, BytesTotal: 4 << 20, FilesDone: 3, FilesTotal: 12})
		require.NoError(t, err)
		pull := &workflowpb.PendingActivityInfo{
			ActivityType: &commonpb.ActivityType{Name: "Pull"}, State: enums.PENDING_ACTIVITY_STATE_STARTED, Attempt: 1,
			HeartbeatDetails: details, LastStartedTime: timestamppb.New(fakeNow.Add(-10 * time.Second)), LastHeartbeatTime: timestamppb.New(fakeNow.Add(-9 * time.Second)),
		}
		fc.c.On("DescribeWorkflowExecution", mock.Anything, id, "").
			Return(describe(id, "run-2", enums.WORKFLOW_EXECUTION_STATUS_RUNNING, started, nil, pull), nil)
		fc.c.On("QueryWorkflow", mock.Anything, id, "run-2", workflows.StatusQuery).Return(value(t, workflows.Status{
			Job: "orders", RunID: "run-2", Phase: workflows.PhasePulling, StartedAt: started,
			Agents: workflows.RoleAgents{Application: "a1", Source: "a1", Target: "b1"},
		}), nil)
		fc.c.On("ListWorkflow", mock.Anything, mock.MatchedBy(func(r *workflowservice.ListWorkflowExecutionsRequest) bool {
			return r.GetQuery() == "WorkflowType = 'Replication' AND WorkflowId = 'replctl-orders' AND ExecutionStatus = 'Completed'"
		})).Return(&workflowservice.ListWorkflowExecutionsResponse{}, nil)
		fc.onSchedule()

		out, err := fc.run(NewCmdStatus(fc.f, nil), "orders")
		require.NoError(t, err, fc.errOut.String())
		assert.Regexp(t, `phase\s+pulling, started `, out)
		assert.Regexp(t, `running\s+pull on b1 .* 25% 1.0 MiB/4.0 MiB, 3/12 files`, out)
		assert.Regexp(t, `takeovers\s+none so far\n`, out)
		assert.Regexp(t, `rpo\s+LATE: no replica yet; schedule "30 3 \* \* \*" runs every 24h`, out)

		var v statusView
		fc.runJSON(&v, NewCmdStatus(fc.f, nil), "orders", "-o", "json")
		assert.Equal(t, "running", v.ExecutionStatus)
		assert.Equal(t, workflows.PhasePulling, v.Phase)
		require.NotNil(t, v.Live)
		assert.Equal(t, "Pull", v.Live.Activity)
		require.NotNil(t, v.Live.Progress)
		assert.EqualValues(t, 1<<20, v.Live.Progress.BytesDone)
		assert.Nil(t, v.LastReplica)
		require.NotNil(t, v.RPO)
		assert.True(t, v.RPO.Late)
	})

	t.Run("a running run whose query fails is an error", func(t *testing.T) {
		fc := newFakeCLI(t)
		fc.c.On("DescribeWorkflowExecution", mock.Anything, id, "").
			Return(describe(id, "run-3", enums.WORKFLOW_EXECUTION_STATUS_RUNNING, fakeNow, map[string]string{workflows.AttrPhase.GetName(): workflows.PhaseQuiescing}), nil)
		fc.c.On("QueryWorkflow", mock.Anything, id, "run-3", workflows.StatusQuery).Return(nil, errors.New("no poller"))
		fc.c.On("ListWorkflow", mock.Anything, mock.Anything).Return(&workflowservice.ListWorkflowExecutionsResponse{}, nil)
		fc.onSchedule()
		_, err := fc.fail(ExitFailure, NewCmdStatus(fc.f, nil), "orders")
		assert.Contains(t, err.Error(), "status query of job orders run run-3 failed (are agents running?")
	})

	t.Run("a job without runs is not_found", func(t *testing.T) {
		fc := newFakeCLI(t)
		fc.c.On("DescribeWorkflowExecution", mock.Anything, id, "").Return(nil, serviceerror.NewNotFound("workflow not found"))
		e := fc.runFailure(ExitFailure, NewCmdStatus(fc.f, nil), "orders", "-o", "json")
		assert.Equal(t, KindNotFound, e.Error.Kind)
		assert.Contains(t, e.Error.Message, "job orders has no runs yet")
	})

	t.Run("--run finds the job through visibility", func(t *testing.T) {
		fc := newFakeCLI(t)
		fc.c.On("ListWorkflow", mock.Anything, mock.MatchedBy(func(r *workflowservice.ListWorkflowExecutionsRequest) bool {
			return r.GetQuery() == "RunId = 'run-1' AND WorkflowType = 'Replication'"
		})).Return(&workflowservice.ListWorkflowExecutionsResponse{Executions: []*workflowpb.WorkflowExecutionInfo{
			{Execution: &commonpb.WorkflowExecution{WorkflowId: id, RunId: "run-1"}},
		}}, nil)
		st := completedStatus("run-1")
		fc.c.On("DescribeWorkflowExecution", mock.Anything, id, "run-1").
			Return(describe(id, "run-1", enums.WORKFLOW_EXECUTION_STATUS_COMPLETED, st.StartedAt, nil), nil)
		fc.c.On("GetWorkflow", mock.Anything, id, "run-1").Return(workflowRun(t, id, "run-1", st, nil))
		fc.onSchedule()
		var v statusView
		fc.runJSON(&v, NewCmdStatus(fc.f, nil), "--run", "run-1", "-o", "json")
		assert.Equal(t, "orders", v.Job)
		assert.Equal(t, "run-1", v.RunID)
	})
}

func TestListWithFakes(t *testing.T) {
	fc := newFakeCLI(t)
	id := workflows.WorkflowID("orders")
	start := fakeNow.Add(-time.Hour)
	summary, err := converter.GetDefaultDataConverter().ToPayload("12 files")
	require.NoError(t, err)
	scheduled := &workflowpb.WorkflowExecutionInfo{
		Execution: &commonpb.WorkflowExecution{WorkflowId: id, RunId: "run-1"},
		Status:    enums.WORKFLOW_EXECUTION_STATUS_COMPLETED,
		StartTime: timestamppb.New(start), CloseTime: timestamppb.New(start.Add(90 * time.Second)),
		SearchAttributes: searchAttrs(map[string]string{workflows.AttrPhase.GetName(): workflows.PhaseCompleted, workflows.AttrJob.GetName(): "orders"}),
		Memo:             &commonpb.Memo{Fields: map[string]*commonpb.Payload{"summary": summary}},
		ParentExecution:  &commonpb.WorkflowExecution{WorkflowId: workflows.ScheduleID("orders")},
	}
	failed := &workflowpb.WorkflowExecutionInfo{
		Execution: &commonpb.WorkflowExecution{WorkflowId: id, RunId: "run-0"},
		Status:    enums.WORKFLOW_EXECUTION_STATUS_FAILED,
		StartTime: timestamppb.New(start.Add(-time.Hour)), CloseTime: timestamppb.New(start.Add(-59 * time.Minute)),
		SearchAttributes: searchAttrs(map[string]string{workflows.AttrPhase.GetName(): workflows.PhaseFailed, workflows.AttrQuiescedHost.GetName(): "a1"}),
	}
	running := &workflowpb.WorkflowExecutionInfo{
		Execution: &commonpb.WorkflowExecution{WorkflowId: workflows.WorkflowID("ticker"), RunId: "run-9"},
		Status:    enums.WORKFLOW_EXECUTION_STATUS_RUNNING,
		StartTime: timestamppb.New(fakeNow.Add(-5 * time.Second)),
	}
	wantQuery := "WorkflowType = 'Replication' AND StartTime > '2025-06-01T12:00:00Z'"
	// Two pages: the token of the first asks for the second.
	fc.c.On("ListWorkflow", mock.Anything, mock.MatchedBy(func(r *workflowservice.ListWorkflowExecutionsRequest) bool {
		return r.GetQuery() == wantQuery && len(r.GetNextPageToken()) == 0
	})).Return(&workflowservice.ListWorkflowExecutionsResponse{Executions: []*workflowpb.WorkflowExecutionInfo{running, scheduled}, NextPageToken: []byte("p2")}, nil)
	fc.c.On("ListWorkflow", mock.Anything, mock.MatchedBy(func(r *workflowservice.ListWorkflowExecutionsRequest) bool {
		return r.GetQuery() == wantQuery && string(r.GetNextPageToken()) == "p2"
	})).Return(&workflowservice.ListWorkflowExecutionsResponse{Executions: []*workflowpb.WorkflowExecutionInfo{failed}}, nil)

	var rows []runRow
	fc.runJSON(&rows, NewCmdList(fc.f, nil), "--since", "1d", "-o", "json")
	require.Len(t, rows, 3)
	assert.Equal(t, runRow{Job: "ticker", WorkflowID: workflows.WorkflowID("ticker"), RunID: "run-9", Status: "running", Trigger: "manual", Start: fakeNow.Add(-5 * time.Second), Duration: "5s"}, rows[0])
	assert.Equal(t, runRow{Job: "orders", WorkflowID: id, RunID: "run-1", Status: "completed", Phase: workflows.PhaseCompleted, Trigger: "schedule",
		Start: start, End: start.Add(90 * time.Second), Duration: "1m30s", Summary: "12 files"}, rows[1])
	assert.Equal(t, "a1", rows[2].QuiescedHost)
	assert.Equal(t, "orders", rows[2].Job, "the job from the workflow ID when the attribute is missing")

	out, err := fc.run(NewCmdList(fc.f, nil), "--since", "1d")
	require.NoError(t, err)
	assert.Regexp(t, `JOB\s+RUN ID\s+STATUS\s+PHASE\s+BY\s+START\s+DURATION\n`, out)
	assert.Regexp(t, `ticker\s+run-9\s+running\s+-\s+manual\s+.*\s+5s\n`, out)
	assert.Regexp(t, `orders\s+run-1\s+completed\s+completed\s+schedule\s+`+start.Local().Format(time.DateTime)+`\s+1m30s\n`, out)
	assert.Regexp(t, `orders\s+run-0\s+failed \(HOST a1 LEFT QUIESCED\)\s+failed\s+manual`, out)

	t.Run("limit stops paging", func(t *testing.T) {
		fc := newFakeCLI(t)
		fc.c.On("ListWorkflow", mock.Anything, mock.MatchedBy(func(r *workflowservice.ListWorkflowExecutionsRequest) bool {
			return r.GetPageSize() == 1 && r.GetQuery() == "WorkflowType = 'Replication' AND WorkflowId = 'replctl-orders' AND ExecutionStatus = 'Failed'"
		})).Return(&workflowservice.ListWorkflowExecutionsResponse{Executions: []*workflowpb.WorkflowExecutionInfo{failed}, NextPageToken: []byte("more")}, nil).Once()
		var rows []runRow
		fc.runJSON(&rows, NewCmdList(fc.f, nil), "--job", "orders", "--status", "failed", "--limit", "1", "-o", "json")
		require.Len(t, rows, 1)
		assert.Equal(t, "run-0", rows[0].RunID)
	})

	t.Run("no runs", func(t *testing.T) {
		fc := newFakeCLI(t)
		fc.c.On("ListWorkflow", mock.Anything, mock.Anything).Return(&workflowservice.ListWorkflowExecutionsResponse{}, nil)
		out, err := fc.run(NewCmdList(fc.f, nil))
		require.NoError(t, err)
		assert.Contains(t, out, "no runs found")
		out, err = fc.run(NewCmdList(fc.f, nil), "-o", "json")
		require.NoError(t, err)
		assert.JSONEq(t, "[]", out)
	})

	t.Run("a server error names the query", func(t *testing.T) {
		fc := newFakeCLI(t)
		fc.c.On("ListWorkflow", mock.Anything, mock.Anything).Return(nil, serviceerror.NewUnavailable("down"))
		_, err := fc.fail(ExitFailure, NewCmdList(fc.f, nil))
		assert.Contains(t, err.Error(), "list runs (query WorkflowType = 'Replication'): down")
	})
}

func TestCancelWithFakes(t *testing.T) {
	id := workflows.WorkflowID("orders")
	t.Run("without --wait: requests the cancellation", func(t *testing.T) {
		fc := newFakeCLI(t)
		fc.c.On("DescribeWorkflowExecution", mock.Anything, id, "").
			Return(describe(id, "run-1", enums.WORKFLOW_EXECUTION_STATUS_RUNNING, fakeNow, nil), nil)
		fc.c.On("CancelWorkflow", mock.Anything, id, "run-1").Return(nil).Twice()
		out, err := fc.run(NewCmdCancel(fc.f, nil), "orders")
		require.NoError(t, err)
		assert.Empty(t, out)
		assert.Contains(t, fc.errOut.String(), "cancellation of job orders run run-1 requested")
		assert.Contains(t, fc.errOut.String(), "follow it with: replctl status orders --watch")

		var v struct {
			runHandle
			CancelRequested bool `json:"cancel_requested"`
		}
		fc.runJSON(&v, NewCmdCancel(fc.f, nil), "orders", "-o", "json")
		assert.Equal(t, runHandle{Job: "orders", WorkflowID: id, RunID: "run-1"}, v.runHandle)
		assert.True(t, v.CancelRequested)
	})

	t.Run("--wait reports the cancelled run", func(t *testing.T) {
		fc := newFakeCLI(t)
		fc.c.On("DescribeWorkflowExecution", mock.Anything, id, "").
			Return(describe(id, "run-1", enums.WORKFLOW_EXECUTION_STATUS_RUNNING, fakeNow, nil), nil)
		fc.c.On("CancelWorkflow", mock.Anything, id, "run-1").Return(nil)
		fc.c.On("GetWorkflow", mock.Anything, id, "run-1").Return(workflowRun(t, id, "run-1", workflows.Status{}, temporal.NewCanceledError()))
		fc.c.On("QueryWorkflow", mock.Anything, id, "run-1", workflows.StatusQuery).
			Return(value(t, workflows.Status{Job: "orders", RunID: "run-1", Phase: workflows.PhaseCancelled}), nil)
		fc.c.On("DescribeWorkflowExecution", mock.Anything, id, "run-1").
			Return(describe(id, "run-1", enums.WORKFLOW_EXECUTION_STATUS_CANCELED, fakeNow, nil), nil)
		var v statusView
		fc.runJSON(&v, NewCmdCancel(fc.f, nil), "orders", "--wait", "-o", "json")
		assert.Equal(t, "run-1", v.RunID)
		assert.Equal(t, workflows.PhaseCancelled, v.Phase)
		assert.Equal(t, "cancelled", v.ExecutionStatus)
		out, err := fc.run(NewCmdCancel(fc.f, nil), "orders", "--wait")
		require.NoError(t, err)
		assert.Regexp(t, `phase\s+cancelled\n`, out)
	})

	t.Run("--wait: a host left quiesced exits 4", func(t *testing.T) {
		fc := newFakeCLI(t)
		fc.c.On("DescribeWorkflowExecution", mock.Anything, id, "").
			Return(describe(id, "run-1", enums.WORKFLOW_EXECUTION_STATUS_RUNNING, fakeNow, nil), nil)
		fc.c.On("CancelWorkflow", mock.Anything, id, "run-1").Return(nil)
		fc.c.On("GetWorkflow", mock.Anything, id, "run-1").Return(workflowRun(t, id, "run-1", workflows.Status{}, temporal.NewCanceledError()))
		fc.c.On("QueryWorkflow", mock.Anything, id, "run-1", workflows.StatusQuery).
			Return(value(t, workflows.Status{Job: "orders", RunID: "run-1", Phase: workflows.PhaseCancelled, QuiescedHost: "a1"}), nil)
		fc.c.On("DescribeWorkflowExecution", mock.Anything, id, "run-1").Return(nil, errors.New("gone"))
		out, err := fc.fail(ExitLeftQuiesce, NewCmdCancel(fc.f, nil), "orders", "--wait")
		assert.Contains(t, err.Error(), "HOST a1 WAS LEFT QUIESCED")
		assert.Regexp(t, `WARNING\s+host a1 was LEFT QUIESCED`, out)
	})

	t.Run("no running run", func(t *testing.T) {
		fc := newFakeCLI(t)
		fc.c.On("DescribeWorkflowExecution", mock.Anything, id, "").
			Return(describe(id, "run-1", enums.WORKFLOW_EXECUTION_STATUS_COMPLETED, fakeNow, nil), nil)
		_, err := fc.fail(ExitFailure, NewCmdCancel(fc.f, nil), "orders")
		assert.Contains(t, err.Error(), "job orders has no running run: its latest run run-1 is completed")
	})

	t.Run("no runs at all: not_found", func(t *testing.T) {
		fc := newFakeCLI(t)
		fc.c.On("DescribeWorkflowExecution", mock.Anything, id, "").Return(nil, serviceerror.NewNotFound("nope"))
		e := fc.runFailure(ExitFailure, NewCmdCancel(fc.f, nil), "orders", "-o", "json")
		assert.Equal(t, KindNotFound, e.Error.Kind)
		assert.Contains(t, e.Error.Message, "job orders has no run to cancel")
	})
}
