package workers

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/replctl/replctl/activities"
)

// Starting the drain cancels the data steps in flight with errShuttingDown and refuses new
// ones; steps that ended are forgotten.
func TestDrainCancelsInFlightAndRefusesNew(t *testing.T) {
	d := &drain{host: "a1"}
	ended, done, ok := d.track(context.Background())
	require.True(t, ok)
	done()
	running, _, ok := d.track(context.Background())
	require.True(t, ok)
	assert.Len(t, d.running, 1, "the ended step is forgotten")
	assert.False(t, d.draining())

	d.start()
	assert.True(t, d.draining())
	require.ErrorIs(t, context.Cause(running), errShuttingDown)
	assert.False(t, errors.Is(context.Cause(ended), errShuttingDown), "the ended step was not cut short")
	_, _, ok = d.track(context.Background())
	assert.False(t, ok, "a draining agent takes no new data step")
}

// The refusal is retryable, says why, and keeps the step's last progress for the next agent.
func TestDrainRefusalKeepsProgress(t *testing.T) {
	d := &drain{host: "a1"}
	p := activities.Progress{Step: "pull", Staging: ".replctl/staging/x", BytesDone: 42}
	err := d.refusal("Pull", temporal.NewApplicationError("pull: context canceled", "StepFailed", p))
	var appErr *temporal.ApplicationError
	require.ErrorAs(t, err, &appErr)
	assert.Equal(t, activities.ErrTypeShuttingDown, appErr.Type())
	assert.False(t, appErr.NonRetryable(), "the workflow retries, then takes over")
	assert.Contains(t, appErr.Error(), "Pull on agent a1: agent shutting down")
	var got activities.Progress
	require.NoError(t, appErr.Details(&got))
	assert.Equal(t, p, got)

	require.ErrorAs(t, d.refusal("Push", nil), &appErr)
	assert.False(t, appErr.HasDetails(), "no progress to carry")
}

func TestIsQuiesce(t *testing.T) {
	assert.True(t, isQuiesce([]any{activities.ScriptInput{Step: "quiesce"}}))
	assert.True(t, isQuiesce([]any{&activities.ScriptInput{Step: "quiesce"}}))
	assert.False(t, isQuiesce([]any{activities.ScriptInput{Step: "resume"}}), "a stopping agent still resumes")
	assert.False(t, isQuiesce([]any{(*activities.ScriptInput)(nil)}))
	assert.False(t, isQuiesce(nil))
}

// A push that carries the quiesce is refused as that quiesce when its script had not
// finished (refused before it ran, or cut short in the script); cut short in its push part,
// it is refused as the push, with the push's progress for the next agent.
func TestDrainRefusalOfAPushCarryingTheQuiesce(t *testing.T) {
	d := &drain{host: "a1"}
	q := &activities.ScriptInput{Step: activities.StepQuiesce, Agent: "a1", Host: activities.HostPlan{Name: "a1"}, Script: "freeze.sh"}
	args := []any{activities.PushInput{Job: "orders", Agent: "a1", Quiesce: q}}
	quiescePart := func(err error) bool {
		_, ok := activities.QuiescePart(err)
		return ok
	}

	refused := d.refusalOf(activities.PushName, args, nil)
	assert.True(t, quiescePart(refused), "refused before the script ran: %v", refused)
	assert.Contains(t, refused.Error(), "quiesce on agent a1: agent shutting down")

	inScript := activities.QuiescePartError(temporal.NewApplicationError("quiesce: signal: killed", "StepFailed"), activities.ScriptResult{Script: "freeze.sh"})
	cut := d.refusalOf(activities.PushName, args, inScript)
	assert.True(t, quiescePart(cut), "cut short in the script: %v", cut)
	var appErr *temporal.ApplicationError
	require.ErrorAs(t, cut, &appErr)
	assert.Equal(t, activities.ErrTypeShuttingDown, appErr.Type())
	assert.False(t, appErr.NonRetryable())

	p := activities.Progress{Step: activities.StepPush, FilesDone: 9}
	inPush := d.refusalOf(activities.PushName, args, temporal.NewApplicationError("push: context canceled", "StepFailed", p))
	assert.False(t, quiescePart(inPush), "cut short in the push part: %v", inPush)
	require.ErrorAs(t, inPush, &appErr)
	var got activities.Progress
	require.NoError(t, appErr.Details(&got))
	assert.Equal(t, p, got)

	plain := d.refusalOf(activities.PushName, []any{activities.PushInput{Job: "orders"}}, nil)
	assert.False(t, quiescePart(plain), "a push without the quiesce is refused as a push")
}

// A push that also carries the preflight and the precopy quiesced nothing when it is refused
// or cut short before its script: the refusal says so (NotQuiesced), so the run resumes
// nothing; cut short in its script, it is the quiesce's as before.
func TestDrainRefusalOfAPushCarryingThePrecopy(t *testing.T) {
	d := &drain{host: "a1"}
	q := &activities.ScriptInput{Step: activities.StepQuiesce, Agent: "a1", Host: activities.HostPlan{Name: "a1"}, Script: "freeze.sh"}
	args := []any{activities.PushInput{Job: "orders", Agent: "a1", Quiesce: q, Before: &activities.BeforeQuiesce{Precopy: true}}}

	refused := d.refusalOf(activities.PushName, args, nil)
	part, ok := activities.NotQuiescedPart(refused)
	assert.True(t, ok, "refused before anything ran: %v", refused)
	assert.Equal(t, activities.StepPreflight, part)
	_, ok = activities.QuiescePart(refused)
	assert.False(t, ok)

	inPrecopy := activities.NotQuiescedError(temporal.NewApplicationError("precopy: context canceled", "StepFailed"), activities.StepPrecopy)
	cut := d.refusalOf(activities.PushName, args, inPrecopy)
	part, ok = activities.NotQuiescedPart(cut)
	assert.True(t, ok, "cut short in the precopy: %v", cut)
	assert.Equal(t, activities.StepPrecopy, part)
	var appErr *temporal.ApplicationError
	require.ErrorAs(t, cut, &appErr)
	assert.Equal(t, activities.ErrTypeShuttingDown, appErr.Type())
	assert.Contains(t, cut.Error(), "precopy on agent a1: agent shutting down")

	inScript := activities.QuiescePartError(temporal.NewApplicationError("quiesce: signal: killed", "StepFailed"), activities.ScriptResult{Script: "freeze.sh"})
	_, ok = activities.QuiescePart(d.refusalOf(activities.PushName, args, inScript))
	assert.True(t, ok, "cut short in the script: the quiesce's")
}
