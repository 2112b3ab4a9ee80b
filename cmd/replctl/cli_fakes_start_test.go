package main

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/activities/dataplane"
	"github.com/replctl/replctl/workflows"
)

// onStart makes ExecuteWorkflow of name under id on the config's task queue return run
// (or err).
func (fc *fakeCLI) onStart(id, name string, input any, run client.WorkflowRun, err error) *mock.Call {
	return fc.c.On("ExecuteWorkflow", mock.Anything, mock.MatchedBy(func(o client.StartWorkflowOptions) bool {
		return o.ID == id && o.TaskQueue == "replctl" && o.WorkflowIDConflictPolicy == enums.WORKFLOW_ID_CONFLICT_POLICY_FAIL && o.WorkflowExecutionErrorWhenAlreadyStarted
	}), name, input).Return(run, err)
}

func TestStartWithFakes(t *testing.T) {
	id := workflows.WorkflowID("orders")
	in := workflows.ReplicationInput{Job: "orders"}
	t.Run("without --wait: names the started run", func(t *testing.T) {
		fc := newFakeCLI(t)
		fc.onStart(id, workflows.ReplicationWorkflowName, in, workflowRun(t, id, "run-1", workflows.Status{}, nil), nil)
		out, err := fc.run(NewCmdStart(fc.f, nil), "orders")
		require.NoError(t, err)
		assert.Empty(t, out)
		assert.Equal(t, "started job orders: workflow replctl-orders run run-1\n", fc.errOut.String())
		var h runHandle
		fc.runJSON(&h, NewCmdStart(fc.f, nil), "orders", "-o", "json")
		assert.Equal(t, runHandle{Job: "orders", WorkflowID: id, RunID: "run-1"}, h)
	})

	t.Run("--wait: the completed run's status", func(t *testing.T) {
		fc := newFakeCLI(t)
		fc.onStart(id, workflows.ReplicationWorkflowName, in, workflowRun(t, id, "run-1", completedStatus("run-1"), nil), nil)
		out, err := fc.run(NewCmdStart(fc.f, nil), "orders", "--wait")
		require.NoError(t, err)
		assert.Regexp(t, `phase\s+completed, took 1m0s\n`, out)
		assert.Regexp(t, `replica\s+/t/orders/r-0001 `, out)
		assert.Contains(t, out, "took 0s\n", "by the fake clock")
		var v statusView
		fc.runJSON(&v, NewCmdStart(fc.f, nil), "orders", "--wait", "-o", "json")
		assert.Equal(t, id, v.WorkflowID)
		assert.Equal(t, "run-1", v.RunID)
		assert.Equal(t, workflows.PhaseCompleted, v.Phase)
	})

	t.Run("--wait: a failed run exits 3, with its status from the query", func(t *testing.T) {
		fc := newFakeCLI(t)
		fc.onStart(id, workflows.ReplicationWorkflowName, in, workflowRun(t, id, "run-1", workflows.Status{}, errors.New("pull: disk full")), nil)
		fc.c.On("QueryWorkflow", mock.Anything, id, "run-1", workflows.StatusQuery).
			Return(value(t, workflows.Status{Job: "orders", RunID: "run-1", Phase: workflows.PhaseFailed, Error: "pull: disk full"}), nil)
		out, err := fc.fail(ExitRunFailed, NewCmdStart(fc.f, nil), "orders", "--wait")
		assert.Contains(t, err.Error(), "run of job orders failed: pull: disk full")
		assert.Regexp(t, `error\s+pull: disk full\n`, out)

		var v struct {
			jsonErrorOut
			Result statusView `json:"result"`
		}
		out, err = fc.run(NewCmdStart(fc.f, nil), "orders", "--wait", "-o", "json")
		require.Error(t, err)
		require.NoError(t, json.Unmarshal([]byte(out), &v), out)
		assert.Equal(t, KindRunFailed, v.Error.Kind)
		assert.Equal(t, workflows.PhaseFailed, v.Result.Phase, "the run's status beside the error")
	})

	t.Run("--wait: a server away for a while is waited out", func(t *testing.T) {
		fc := newFakeCLI(t)
		fc.onStart(id, workflows.ReplicationWorkflowName, in, workflowRun(t, id, "run-1", workflows.Status{}, serviceerror.NewNamespaceNotFound("default")), nil)
		fc.c.On("GetWorkflow", mock.Anything, id, "run-1").Return(workflowRun(t, id, "run-1", workflows.Status{}, serviceerror.NewUnavailable("history restarting"))).Once()
		fc.c.On("GetWorkflow", mock.Anything, id, "run-1").Return(workflowRun(t, id, "run-1", completedStatus("run-1"), nil)).Once()
		out, err := fc.run(NewCmdStart(fc.f, nil), "orders", "--wait")
		require.NoError(t, err)
		assert.Regexp(t, `phase\s+completed, took 1m0s\n`, out)
		assert.Contains(t, fc.errOut.String(), "the server does not answer (Namespace default is not found.); still waiting for workflow replctl-orders\n")
		assert.Equal(t, 1, strings.Count(fc.errOut.String(), "does not answer"), "said once")
	})

	t.Run("--wait: a wait the server refuses exits 1, not as a failed run", func(t *testing.T) {
		fc := newFakeCLI(t)
		fc.onStart(id, workflows.ReplicationWorkflowName, in, workflowRun(t, id, "run-1", workflows.Status{}, serviceerror.NewPermissionDenied("role starter may not read histories", "")), nil)
		e := fc.runFailure(ExitFailure, NewCmdStart(fc.f, nil), "orders", "--wait", "-o", "json")
		assert.Equal(t, KindFailure, e.Error.Kind)
		assert.Contains(t, e.Error.Message, "waiting for the run of job orders: role starter may not read histories")
	})

	t.Run("--wait: a failed run that left a host quiesced exits 4", func(t *testing.T) {
		fc := newFakeCLI(t)
		fc.onStart(id, workflows.ReplicationWorkflowName, in, workflowRun(t, id, "run-1", workflows.Status{}, errors.New("resume failed")), nil)
		fc.c.On("QueryWorkflow", mock.Anything, id, "run-1", workflows.StatusQuery).
			Return(value(t, workflows.Status{Job: "orders", RunID: "run-1", Phase: workflows.PhaseFailed, QuiescedHost: "a1"}), nil)
		e := fc.runFailure(ExitLeftQuiesce, NewCmdStart(fc.f, nil), "orders", "--wait", "-o", "json")
		assert.Equal(t, KindLeftQuiesced, e.Error.Kind)
		assert.Contains(t, e.Error.Message, "HOST a1 WAS LEFT QUIESCED")
	})

	t.Run("a run already going: exit 5 naming it", func(t *testing.T) {
		fc := newFakeCLI(t)
		began := fakeNow.Add(-time.Minute)
		fc.onStart(id, workflows.ReplicationWorkflowName, in, nil, serviceerror.NewWorkflowExecutionAlreadyStarted("started", "req", "run-0"))
		fc.c.On("DescribeWorkflowExecution", mock.Anything, id, "run-0").
			Return(describe(id, "run-0", enums.WORKFLOW_EXECUTION_STATUS_RUNNING, began, map[string]string{workflows.AttrPhase.GetName(): workflows.PhaseQuiescing}), nil)
		fc.c.On("QueryWorkflow", mock.Anything, id, "run-0", workflows.StatusQuery).
			Return(value(t, workflows.Status{Phase: workflows.PhasePushing}), nil)
		_, err := fc.fail(ExitRunning, NewCmdStart(fc.f, nil), "orders")
		assert.Contains(t, err.Error(), "a run of job orders is already going: workflow replctl-orders run run-0, phase pushing, started 2025-06-02 11:59:00 UTC (1m0s ago)")

		e := fc.runFailure(ExitRunning, NewCmdStart(fc.f, nil), "orders", "-o", "json")
		assert.Equal(t, KindRunning, e.Error.Kind)
		assert.Equal(t, "orders", e.Error.Job)
		assert.Equal(t, id, e.Error.WorkflowID)
		assert.Equal(t, "run-0", e.Error.RunID)
		assert.Equal(t, workflows.PhasePushing, e.Error.Phase, "the query's phase over the search attribute's")
		assert.Equal(t, began.Format(time.RFC3339), e.Error.StartedAt)
	})

	t.Run("an unknown job is a usage error before dialing", func(t *testing.T) {
		fc := newFakeCLI(t)
		_, err := fc.run(NewCmdStart(fc.f, nil), "nojob")
		assert.Equal(t, ExitUsage, exitCode(err), "%v", err)
	})
}

