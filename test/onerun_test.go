package test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/workflows"
)

// A second run of a job started under another workflow ID while a run is going (as the Web
// UI or an API client could) is refused before any script runs; the first run completes
// with one freeze and one thaw. Case-variant and unknown input keys are refused the same way.
func TestOneRunPerJobWhateverTheID(t *testing.T) {
	e := newEnv(t)
	writeDataset(t, e.sourceDir(), 20, 2000, 3)
	e.startAgents("a1", "a2", "b1", "b2")
	run := e.start("orders")
	e.waitStarted(run, activities.PushName) // it carries the preflight and the precopy

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, c := range []struct {
		id   string
		in   any
		want string
	}{
		{"orders-again", workflows.ReplicationInput{Job: "orders"}, `must have workflow ID "replctl-orders"`},
		{"orders-case", map[string]string{"Job": "orders"}, `keys are case-sensitive, did you mean "job"`},
		{"orders-extra", map[string]any{"job": "orders", "extra": 1}, `unknown input key "extra"`},
	} {
		other, err := e.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: c.id, TaskQueue: workflows.DefaultTaskQueue, WorkflowTaskTimeout: workflows.WorkflowTaskTimeout},
			workflows.ReplicationWorkflowName, c.in)
		require.NoError(t, err)
		err = other.Get(ctx, nil)
		require.Error(t, err, c.id)
		assert.Contains(t, err.Error(), c.want)
		t.Logf("%s refused: %v", c.id, err)
		if c.id == "orders-case" {
			recordHistory(t, e, other.GetID(), other.GetRunID(), "strict-input-refused-baseline")
		}
	}
	st, err := e.wait(run)
	require.NoError(t, err)
	assert.Equal(t, workflows.PhaseCompleted, st.Phase)
	recordHistory(t, e, run.GetID(), run.GetRunID(), "one-run-per-job-baseline")
	var freezes, thaws int
	for _, m := range e.markers("a1") {
		freezes += boolInt(strings.HasPrefix(m, "quiesce "))
		thaws += boolInt(strings.HasPrefix(m, "resume "))
	}
	assert.Equal(t, 1, freezes, "one freeze: the refused runs ran no script")
	assert.Equal(t, 1, thaws)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
