package activities

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
)

// A push that carries a quiesce is refused before the script runs unless the script step is
// a quiesce of the same job, run and agent that the agent's own config names, and the push
// itself passes; every such refusal is marked as the quiesce part's, so the workflow knows
// the script did not run to an end.
func TestQuiesceInPushRefusedFirst(t *testing.T) {
	ctx := context.Background()
	a, p, push := samplePush(t)
	push.RunID = "r1"
	host, err := p.Host(p.Application.Host)
	require.NoError(t, err)
	// (That no script runs is shown with a real agent: TestHostileWorkflowIsRefused.)
	foreign := t.TempDir()
	good := func() PushInput {
		in := push
		in.Quiesce = &ScriptInput{Job: "orders", RunID: "r1", Step: StepQuiesce, Agent: "a1", Host: host, Script: p.Application.Quiesce, SourcePath: push.SourceDir, Timeout: 5 * time.Second}
		return in
	}
	for name, c := range map[string]struct {
		mutate func(*PushInput)
		want   string
		typ    string
	}{
		"another run's quiesce":   {func(in *PushInput) { in.Quiesce.RunID = "r2" }, `run "r2"`, ErrTypeBadInput},
		"another job's quiesce":   {func(in *PushInput) { in.Quiesce.Job = "payroll" }, `job "payroll"`, ErrTypeBadInput},
		"a resume, not a quiesce": {func(in *PushInput) { in.Quiesce.Step = StepResume }, `"resume" script step`, ErrTypeBadInput},
		"with a resume cursor":    {func(in *PushInput) { in.Resume = &Progress{Step: StepPush} }, "with a resume cursor", ErrTypeBadInput},
		"a script the job lacks":  {func(in *PushInput) { in.Quiesce.Script = "evil.sh" }, `"evil.sh"`, ErrTypeRefused},
		"a foreign source dir":    {func(in *PushInput) { in.SourceDir = foreign }, "SourceDir", ErrTypeRefused},
		"a foreign repository":    {func(in *PushInput) { in.Repo.Dir = foreign }, "Repo.Dir", ErrTypeRefused},
		"sent to another agent":   {func(in *PushInput) { in.Agent, in.Quiesce.Agent = "a2", "a2" }, `reached agent "a1"`, ErrTypeMisrouted},
	} {
		t.Run(name, func(t *testing.T) {
			in := good()
			c.mutate(&in)
			_, err := a.Push(ctx, in)
			require.Error(t, err)
			var appErr *temporal.ApplicationError
			require.ErrorAs(t, err, &appErr)
			assert.Equal(t, c.typ, appErr.Type())
			assert.True(t, appErr.NonRetryable())
			assert.Contains(t, appErr.Error(), c.want)
			res, ok := QuiescePart(err)
			assert.True(t, ok, "marked as the quiesce part's: %v", err)
			assert.Equal(t, StepQuiesce, res.Step)
		})
	}
}

// In the activity that made an error its details are Go values: a details type that is not
// the one asked for is a "no", not the SDK's reflection panic.
func TestErrorDetailsOfAnotherType(t *testing.T) {
	withProgress := temporal.NewApplicationError("push: x", "StepFailed", Progress{Step: StepPush})
	var res ScriptResult
	assert.False(t, ErrorDetails(withProgress, &res))
	var p Progress
	assert.True(t, ErrorDetails(withProgress, &p))
	assert.Equal(t, StepPush, p.Step)
	_, ok := QuiescePart(withProgress)
	assert.False(t, ok)
	assert.False(t, ErrorDetails(temporal.NewApplicationError("no details", "StepFailed"), &p))
	assert.False(t, ErrorDetails(nil, &p))
}