func TestMaintainWithFakes(t *testing.T) {
	id := workflows.MaintenanceID("array-b", ".replctl/repository")
	t.Run("without --wait", func(t *testing.T) {
		fc := newFakeCLI(t)
		fc.onStart(id, workflows.MaintenanceWorkflowName, workflows.MaintenanceInput{Job: "orders"}, workflowRun(t, id, "m-1", workflows.MaintenanceResult{}, nil), nil)
		out, err := fc.run(NewCmdMaintain(fc.f, nil), "orders")
		require.NoError(t, err)
		assert.Empty(t, out)
		assert.Equal(t, "started maintenance of array-b:.replctl/repository (workflow "+id+" run m-1)\n", fc.errOut.String())
	})
	t.Run("--full --wait: who did it", func(t *testing.T) {
		fc := newFakeCLI(t)
		res := workflows.MaintenanceResult{Result: activities.MaintainResult{Agent: "b2", Full: true, Duration: 1500 * time.Millisecond}}
		fc.onStart(id, workflows.MaintenanceWorkflowName, workflows.MaintenanceInput{Job: "orders", Full: true}, workflowRun(t, id, "m-1", res, nil), nil)
		out, err := fc.run(NewCmdMaintain(fc.f, nil), "orders", "--full", "--wait")
		require.NoError(t, err)
		assert.Equal(t, "maintenance (full=true) done by b2 in 1.5s\n", out)
	})
	t.Run("a cancelled maintenance exits 3 and says cancelled", func(t *testing.T) {
		fc := newFakeCLI(t)
		fc.onStart(id, workflows.MaintenanceWorkflowName, workflows.MaintenanceInput{Job: "orders"}, workflowRun(t, id, "m-1", workflows.MaintenanceResult{}, temporal.NewCanceledError()), nil)
		_, err := fc.fail(ExitRunFailed, NewCmdMaintain(fc.f, nil), "orders", "--wait")
		assert.Contains(t, err.Error(), "maintenance of array-b:.replctl/repository was canceled")
	})
	t.Run("one owner at a time", func(t *testing.T) {
		fc := newFakeCLI(t)
		fc.onStart(id, workflows.MaintenanceWorkflowName, workflows.MaintenanceInput{Job: "orders"}, nil, serviceerror.NewWorkflowExecutionAlreadyStarted("started", "req", "m-0"))
		_, err := fc.fail(ExitFailure, NewCmdMaintain(fc.f, nil), "orders")
		assert.Contains(t, err.Error(), "maintenance of repository array-b:.replctl/repository is already running (workflow "+id+")")
	})
}

