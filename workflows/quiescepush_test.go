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

// quiesceApart makes a run quiesce and push in two activities, as runs recorded before
// quiesce-in-push did (and runs whose application and source agents differ do).
func quiesceApart(env *testsuite.TestWorkflowEnvironment) {
	recordedBefore(env)
	env.OnGetVersion("quiesce-in-push", workflow.DefaultVersion, 1).Return(workflow.DefaultVersion)
}

// One agent is the application's and the source's: the quiesce script travels in the push,
// one activity for both, checked by the agent as the same job, run and agent.
func TestQuiesceTravelsInThePush(t *testing.T) {
	f := &fakeAgents{fail: func(string, string) error { return nil }}
	st, err := runWorkflow(t, f)
	require.NoError(t, err)
	assert.Equal(t, []string{"script:quiesce:a1@a1", "push@a1", "script:resume:a1@a1", "pull@b1"}, f.serial())
	require.Len(t, f.pushes, 1)
	q := f.pushes[0].Quiesce
	require.NotNil(t, q, "the push carries the quiesce")
	assert.Equal(t, activities.StepQuiesce, q.Step)
	assert.Equal(t, "freeze.sh", q.Script)
	assert.Equal(t, "a1", q.Host.Name)
	assert.Equal(t, f.pushes[0].Job, q.Job)
	assert.Equal(t, f.pushes[0].RunID, q.RunID)
	assert.Equal(t, "a1", q.Agent)
	assert.Equal(t, "img-1", st.Image)
	assert.Equal(t, PhaseCompleted, st.Phase)
	assert.Empty(t, st.QuiescedHost)
	var steps []activities.Step
	for _, s := range st.Scripts {
		steps = append(steps, s.Step)
	}
	assert.Equal(t, []activities.Step{activities.StepQuiesce, activities.StepResume}, steps)

	// Runs recorded before it, and other layouts, quiesce on their own.
	f = &fakeAgents{fail: func(string, string) error { return nil }}
	_, err = runWorkflowWith(t, f, ReplicationInput{Job: "orders"}, quiesceApart)
	require.NoError(t, err)
	require.Len(t, f.pushes, 1)
	assert.Nil(t, f.pushes[0].Quiesce)

	// A source order that starts elsewhere: two activities.
	f = &fakeAgents{fail: func(string, string) error { return nil }}
	f.plan = func(p *activities.Plan) { p.Order.Source = []string{"a2", "a1"} }
	_, err = runWorkflow(t, f)
	require.NoError(t, err)
	assert.Equal(t, []string{"script:quiesce:a1@a1", "push@a2", "script:resume:a1@a1", "pull@b1"}, f.serial())
	require.Len(t, f.pushes, 1)
	assert.Nil(t, f.pushes[0].Quiesce)
}

// The agent died in the push part (its last heartbeat says push): the quiesce stands, the
// push is taken over from its cursor by the next source agent, and the host is not
// quiesced again.
func TestFusedPushLostInThePushPart(t *testing.T) {
	f := &fakeAgents{}
	f.fail = failOn("push", "a1", temporal.NewTimeoutError(enums.TIMEOUT_TYPE_HEARTBEAT, nil, activities.Progress{Step: activities.StepPush, FilesDone: 7}))
	st, err := runWorkflow(t, f)
	require.NoError(t, err)
	assert.Equal(t, []string{"script:quiesce:a1@a1", "push@a1", "script:takeover:a1@a2", "push@a2", "script:resume:a1@a2", "pull@b1"}, f.serial())
	require.Len(t, f.pushes, 2)
	assert.Nil(t, f.pushes[1].Quiesce, "the taker pushes only")
	require.NotNil(t, f.pushes[1].Resume, "the taker gets the cursor")
	assert.EqualValues(t, 7, f.pushes[1].Resume.FilesDone)
	require.Len(t, st.Takeovers, 2)
	assert.Equal(t, RoleSource, st.Takeovers[0].Role)
	assert.Equal(t, activities.StepPush, st.Takeovers[0].Step)
	assert.Equal(t, RoleApplication, st.Takeovers[1].Role, "a1, lost, is skipped for the resume")
	assert.Equal(t, activities.StepResume, st.Takeovers[1].Step)
	assert.Empty(t, st.QuiescedHost)
}

