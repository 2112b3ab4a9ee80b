package workflows

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/replctl/replctl/activities"
)

// readAhead is a plan edit: the job says read_ahead (then plan, if set).
func readAhead(plan func(*activities.Plan)) func(*activities.Plan) {
	return func(p *activities.Plan) {
		p.ReadAhead = true
		if plan != nil {
			plan(p)
		}
	}
}

// A job with read_ahead asks the first agent of each target's order to read its replicas
// ahead of the pull, with the root it mounts and the datasets it will pull, beside the push;
// a job without it asks nothing.
func TestRunWarmsEachTargetBesideThePush(t *testing.T) {
	for _, tc := range []struct {
		name string
		plan func(*activities.Plan)
		want []activities.WarmInput
	}{
		{"read_ahead off", func(*activities.Plan) {}, nil},
		{"one target", readAhead(nil), []activities.WarmInput{{Job: "orders", Agent: "b1", TargetRoot: "/b", Datasets: []string{"orders"}}}},
		{"a group", readAhead(groupPlan), []activities.WarmInput{{Job: "orders", Agent: "b1", TargetRoot: "/b", Datasets: []string{"dr/db", "dr/logs"}}}},
		{"fan-out", readAhead(fanOutPlan), []activities.WarmInput{
			{Job: "orders", Agent: "b1", TargetRoot: "/b", Datasets: []string{"orders"}},
			{Job: "orders", Agent: "c1", TargetRoot: "/c", Datasets: []string{"orders-copy"}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeAgents{fail: func(string, string) error { return nil }, plan: tc.plan, awaitWarms: len(tc.want)}
			st, err := runWorkflow(t, f)
			require.NoError(t, err)
			assert.Equal(t, PhaseCompleted, st.Phase)
			got := f.warmed()
			for i := range got {
				got[i].RunID = ""
			}
			if tc.want == nil {
				assert.Empty(t, got)
				return
			}
			assert.ElementsMatch(t, tc.want, got)
		})
	}
}

// Nothing depends on the warm: a failed one, or one whose agent is down, changes nothing in
// the run's steps.
func TestFailedWarmChangesNothing(t *testing.T) {
	ok := &fakeAgents{fail: func(string, string) error { return nil }, plan: readAhead(nil)}
	_, err := runWorkflow(t, ok)
	require.NoError(t, err)

	f := &fakeAgents{awaitWarms: 1, plan: readAhead(nil), fail: func(kind, _ string) error {
		if kind == "warm" {
			return errors.New("disk on fire")
		}
		return nil
	}}
	st, err := runWorkflow(t, f)
	require.NoError(t, err)
	assert.Equal(t, PhaseCompleted, st.Phase)
	assert.Len(t, f.warmed(), 1)
	assert.Equal(t, ok.serial(), f.serial())
}

// A run recorded with the first baseline, before warms existed, reads no target ahead (its
// history has no such activity).
func TestNoWarmBeforeItsBaseline(t *testing.T) {
	f := &fakeAgents{fail: func(string, string) error { return nil }, awaitWarms: 1, plan: readAhead(nil)}
	_, err := runWorkflowWith(t, f, ReplicationInput{Job: "orders"}, func(env *testsuite.TestWorkflowEnvironment) {
		env.OnGetVersion(baselineChange, workflow.DefaultVersion, baselineVersion).Return(workflow.Version(1))
	})
	require.NoError(t, err)
	assert.Empty(t, f.warmed())
}