func TestVerifyWithFakes(t *testing.T) {
	id := workflows.VerifyID("orders")
	damaged := activities.ReplicaCheck{Name: "r-0002", Current: true, Image: "k1", Damaged: true,
		Differences: dataplane.Differences{Count: 3, First: []string{"d0/f00: content differs", "d1/f01: mode 0600, image 0644"}}}
	ok := activities.ReplicaCheck{Name: "r-0001", Image: "k0"}
	t.Run("a damaged replica exits 6 (damaged) and lists the differences", func(t *testing.T) {
		fc := newFakeCLI(t)
		res := workflows.VerifyResult{Result: activities.VerifyResult{Agent: "b1", Replicas: []activities.ReplicaCheck{damaged, ok}, Duration: 2 * time.Second}}
		fc.onStart(id, workflows.VerifyWorkflowName, workflows.VerifyInput{Job: "orders", All: true}, workflowRun(t, id, "v-1", res, nil), nil)
		out, err := fc.fail(ExitDamaged, NewCmdVerify(fc.f, nil), "orders", "--all")
		assert.Equal(t, "job orders: 1 of 2 replicas checked differ from their images", err.Error())
		assert.Regexp(t, `r-0002\s+true\s+DAMAGED: 3 differences\s+k1\n`, out)
		assert.Regexp(t, `r-0001\s+false\s+ok\s+k0\n`, out)
		assert.Contains(t, out, "r-0002: d0/f00: content differs\nr-0002: d1/f01: mode 0600, image 0644\nr-0002: ... and 1 more\n")
		assert.Contains(t, out, "checked by agent b1 in 2s\n")

		var v struct {
			jsonErrorOut
			Result activities.VerifyResult `json:"result"`
		}
		out, _ = fc.fail(ExitDamaged, NewCmdVerify(fc.f, nil), "orders", "--all", "-o", "json")
		require.NoError(t, json.Unmarshal([]byte(out), &v), out)
		assert.Equal(t, KindDamaged, v.Error.Kind)
		assert.Equal(t, ExitDamaged, v.Error.Code)
		require.Len(t, v.Result.Replicas, 2)
		assert.True(t, v.Result.Replicas[0].Damaged)
	})
	t.Run("--repair runs as the job's run; repaired replicas exit 0", func(t *testing.T) {
		fc := newFakeCLI(t)
		repaired := damaged
		repaired.Repaired = &activities.RepairedReplica{Name: "r-0003", Restored: 2, Linked: 10}
		res := workflows.VerifyResult{Result: activities.VerifyResult{Agent: "b1", Replicas: []activities.ReplicaCheck{repaired}}}
		run := workflows.WorkflowID("orders")
		fc.onStart(run, workflows.VerifyWorkflowName, workflows.VerifyInput{Job: "orders", Repair: true}, workflowRun(t, run, "v-2", res, nil), nil)
		out, err := fc.run(NewCmdVerify(fc.f, nil), "orders", "--repair")
		require.NoError(t, err)
		assert.Regexp(t, `r-0002\s+true\s+REPAIRED: 3 differences; now replica r-0003 \(2 entries written from the repository, 10 files reused after reading\)`, out)
	})
	t.Run("a verification already going exits 5", func(t *testing.T) {
		fc := newFakeCLI(t)
		fc.onStart(id, workflows.VerifyWorkflowName, workflows.VerifyInput{Job: "orders", Replica: "r-0001"}, nil, serviceerror.NewWorkflowExecutionAlreadyStarted("started", "req", "v-0"))
		e := fc.runFailure(ExitRunning, NewCmdVerify(fc.f, nil), "orders", "r-0001", "-o", "json")
		assert.Equal(t, KindRunning, e.Error.Kind)
		assert.Equal(t, "a verification of orders is already running (workflow "+id+")", e.Error.Message)
	})
	t.Run("a failed verification exits 3", func(t *testing.T) {
		fc := newFakeCLI(t)
		fc.onStart(id, workflows.VerifyWorkflowName, workflows.VerifyInput{Job: "orders"}, workflowRun(t, id, "v-1", workflows.VerifyResult{}, errors.New("no agent")), nil)
		_, err := fc.fail(ExitRunFailed, NewCmdVerify(fc.f, nil), "orders")
		assert.Contains(t, err.Error(), "verification of orders failed: no agent")
	})
	t.Run("a start the server refuses", func(t *testing.T) {
		fc := newFakeCLI(t)
		fc.onStart(id, workflows.VerifyWorkflowName, workflows.VerifyInput{Job: "orders"}, nil, serviceerror.NewUnavailable("down"))
		_, err := fc.fail(ExitFailure, NewCmdVerify(fc.f, nil), "orders")
		assert.Equal(t, "start verification of orders: down", err.Error())
	})
}

