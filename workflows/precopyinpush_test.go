package workflows

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/replctl/replctl/activities"
)

// One agent is the application's and the source's: the push that carries the quiesce also
// carries the run's preflight and the precopy decision: no Preflight or Precopy activity.
func TestPreflightAndPrecopyTravelInThePush(t *testing.T) {
	for _, mode := range []string{"auto", "always", "never"} {
		f := &fakeAgents{fail: func(string, string) error { return nil }, plan: func(p *activities.Plan) { p.Precopy = mode }}
		st, err := runWorkflow(t, f)
		require.NoError(t, err, mode)
		require.Len(t, f.pushes, 1, mode)
		b := f.pushes[0].Before
		require.NotNil(t, b, mode)
		assert.Equal(t, activities.PreflightInput{Job: "orders", RunID: st.RunID, Agent: "a1", Storage: "a",
			Datasets: []string{"orders"}, SourceDirs: []string{"/a/orders"}}, b.Preflight, mode)
		assert.Equal(t, [2]bool{mode != "never", mode == "always"}, [2]bool{b.Precopy, b.PrecopyFirst}, mode)
		assert.Equal(t, [2]int{1, 0}, [2]int{f.inPush, f.inPrecopy}, mode)
		want := []string{"precopy@a1", "script:quiesce:a1@a1", "push@a1", "script:resume:a1@a1", "pull@b1"}
		if mode == "never" {
			want = want[1:]
			assert.Nil(t, st.Precopy)
		} else {
			require.NotNil(t, st.Precopy, mode)
			assert.Equal(t, Precopy{Agent: "a1", Bytes: 10, Files: 2, Reused: 1}, *st.Precopy, mode)
		}
		assert.Equal(t, want, f.serial(), mode)
	}

	// Runs recorded before it ran the preflight and the precopy as steps of their own.
	f := &fakeAgents{fail: func(string, string) error { return nil }, plan: func(p *activities.Plan) { p.Precopy = "auto" }}
	_, err := runWorkflowWith(t, f, ReplicationInput{Job: "orders"}, func(env *testsuite.TestWorkflowEnvironment) {
		recordedBefore(env)
		env.OnGetVersion("precopy-in-push", workflow.DefaultVersion, 1).Return(workflow.DefaultVersion)
	})
	require.NoError(t, err)
	assert.Equal(t, [2]int{0, 1}, [2]int{f.inPush, f.inPrecopy})
	require.Len(t, f.pushes, 1)
	assert.Nil(t, f.pushes[0].Before)
}

// A push that quiesced nothing (its error is marked NotQuiesced) is sent again whole on the
// same agent, preflight included, and leaves nothing to resume while it fails.
func TestPushNotQuiescedIsSentAgainWhole(t *testing.T) {
	f := &fakeAgents{plan: func(p *activities.Plan) { p.Precopy = "auto" }}
	failed := false
	f.fail = func(kind, agent string) error {
		if kind == "preflight" && !failed {
			failed = true
			return errors.New("disk busy")
		}
		return nil
	}
	st, err := runWorkflow(t, f)
	require.NoError(t, err)
	assert.Equal(t, 2, f.inPush, "the preflight went with both attempts")
	assert.Equal(t, []string{"precopy@a1", "script:quiesce:a1@a1", "push@a1", "script:resume:a1@a1", "pull@b1"}, f.serial())
	assert.Empty(t, st.Takeovers)
	require.Len(t, f.pushes, 1)
	assert.NotNil(t, f.pushes[0].Before)
}

// A refusal before the script (here the storage, in the precopy part) fails the run with no
// resume: the host was never quiesced.
func TestRefusalBeforeTheScriptResumesNothing(t *testing.T) {
	f := &fakeAgents{plan: func(p *activities.Plan) { p.Precopy = "always" }}
	f.fail = failOn("precopy", "", temporal.NewNonRetryableApplicationError("no space left on device", activities.ErrTypeStorageFault, nil))
	st, err := runWorkflow(t, f)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no space left on device")
	assert.NotContains(t, err.Error(), "LEFT QUIESCED")
	assert.Equal(t, []string{"precopy@a1"}, f.serial(), "no script, no resume")
	assert.Empty(t, st.QuiescedHost)
	assert.Empty(t, st.Takeovers)
	assert.Equal(t, PhaseFailed, st.Phase)
}

// An agent lost before its heartbeat said quiesce may not have finished the preflight: the
// agent taking over runs it before it quiesces. Lost once it said quiesce, it had.
func TestLostInThePushBeforeTheScript(t *testing.T) {
	f := &fakeAgents{plan: func(p *activities.Plan) { p.Precopy = "never" }}
	f.fail = failOn("preflight", "a1", temporal.NewTimeoutError(enums.TIMEOUT_TYPE_HEARTBEAT, nil))
	st, err := runWorkflow(t, f)
	require.NoError(t, err)
	require.Len(t, f.preflights, 2)
	assert.Equal(t, "a2", f.preflights[1].Agent, "a preflight step of its own on the taker")
	assert.Equal(t, 1, f.inPush)
	assert.Equal(t, []string{"script:takeover:a1@a2", "script:quiesce:a1@a2", "push@a2", "script:resume:a1@a2", "pull@b1"}, f.serial())
	assert.Equal(t, []string{"application", "quiesce", "a1", "a2"}, []string{st.Takeovers[0].Role, string(st.Takeovers[0].Step), st.Takeovers[0].From, st.Takeovers[0].To})
	assert.Equal(t, PhaseCompleted, st.Phase)

	f = &fakeAgents{plan: func(p *activities.Plan) { p.Precopy = "never" }}
	f.fail = failOn("script:quiesce", "a1", temporal.NewTimeoutError(enums.TIMEOUT_TYPE_HEARTBEAT, nil))
	_, err = runWorkflow(t, f)
	require.NoError(t, err)
	assert.Len(t, f.preflights, 1, "the heartbeat said quiesce: the preflight was done")
	assert.Equal(t, []string{"script:quiesce:a1@a1", "script:takeover:a1@a2", "script:quiesce:a1@a2", "push@a2", "script:resume:a1@a2", "pull@b1"}, f.serial())
}
