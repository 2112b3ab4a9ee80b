package workflows

import (
	"context"
	"errors"
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