func TestImagesWithFakes(t *testing.T) {
	fc := newFakeCLI(t)
	id := workflows.ImagesID("orders")
	res := activities.ImagesResult{Agent: "b1", Dataset: "orders", Images: []dataplane.ImageInfo{
		{ID: "k2", Time: fakeNow.Add(-90 * time.Minute), Files: 12, Bytes: 3 << 20, Extras: true},
		{ID: "k1", Time: fakeNow.Add(-26 * time.Hour), Files: 10, Bytes: 2 << 20, Incomplete: "push interrupted"},
	}}
	fc.onStart(id, workflows.ImagesWorkflowName, workflows.ImagesInput{Job: "orders"}, workflowRun(t, id, "i-1", res, nil), nil)
	out, err := fc.run(NewCmdImages(fc.f, nil), "orders")
	require.NoError(t, err)
	assert.Regexp(t, `IMAGE\s+TIME\s+AGE\s+FILES\s+SIZE\s+NOTE\n`, out)
	assert.Regexp(t, `k2\s+2025-06-02T10:30:00Z\s+1h30m0s\s+12\s+3.0 MiB\s+with extras\n`, out)
	assert.Regexp(t, `k1\s+2025-06-01T10:00:00Z\s+26h0m0s\s+10\s+2.0 MiB\s+checkpoint \(push interrupted\)\n`, out)
	assert.Contains(t, out, "2 images of dataset orders, read by agent b1\n")

	var v activities.ImagesResult
	fc.runJSON(&v, NewCmdImages(fc.f, nil), "orders", "-o", "json")
	assert.Equal(t, "b1", v.Agent)
	require.Len(t, v.Images, 2)
	assert.Equal(t, "k2", v.Images[0].ID)
}

