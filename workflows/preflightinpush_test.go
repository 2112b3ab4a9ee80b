package workflows

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/replctl/replctl/activities"
)

// noScripts makes the job quiesce nothing: its image is crash-consistent.
func noScripts(p *activities.Plan) { p.Application.Quiesce, p.Application.Resume = "", "" }

// A job without a quiesce script: the push carries its agent's preflight, and no
// Preflight activity runs.
func TestPreflightTravelsInAPlainPush(t *testing.T) {
	f := &fakeAgents{fail: func(string, string) error { return nil }, plan: noScripts}
	st, err := runWorkflow(t, f)
	require.NoError(t, err)
	assert.Equal(t, []string{"push@a1", "pull@b1"}, f.serial())
	require.Len(t, f.pushes, 1)
	b := f.pushes[0].Before
	require.NotNil(t, b)
	assert.Equal(t, activities.BeforeQuiesce{Preflight: activities.PreflightInput{Job: "orders", RunID: st.RunID, Agent: "a1", Storage: "a",
		Datasets: []string{"orders"}, SourceDirs: []string{"/a/orders"}}}, *b)
	assert.Nil(t, f.pushes[0].Quiesce)
	assert.Equal(t, [2]int{1, 0}, [2]int{f.inPush, f.inPrecopy})
	assert.Len(t, f.preflights, 1, "no Preflight activity")
	assert.True(t, st.CrashConsistent)
	assert.Equal(t, PhaseCompleted, st.Phase)

	// Runs recorded before it ran the preflight as a step of its own.
	f = &fakeAgents{fail: func(string, string) error { return nil }, plan: noScripts}
	_, err = runWorkflowWith(t, f, ReplicationInput{Job: "orders"}, func(env *testsuite.TestWorkflowEnvironment) {
		recordedBefore(env)
		env.OnGetVersion("preflight-in-push", workflow.DefaultVersion, 1).Return(workflow.DefaultVersion)
	})
	require.NoError(t, err)
	require.Len(t, f.pushes, 1)
	assert.Nil(t, f.pushes[0].Before)
	assert.Len(t, f.preflights, 1, "the Preflight activity")
	assert.Equal(t, 0, f.inPush)
}

// A lost agent's push is taken over, and the taker's attempt carries its own preflight; a
// refusal in the preflight part ends the run without a takeover.
func TestPreflightInAPlainPushFollowsThePushStep(t *testing.T) {
	f := &fakeAgents{plan: noScripts}
	f.fail = failOn("push", "a1", temporal.NewTimeoutError(enums.TIMEOUT_TYPE_HEARTBEAT, nil, activities.Progress{Step: activities.StepPush, FilesDone: 3}))
	st, err := runWorkflow(t, f)
	require.NoError(t, err)
	assert.Equal(t, []string{"push@a1", "script:takeover:a1@a2", "push@a2", "pull@b1"}, f.serial())
	require.Len(t, f.pushes, 2)
	require.NotNil(t, f.pushes[1].Before)
	assert.Equal(t, "a2", f.pushes[1].Before.Preflight.Agent, "the taker checks its own view")
	require.NotNil(t, f.pushes[1].Resume)
	assert.EqualValues(t, 3, f.pushes[1].Resume.FilesDone)
	require.Len(t, st.Takeovers, 1)
	assert.Equal(t, []string{RoleSource, string(activities.StepPush), "a1", "a2"},
		[]string{st.Takeovers[0].Role, string(st.Takeovers[0].Step), st.Takeovers[0].From, st.Takeovers[0].To})

	f = &fakeAgents{plan: noScripts}
	f.fail = failOn("preflight", "a1", temporal.NewNonRetryableApplicationError("source check on agent a1: /a/orders is a symlink", activities.ErrTypeBadInput, nil))
	st, err = runWorkflow(t, f)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "is a symlink")
	assert.Empty(t, f.serial(), "nothing pushed or pulled")
	assert.Empty(t, st.Takeovers)
	assert.Equal(t, PhaseFailed, st.Phase)
}
