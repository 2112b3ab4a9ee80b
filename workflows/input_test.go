package workflows

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/replctl/replctl/activities"
)

// runRaw runs Replication under workflow ID id with a payload as the Web UI or an API
// client would send it, with a Plan that records whether it was called.
func runRaw(t *testing.T, id string, p *commonpb.Payload) (error, bool) {
	t.Helper()
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.RegisterWorkflowWithOptions(Replication, workflowOptions())
	planned := false
	env.RegisterActivityWithOptions(func(ctx context.Context, in activities.PlanInput) (activities.PlanResult, error) {
		planned = true
		return activities.PlanResult{}, temporal.NewNonRetryableApplicationError("stop here", activities.ErrTypeBadInput, nil)
	}, activityOptions(activities.PlanName))
	env.SetStartWorkflowOptions(client.StartWorkflowOptions{ID: id})
	env.ExecuteWorkflow(ReplicationWorkflowName, converter.NewRawValue(p))
	require.True(t, env.IsWorkflowCompleted())
	return env.GetWorkflowError(), planned
}

func jsonPayload(data string) *commonpb.Payload {
	return &commonpb.Payload{Metadata: map[string][]byte{converter.MetadataEncoding: []byte(converter.MetadataEncodingJSON)}, Data: []byte(data)}
}

// Every malformed input fails at once as bad input showing the expected shape; nothing is
// planned, so no script can run.
func TestStrictWorkflowInput(t *testing.T) {
	for name, c := range map[string]struct {
		payload *commonpb.Payload
		want    string
	}{
		"unknown key":        {jsonPayload(`{"job":"orders","extra":1}`), `unknown input key "extra"`},
		"case-variant key":   {jsonPayload(`{"Job":"orders"}`), `input key "Job": keys are case-sensitive, did you mean "job"?`},
		"wrong type":         {jsonPayload(`{"job":5}`), `input key "job" is a JSON number, want a string`},
		"bare string":        {jsonPayload(`"orders"`), `input "\"orders\"" is not a JSON object`},
		"not JSON":           {jsonPayload(`orders`), `input is not JSON ("orders")`},
		"null":               {jsonPayload(`null`), `is not a JSON object`},
		"binary encoding":    {&commonpb.Payload{Metadata: map[string][]byte{converter.MetadataEncoding: []byte("binary/plain")}, Data: []byte("x")}, `input encoded as "binary/plain", not JSON`},
		"no input":           {nil, "no input"},
		"duplicate-case key": {jsonPayload(`{"job":"orders","JOB":"other"}`), `input key "JOB": keys are case-sensitive`},
	} {
		t.Run(name, func(t *testing.T) {
			err, planned := runRaw(t, WorkflowID("orders"), c.payload)
			require.Error(t, err)
			var appErr *temporal.ApplicationError
			require.ErrorAs(t, err, &appErr)
			assert.Equal(t, activities.ErrTypeBadInput, appErr.Type())
			assert.Contains(t, err.Error(), c.want)
			assert.Contains(t, err.Error(), `want {"job": "NAME"}`)
			assert.False(t, planned, "nothing is planned for bad input")
		})
	}
	// The good input gets as far as the plan.
	_, planned := runRaw(t, WorkflowID("orders"), jsonPayload(`{"job":"orders","direction":"failback","confirm":"orders"}`))
	assert.True(t, planned)
}

// A run under any other workflow ID than its job's is refused before anything is planned:
// the ID is what keeps two runs of a job from overlapping.
func TestRunNeedsTheJobsWorkflowID(t *testing.T) {
	err, planned := runRaw(t, "sneaky-orders", jsonPayload(`{"job":"orders"}`))
	require.Error(t, err)
	var appErr *temporal.ApplicationError
	require.ErrorAs(t, err, &appErr)
	assert.Equal(t, ErrTypeNotJobsID, appErr.Type())
	assert.Contains(t, err.Error(), `this run's workflow ID is "sneaky-orders", but a run of job "orders" must have workflow ID "replctl-orders"`)
	assert.False(t, planned)
}
