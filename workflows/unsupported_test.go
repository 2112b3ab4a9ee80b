package workflows

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/replctl/replctl/activities"
)

// With on_unsupported: skip, the push's summary reaches the status and the replica is
// incomplete, though verified against its image.
func TestUnsupportedSkipMarksReplicaIncomplete(t *testing.T) {
	sum := &activities.Unsupported{Count: 2, ByKind: map[string]int{"fifo": 1, "device": 1}, First: []string{"orders/dev/null0 (char device)", "orders/pipe (fifo)"}}
	f := &fakeAgents{fail: func(string, string) error { return nil }, unsupported: sum,
		plan: func(p *activities.Plan) { p.OnUnsupported = "skip" }}
	st, err := runWorkflow(t, f)
	require.NoError(t, err)
	require.Len(t, f.pushes, 1)
	assert.Equal(t, "skip", f.pushes[0].OnUnsupported, "the push carries the job's policy for the agent to check")
	assert.Equal(t, PhaseCompleted, st.Phase)
	require.NotNil(t, st.Unsupported)
	assert.Equal(t, 2, st.Unsupported.Count)
	assert.Equal(t, map[string]int{"fifo": 1, "device": 1}, st.Unsupported.ByKind)
	assert.True(t, st.Replica.Verified)
	assert.True(t, st.Replica.Incomplete)
	assert.Equal(t, []string{"orders/dev/null0 (char device)", "orders/pipe (fifo)"}, st.Unsupported.First)
}

// A complete image makes a replica that is not marked.
func TestNothingUnsupportedLeavesReplicaComplete(t *testing.T) {
	f := &fakeAgents{fail: func(string, string) error { return nil }}
	st, err := runWorkflow(t, f)
	require.NoError(t, err)
	assert.Equal(t, "", f.pushes[0].OnUnsupported, "the test plan predates the field: the agent applies its own")
	assert.Nil(t, st.Unsupported)
	assert.False(t, st.Replica.Incomplete)
}

// Under on_unsupported: fail the push's refusal is final: no other agent is tried, the
// application is resumed, and the run fails with the push's message.
func TestUnsupportedFailIsFinalAndResumes(t *testing.T) {
	msg := "push: 1 entry cannot be replicated (fifo 1): orders/pipe (fifo); set on_unsupported: skip on job orders to replicate without them"
	f := &fakeAgents{fail: failOn("push", "", temporal.NewNonRetryableApplicationError(msg, activities.ErrTypeUnsupported, nil)),
		plan: func(p *activities.Plan) { p.OnUnsupported = "fail" }}
	st, err := runWorkflow(t, f)
	require.Error(t, err)
	assert.Contains(t, err.Error(), msg)
	assert.Equal(t, []string{"script:quiesce:a1@a1", "push@a1", "script:resume:a1@a1"}, f.serial())
	assert.Equal(t, PhaseFailed, st.Phase)
	assert.Empty(t, st.QuiescedHost)
	assert.Nil(t, st.Replica)
}