func TestRestoreWithFakes(t *testing.T) {
	id := workflows.RestoreID("orders")
	in := workflows.RestoreInput{Job: "orders", Image: "k2", To: "/t/restored", By: whoAmI()}
	t.Run("restored", func(t *testing.T) {
		fc := newFakeCLI(t)
		res := workflows.RestoreResult{Result: activities.RestoreResult{Agent: "b2", Path: "/t/restored", Image: "k2", Files: 12, Bytes: 3 << 20, Verified: true, Duration: 4 * time.Second}}
		fc.onStart(id, workflows.RestoreWorkflowName, in, workflowRun(t, id, "x-1", res, nil), nil)
		out, err := fc.run(NewCmdRestore(fc.f, nil), "orders", "k2", "--to", "/t/restored")
		require.NoError(t, err)
		assert.Equal(t, "image k2 restored to /t/restored: 12 files, 3.0 MiB, verified=true, by agent b2 in 4s\n", out)
		var v activities.RestoreResult
		fc.runJSON(&v, NewCmdRestore(fc.f, nil), "orders", "k2", "--to", "/t/restored", "-o", "json")
		assert.Equal(t, res.Result, v)
	})
	t.Run("a restore already going exits 5", func(t *testing.T) {
		fc := newFakeCLI(t)
		fc.onStart(id, workflows.RestoreWorkflowName, in, nil, serviceerror.NewWorkflowExecutionAlreadyStarted("started", "req", "x-0"))
		_, err := fc.fail(ExitRunning, NewCmdRestore(fc.f, nil), "orders", "k2", "--to", "/t/restored")
		assert.Equal(t, "a restore of orders is already running (workflow "+id+")", err.Error())
	})
	t.Run("a cancelled restore exits 3", func(t *testing.T) {
		fc := newFakeCLI(t)
		fc.onStart(id, workflows.RestoreWorkflowName, in, workflowRun(t, id, "x-1", workflows.RestoreResult{}, temporal.NewCanceledError()), nil)
		e := fc.runFailure(ExitRunFailed, NewCmdRestore(fc.f, nil), "orders", "k2", "--to", "/t/restored", "-o", "json")
		assert.Equal(t, KindRunFailed, e.Error.Kind)
		assert.Contains(t, e.Error.Message, "restore of orders was canceled")
	})
}