// The agent died while the quiesce script ran: a lost quiesce, taken over as one (the
// takeover script, the quiesce again on the next agent), then a push of its own.
func TestFusedPushLostInTheQuiescePart(t *testing.T) {
	f := &fakeAgents{}
	f.fail = failOn("script:quiesce", "a1", temporal.NewTimeoutError(enums.TIMEOUT_TYPE_HEARTBEAT, nil))
	st, err := runWorkflow(t, f)
	require.NoError(t, err)
	assert.Equal(t, []string{"script:quiesce:a1@a1", "script:takeover:a1@a2", "script:quiesce:a1@a2", "push@a2", "script:resume:a1@a2", "pull@b1"}, f.serial())
	require.Len(t, f.pushes, 1, "a1 never pushed")
	assert.Nil(t, f.pushes[0].Quiesce)
	require.NotEmpty(t, st.Takeovers)
	assert.Equal(t, RoleApplication, st.Takeovers[0].Role)
	assert.Equal(t, activities.StepQuiesce, st.Takeovers[0].Step)
	assert.Empty(t, st.QuiescedHost)

	// Never received (schedule-to-start): nothing ran on a1, so its quiesce is not resumed there.
	f = &fakeAgents{}
	f.fail = failOn("script:quiesce", "a1", temporal.NewTimeoutError(enums.TIMEOUT_TYPE_SCHEDULE_TO_START, nil))
	_, err = runWorkflow(t, f)
	require.NoError(t, err)
	assert.Equal(t, []string{"script:quiesce:a1@a1", "script:takeover:a1@a2", "script:quiesce:a1@a2", "push@a2", "script:resume:a1@a2", "pull@b1"}, f.serial())
}

// A failed quiesce script fails the run without a push, and the host is resumed; a push
// part refused by the storage fails the run without a takeover, and the host is resumed.
func TestFusedPushFailures(t *testing.T) {
	f := &fakeAgents{}
	f.fail = failOn("script:quiesce", "a1", temporal.NewNonRetryableApplicationError("quiesce script freeze.sh exited 3", activities.ErrTypeScriptFailed, nil))
	st, err := runWorkflow(t, f)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "exited 3")
	assert.Equal(t, []string{"script:quiesce:a1@a1", "script:resume:a1@a1"}, f.serial())
	assert.Empty(t, f.pushes)
	assert.Empty(t, st.Takeovers)
	assert.Empty(t, st.QuiescedHost)

	f = &fakeAgents{}
	f.fail = failOn("push", "a1", temporal.NewNonRetryableApplicationError("repository: no space left on device", activities.ErrTypeStorageFault, nil))
	st, err = runWorkflow(t, f)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no space left")
	assert.Equal(t, []string{"script:quiesce:a1@a1", "push@a1", "script:resume:a1@a1"}, f.serial())
	assert.Empty(t, st.Takeovers)
	assert.Empty(t, st.QuiescedHost)

	// A retryable push part: retried on the same agent as a push of its own, while quiesced.
	f = &fakeAgents{}
	tries := 0
	f.fail = func(kind, agent string) error {
		if kind == "push" && agent == "a1" {
			if tries++; tries == 1 {
				return temporal.NewApplicationError("push: connection reset", "StepFailed")
			}
		}
		return nil
	}
	_, err = runWorkflow(t, f)
	require.NoError(t, err)
	assert.Equal(t, []string{"script:quiesce:a1@a1", "push@a1", "push@a1", "script:resume:a1@a1", "pull@b1"}, f.serial())
	require.Len(t, f.pushes, 2)
	assert.NotNil(t, f.pushes[0].Quiesce)
	assert.Nil(t, f.pushes[1].Quiesce, "the quiesce ran once")
}

// thawApart makes a run resume in a step of its own, as runs recorded before resume-in-push
// did (and runs whose application and source agents differ do).
func thawApart(env *testsuite.TestWorkflowEnvironment) {
	recordedBefore(env)
	env.OnGetVersion("resume-in-push", workflow.DefaultVersion, 1).Return(workflow.DefaultVersion)
}
