package workflows

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"

	"github.com/replctl/replctl/activities"
)

func groupPlan(p *activities.Plan) {
	p.Source = activities.Endpoint{Storage: "a", Dataset: "orders/db", Datasets: []string{"orders/db", "orders/logs"}}
	p.Target = activities.Endpoint{Storage: "b", Dataset: "dr/db", Datasets: []string{"dr/db", "dr/logs"}}
}

// A group: one quiesce, every dataset pushed while quiesced, one resume, then each
// dataset pulled with its publish deferred and ONE publish step for the group.
func TestGroupIsQuiescedImagedAndPublishedTogether(t *testing.T) {
	f := &fakeAgents{fail: func(string, string) error { return nil }, plan: groupPlan}
	st, err := runWorkflow(t, f)
	require.NoError(t, err)
	assert.Equal(t, []string{"script:quiesce:a1@a1", "push@a1", "push@a1", "script:resume:a1@a1", "pull@b1", "pull@b1", "publish@b1"}, f.serial())
	require.Len(t, f.pushes, 2)
	assert.Equal(t, []string{"/a/orders/db", "/a/orders/logs"}, []string{f.pushes[0].SourceDir, f.pushes[1].SourceDir})
	require.Len(t, f.pulls, 2)
	for i, ds := range []string{"db", "logs"} {
		assert.True(t, f.pulls[i].Defer, "a group's pulls leave publishing to the group step")
		assert.Equal(t, "dr/"+ds, f.pulls[i].Dataset)
		assert.Equal(t, "orders/"+ds, f.pulls[i].SourceDataset)
		assert.Equal(t, "img-orders/"+ds, f.pulls[i].ImageID)
	}
	assert.Equal(t, f.pulls[0].ReplicaName, f.pulls[1].ReplicaName, "one replica name for the whole group")
	assert.Equal(t, []string{"img-orders/db", "img-orders/logs"}, st.Images)
	require.Len(t, st.Targets, 1)
	assert.Equal(t, TargetCompleted, st.Targets[0].Phase)
	assert.Len(t, st.Targets[0].Replicas, 2)
	assert.Equal(t, "/b/.replctl/groups/orders/current", st.Targets[0].Group)
}

// The publish step's agent dies: the next agent of the target order pulls (finding the
// built replicas) and publishes the group; its pull resumes the dataset it was on.
func TestGroupPublishTakeover(t *testing.T) {
	f := &fakeAgents{plan: groupPlan}
	f.fail = failOn("publish", "b1", temporal.NewTimeoutError(enums.TIMEOUT_TYPE_HEARTBEAT, nil, activities.Progress{Step: "publish"}))
	st, err := runWorkflow(t, f)
	require.NoError(t, err)
	assert.Equal(t, []string{"script:quiesce:a1@a1", "push@a1", "push@a1", "script:resume:a1@a1",
		"pull@b1", "pull@b1", "publish@b1", "script:takeover:b1@b2", "pull@b2", "pull@b2", "publish@b2"}, f.serial())
	require.Len(t, st.Takeovers, 1)
	assert.Equal(t, activities.StepPull, st.Takeovers[0].Step, "the group publish is part of the target's pull step")
	assert.Equal(t, "b1", st.Takeovers[0].From)
	assert.Equal(t, "b2", st.Targets[0].Agent)
	assert.Empty(t, f.pulls[2].ResumeFrom, "a publish heartbeat is no pull cursor")
}

// A failed publish fails the run and the target; nothing is reported as published.
func TestGroupPublishRefusedFailsTheTarget(t *testing.T) {
	f := &fakeAgents{plan: groupPlan}
	f.fail = failOn("publish", "", temporal.NewNonRetryableApplicationError("fenced: newer epoch", activities.ErrTypeFenced, nil))
	st, err := runWorkflow(t, f)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "fenced: newer epoch")
	assert.Equal(t, TargetFailed, st.Targets[0].Phase)
	assert.Nil(t, st.Replica)
	assert.Equal(t, PhaseFailed, st.Phase)
}

// pullTo returns the first pull sent to agent.
func (f *fakeAgents) pullTo(agent string) activities.PullInput {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if len(c) > 5 && c[:5] == "pull@" {
			if c[5:] == agent {
				return f.pulls[n]
			}
			n++
		}
	}
	return activities.PullInput{}
}

func fanOutPlan(p *activities.Plan) {
	p.Targets = []activities.TargetPlan{
		{Endpoint: activities.Endpoint{Storage: "b", Dataset: "orders"}, Order: []string{"b1", "b2"}},
		{Endpoint: activities.Endpoint{Storage: "c", Dataset: "orders-copy"}, Order: []string{"c1"}},
	}
}

// Fan-out: each target gets its own pull on its own order; one push serves both.
func TestFanOutPullsEveryTarget(t *testing.T) {
	f := &fakeAgents{fail: func(string, string) error { return nil }, plan: fanOutPlan}
	st, err := runWorkflow(t, f)
	require.NoError(t, err)
	assert.Equal(t, []string{"script:quiesce:a1@a1", "push@a1", "script:resume:a1@a1"}, f.serial()[:3])
	assert.ElementsMatch(t, []string{"pull@b1", "pull@c1"}, f.serial()[3:])
	require.Len(t, st.Targets, 2)
	for i, want := range []string{"b", "c"} {
		assert.Equal(t, want, st.Targets[i].Storage)
		assert.Equal(t, TargetCompleted, st.Targets[i].Phase)
		require.Len(t, st.Targets[i].Replicas, 1)
	}
	assert.Equal(t, "orders-copy", st.Targets[1].Replicas[0].Dataset)
	assert.Equal(t, "/c", f.pullTo("c1").TargetRoot)
}

// One target failing (here: its only agent is lost) fails the run, but the other target
// still takes over along its own order and publishes.
func TestFanOutFailedTargetDoesNotStopTheOthers(t *testing.T) {
	f := &fakeAgents{plan: fanOutPlan}
	f.fail = func(kind, agent string) error {
		if kind == "pull" && (agent == "c1" || agent == "b1") {
			return temporal.NewTimeoutError(enums.TIMEOUT_TYPE_SCHEDULE_TO_START, nil)
		}
		return nil
	}
	st, err := runWorkflow(t, f)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "1 of 2 targets failed (1 published): target c: pull failed on every target agent in order [c1]")
	assert.Equal(t, TargetCompleted, st.Targets[0].Phase)
	assert.Equal(t, "b2", st.Targets[0].Agent)
	assert.Equal(t, TargetFailed, st.Targets[1].Phase)
	assert.Contains(t, st.Targets[1].Error, "c1: schedule-to-start timeout")
	var targets []string
	for _, to := range st.Takeovers {
		targets = append(targets, to.Target)
	}
	assert.ElementsMatch(t, []string{"b", "c"}, targets, "takeovers name their target")
}
