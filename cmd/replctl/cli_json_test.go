package main

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/replctl/replctl/workflows"
)

// jsonErrorOut is the error object a command prints with -o json when it fails.
type jsonErrorOut struct {
	Error struct {
		Code       int    `json:"code"`
		Kind       string `json:"kind"`
		Message    string `json:"message"`
		Job        string `json:"job"`
		WorkflowID string `json:"workflow_id"`
		RunID      string `json:"run_id"`
		Phase      string `json:"phase"`
		StartedAt  string `json:"started_at"`
	} `json:"error"`
}

// testStartRefusedWhileRunning: a second start of a job whose run is going exits
// ExitRunning naming that run; with -o json, start prints the started run, and the
// refusal (like any failure, e.g. status of an unknown job) prints the error object.
func testStartRefusedWhileRunning(t *testing.T, e *cliEnv) {
	e.setSlow("4")
	defer e.setSlow("")
	out, errOut, err := e.cli("start", "orders", "-o", "json")
	require.NoError(t, err, errOut)
	var started struct {
		Job        string `json:"job"`
		WorkflowID string `json:"workflow_id"`
		RunID      string `json:"run_id"`
	}
	assert.NoError(t, json.Unmarshal([]byte(out), &started), "start -o json printed %q", out)
	t.Logf("start -o json: %s", out)
	runID := e.waitPhase("orders", workflows.PhaseQuiescing)
	defer func() {
		// Let the run (cancelled below) end before the next subtest starts one.
		err := e.c.GetWorkflow(context.Background(), workflows.WorkflowID("orders"), runID).Get(context.Background(), nil)
		var canceled *temporal.CanceledError
		assert.ErrorAs(t, err, &canceled)
	}()
	assert.Equal(t, "orders", started.Job)
	assert.Equal(t, workflows.WorkflowID("orders"), started.WorkflowID)
	assert.Equal(t, runID, started.RunID)

	out, _, err = e.cli("start", "orders")
	require.Error(t, err)
	t.Logf("refusal: %v", err)
	assert.Equal(t, ExitRunning, exitCode(err), "a run is going: its own exit code")
	assert.Empty(t, out)
	for _, want := range []string{"workflow " + workflows.WorkflowID("orders"), "run " + runID, "phase " + workflows.PhaseQuiescing, "started "} {
		assert.Contains(t, err.Error(), want)
	}

	refused := e.cliFailure(ExitRunning, "start", "orders", "-o", "json")
	assert.Equal(t, "running", refused.Error.Kind)
	assert.Equal(t, "orders", refused.Error.Job)
	assert.Equal(t, workflows.WorkflowID("orders"), refused.Error.WorkflowID)
	assert.Equal(t, runID, refused.Error.RunID)
	assert.Equal(t, workflows.PhaseQuiescing, refused.Error.Phase)
	assert.NotEmpty(t, refused.Error.StartedAt)

	missing := e.cliFailure(ExitFailure, "status", "nosuchjob", "-o", "json")
	assert.Equal(t, "not_found", missing.Error.Kind)
	assert.Contains(t, missing.Error.Message, "nosuchjob")

	var cancelled struct {
		runHandle
		CancelRequested bool `json:"cancel_requested"`
	}
	e.cliJSON(&cancelled, "cancel", "orders", "-o", "json")
	assert.Equal(t, runID, cancelled.RunID)
	assert.True(t, cancelled.CancelRequested)
}

// cliFailure runs replctl with args (which include -o json), expecting it to fail with
// code, and decodes the error object it printed.
func (e *cliEnv) cliFailure(code int, args ...string) jsonErrorOut {
	e.t.Helper()
	out, _, err := e.cli(args...)
	assert.Equal(e.t, code, exitCode(err), "replctl %v: %v", args, err)
	var v jsonErrorOut
	assert.NoError(e.t, json.Unmarshal([]byte(out), &v), "replctl %v printed %q", args, out)
	e.t.Logf("replctl %v printed: %s", args, out)
	assert.Equal(e.t, code, v.Error.Code)
	if err != nil {
		assert.Equal(e.t, err.Error(), v.Error.Message)
	}
	return v
}
