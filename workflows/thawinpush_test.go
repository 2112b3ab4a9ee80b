package workflows

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"

	"github.com/replctl/replctl/activities"
)

// resumes counts the resume scripts a run's calls made, on any host and agent.
func (f *fakeAgents) resumes() int {
	n := 0
	for _, c := range f.serial() {
		if strings.HasPrefix(c, "script:resume:") {
			n++
		}
	}
	return n
}

// One agent is the application's and the source's: the resume script travels in the push
// that quiesced, and no resume step follows.
func TestResumeTravelsInThePush(t *testing.T) {
	f := &fakeAgents{fail: func(string, string) error { return nil }}
	st, err := runWorkflow(t, f)
	require.NoError(t, err)
	assert.Equal(t, []string{"script:quiesce:a1@a1", "push@a1", "script:resume:a1@a1", "pull@b1"}, f.serial())
	require.Len(t, f.pushes, 1)
	th := f.pushes[0].Thaw
	require.NotNil(t, th, "the push carries the resume")
	want := *f.pushes[0].Quiesce
	want.Step, want.Script = activities.StepResume, "thaw.sh"
	assert.Equal(t, want, *th, "the quiesce's job, run, agent and host")
	assert.Equal(t, [2]int{1, 1}, [2]int{f.thaws, f.resumes()}, "the thaw in the push, and no resume step")
	assert.Empty(t, st.QuiescedHost)
	assert.Equal(t, PhaseCompleted, st.Phase)
	var steps []activities.Step
	for _, s := range st.Scripts {
		steps = append(steps, s.Step)
	}
	assert.Equal(t, []activities.Step{activities.StepQuiesce, activities.StepResume}, steps)

	// Runs recorded before it resumed in a step of their own.
	f = &fakeAgents{fail: func(string, string) error { return nil }}
	_, err = runWorkflowWith(t, f, ReplicationInput{Job: "orders"}, thawApart)
	require.NoError(t, err)
	require.Len(t, f.pushes, 1)
	assert.Nil(t, f.pushes[0].Thaw)
	assert.Equal(t, [2]int{0, 1}, [2]int{f.thaws, f.resumes()})

	// A job without a resume script sends none.
	f = &fakeAgents{fail: func(string, string) error { return nil }, plan: func(p *activities.Plan) { p.Application.Resume = "" }}
	_, err = runWorkflow(t, f)
	require.NoError(t, err)
	require.Len(t, f.pushes, 1)
	assert.Nil(t, f.pushes[0].Thaw)
}

// A thaw that failed in the push is run again as a resume step; a push that failed thaws
// nothing, and the resume step follows as before.
func TestThawFailedInThePushResumesAsAStep(t *testing.T) {
	f := &fakeAgents{}
	tries := 0
	f.fail = func(kind, agent string) error {
		if kind == "script:resume" {
			if tries++; tries == 1 {
				return temporal.NewNonRetryableApplicationError("resume script thaw.sh exited 1", activities.ErrTypeScriptFailed, nil)
			}
		}
		return nil
	}
	st, err := runWorkflow(t, f)
	require.NoError(t, err)
	assert.Equal(t, []string{"script:quiesce:a1@a1", "push@a1", "script:resume:a1@a1", "script:resume:a1@a1", "pull@b1"}, f.serial())
	assert.Equal(t, [2]int{1, 2}, [2]int{f.thaws, f.resumes()})
	assert.Empty(t, st.QuiescedHost)
	assert.Empty(t, st.Takeovers)
	assert.Contains(t, st.Notes, "the resume in the push failed, so it runs as a step of its own: resume script thaw.sh exited 1")

	f = &fakeAgents{}
	f.fail = failOn("push", "a1", temporal.NewNonRetryableApplicationError("repository: no space left on device", activities.ErrTypeStorageFault, nil))
	st, err = runWorkflow(t, f)
	require.Error(t, err)
	assert.Equal(t, []string{"script:quiesce:a1@a1", "push@a1", "script:resume:a1@a1"}, f.serial())
	assert.Equal(t, [2]int{0, 1}, [2]int{f.thaws, f.resumes()})
	assert.Empty(t, st.QuiescedHost)
}

// An agent lost while it thawed had made the image (its heartbeat carried the push's
// result): the push is not made again, and the next application agent runs the lost host's
// takeover script, then the resume.
func TestLostWhileThawing(t *testing.T) {
	f := &fakeAgents{}
	f.fail = failOn("script:resume", "a1", temporal.NewTimeoutError(enums.TIMEOUT_TYPE_HEARTBEAT, nil))
	st, err := runWorkflow(t, f)
	require.NoError(t, err)
	assert.Equal(t, []string{"script:quiesce:a1@a1", "push@a1", "script:resume:a1@a1", "script:takeover:a1@a2", "script:resume:a1@a2", "pull@b1"}, f.serial())
	assert.Len(t, f.pushes, 1, "the image stands")
	assert.Equal(t, "img-1", st.Image)
	require.Len(t, st.Takeovers, 1)
	assert.Equal(t, []string{RoleApplication, string(activities.StepResume), "a1", "a2"},
		[]string{st.Takeovers[0].Role, string(st.Takeovers[0].Step), st.Takeovers[0].From, st.Takeovers[0].To})
	assert.Contains(t, st.Takeovers[0].Reason, "heartbeat timeout")
	assert.Empty(t, st.QuiescedHost)
	assert.Equal(t, PhaseCompleted, st.Phase)

	// With no other application agent, the resume goes to the lost one again.
	f = &fakeAgents{plan: func(p *activities.Plan) { p.Order.Application = []string{"a1"} }}
	lost := false
	f.fail = func(kind, agent string) error {
		if kind == "script:resume" && !lost {
			lost = true
			return temporal.NewTimeoutError(enums.TIMEOUT_TYPE_HEARTBEAT, nil)
		}
		return nil
	}
	st, err = runWorkflow(t, f)
	require.NoError(t, err)
	assert.Equal(t, []string{"script:quiesce:a1@a1", "push@a1", "script:resume:a1@a1", "script:resume:a1@a1", "pull@b1"}, f.serial())
	assert.Empty(t, st.Takeovers)
	assert.Empty(t, st.QuiescedHost)
}
