package workflows

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/replctl/replctl/activities"
)

func (f *fakeAgents) Preflight(ctx context.Context, in activities.PreflightInput) (activities.PreflightResult, error) {
	agent := agentOf(ctx)
	f.mu.Lock()
	f.preflights = append(f.preflights, in)
	f.mu.Unlock()
	if err := f.fail("preflight", agent); err != nil {
		return activities.PreflightResult{}, err
	}
	return activities.PreflightResult{Agent: agent, SourceDirs: in.SourceDirs}, nil
}

// The preflight runs on the source agent before anything else, with the source datasets as
// that agent sees them.
func TestPreflightRunsFirstOnSourceAgent(t *testing.T) {
	f := &fakeAgents{fail: func(string, string) error { return nil }}
	_, err := runWorkflow(t, f)
	require.NoError(t, err)
	require.Len(t, f.preflights, 1)
	assert.Equal(t, activities.PreflightInput{Job: "orders", RunID: f.preflights[0].RunID, Agent: "a1", Storage: "a",
		Datasets: []string{"orders"}, SourceDirs: []string{"/a/orders"}}, f.preflights[0])
	assert.NotEmpty(t, f.preflights[0].RunID)
}

// A refused preflight ends the run before any script, precopy or push: nothing was quiesced.
func TestPreflightRefusalStopsBeforeQuiesce(t *testing.T) {
	f := &fakeAgents{fail: func(kind, agent string) error {
		if kind == "preflight" {
			return temporal.NewNonRetryableApplicationError("source dataset orders at /a/orders: /a/orders is a symlink", activities.ErrTypeBadInput, nil)
		}
		return nil
	}}
	f.plan = func(p *activities.Plan) { p.Precopy = "always" }
	st, err := runWorkflow(t, f)
	require.Error(t, err)
	var appErr *temporal.ApplicationError
	require.True(t, errors.As(err, &appErr))
	assert.Equal(t, activities.ErrTypeBadInput, appErr.Type())
	assert.Contains(t, err.Error(), "/a/orders is a symlink")
	assert.Empty(t, f.calls, "no script, precopy, push or pull ran")
	assert.Len(t, f.preflights, 1, "not retried on another agent")
	assert.Equal(t, PhaseFailed, st.Phase)
	assert.Empty(t, st.QuiescedHost)
}

// A lost source agent is taken over for the preflight like for any step, and the taker
// runs the rest of the source role.
func TestPreflightTakesOverLostAgent(t *testing.T) {
	f := &fakeAgents{fail: func(kind, agent string) error {
		if kind == "preflight" && agent == "a1" {
			return errors.New("disk busy")
		}
		return nil
	}}
	st, err := runWorkflow(t, f)
	require.NoError(t, err)
	require.Len(t, f.preflights, 4, "three attempts on a1, then a2")
	assert.Equal(t, "a2", f.preflights[3].Agent)
	assert.Equal(t, "a2", st.Agents.Source)
	assert.Contains(t, f.calls, "push@a2")
}

// apart gives the application another agent than the source (a2, on host a1 over SSH):
// the preflight and the precopy are then steps of their own, not parts of the push.
func apart(p *activities.Plan) { p.Order.Application = []string{"a2", "a1"} }

// With a precopy, its first activity does the preflight: one step less before quiesce. Where
// one agent is the application's and the source's, the push carrying the quiesce does both.
func TestPrecopyCarriesThePreflight(t *testing.T) {
	f := &fakeAgents{fail: func(string, string) error { return nil }}
	f.plan = func(p *activities.Plan) { p.Precopy = "always"; apart(p) }
	_, err := runWorkflow(t, f)
	require.NoError(t, err)
	require.Len(t, f.preflights, 1)
	assert.Equal(t, 1, f.inPrecopy, "no preflight step of its own")
	assert.Equal(t, activities.PreflightInput{Job: "orders", RunID: f.preflights[0].RunID, Agent: "a1", Storage: "a",
		Datasets: []string{"orders"}, SourceDirs: []string{"/a/orders"}}, f.preflights[0])
	assert.Equal(t, []string{"precopy@a1", "script:quiesce:a1@a2", "push@a1", "script:resume:a1@a2", "pull@b1"}, f.serial())

	f = &fakeAgents{fail: func(string, string) error { return nil }}
	f.plan = func(p *activities.Plan) { p.Precopy = "always" }
	_, err = runWorkflow(t, f)
	require.NoError(t, err)
	require.Len(t, f.preflights, 1)
	assert.Equal(t, [2]int{0, 1}, [2]int{f.inPrecopy, f.inPush}, "in the push, no step of its own")
	assert.Equal(t, activities.PreflightInput{Job: "orders", RunID: f.preflights[0].RunID, Agent: "a1", Storage: "a",
		Datasets: []string{"orders"}, SourceDirs: []string{"/a/orders"}}, f.preflights[0])
	assert.Equal(t, []string{"precopy@a1", "script:quiesce:a1@a1", "push@a1", "script:resume:a1@a1", "pull@b1"}, f.serial())
}

// A precopy that failed for another reason than the preflight's may have stopped before the
// preflight's end: the preflight runs on its own before anything is quiesced.
func TestFailedPrecopyRunsThePreflightBeforeQuiesce(t *testing.T) {
	f := &fakeAgents{}
	f.plan = func(p *activities.Plan) { p.Precopy = "always"; apart(p) }
	f.fail = failOn("precopy", "", temporal.NewNonRetryableApplicationError("repository busy", "Other", nil))
	st, err := runWorkflow(t, f)
	require.NoError(t, err)
	require.Len(t, f.preflights, 2)
	assert.Equal(t, 1, f.inPrecopy, "the precopy's, then a step of its own")
	assert.Equal(t, []string{"precopy@a1", "script:quiesce:a1@a2", "push@a1", "script:resume:a1@a2", "pull@b1"}, f.serial())
	assert.Contains(t, strings.Join(st.Notes, "\n"), "precopy failed")

	// And when that preflight refuses, nothing is quiesced.
	f = &fakeAgents{}
	f.plan = func(p *activities.Plan) { p.Precopy = "always"; apart(p) }
	f.fail = func(kind, agent string) error {
		switch {
		case kind == "precopy":
			return temporal.NewNonRetryableApplicationError("repository busy", "Other", nil)
		case kind == "preflight" && len(f.preflights) > 1:
			return temporal.NewNonRetryableApplicationError("source dataset orders is gone", activities.ErrTypeBadInput, nil)
		}
		return nil
	}
	_, err = runWorkflow(t, f)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "source dataset orders is gone")
	assert.Equal(t, []string{"precopy@a1"}, f.serial())
}
