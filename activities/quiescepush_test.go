package activities

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/replctl/replctl/config"
)

// A push that carries a quiesce is refused before the script runs unless the script step is
// a quiesce of the same job, run and agent that the agent's own config names, and the push
// itself passes; every such refusal is marked as the quiesce part's, so the workflow knows
// the script did not run to an end.
func TestQuiesceInPushRefusedFirst(t *testing.T) {
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
		// The resume it would run once it pushed (thawinpush.go) is checked before the quiesce.
		"a thaw of another run":       {withThaw(func(t *ScriptInput) { t.RunID = "r2" }), `run "r2"`, ErrTypeBadInput},
		"a quiesce as its thaw":       {withThaw(func(t *ScriptInput) { t.Step = StepQuiesce }), `"quiesce" script step`, ErrTypeBadInput},
		"a thaw of another host":      {withThaw(func(t *ScriptInput) { t.Host.Name = "b1" }), `for host "b1"`, ErrTypeBadInput},
		"a thaw for another agent":    {withThaw(func(t *ScriptInput) { t.Agent = "a2" }), `agent "a2"`, ErrTypeBadInput},
		"a thaw script the job lacks": {withThaw(func(t *ScriptInput) { t.Script = "evil.sh" }), `"evil.sh"`, ErrTypeRefused},
	} {
		t.Run(name, func(t *testing.T) {
			in := good()
			c.mutate(&in)
			err := requirePushRefused(t, a, in, c.typ, c.want)
			res, ok := QuiescePart(err)
			assert.True(t, ok, "marked as the quiesce part's: %v", err)
			assert.Equal(t, StepQuiesce, res.Step)
		})
	}
}

// withThaw gives a push carrying the quiesce the job's resume of the same run, changed by
// mut.
func withThaw(mut func(*ScriptInput)) func(*PushInput) {
	return func(in *PushInput) {
		t := *in.Quiesce
		t.Step, t.Script = StepResume, "thaw.sh"
		mut(&t)
		in.Thaw = &t
	}
}

// billingPush is the push of job billing (config/samples/full.yaml: one dataset, agent
// east-db1 both the application's and the source's) the workflow would send in run r1.
// Its storage is not on this machine.
func billingPush(t *testing.T) (*Agent, Plan, PushInput) {
	t.Helper()
	const file = "../config/samples/full.yaml"
	t.Setenv("REPLCTL_STATE", t.TempDir())
	cfg, err := config.Load(file)
	require.NoError(t, err)
	p, err := NewPlan(cfg, "billing")
	require.NoError(t, err)
	src, err := p.DatasetDir("east-db1", p.Source.Storage, p.Source.Dataset)
	require.NoError(t, err)
	repo, err := p.Repo("east-db1")
	require.NoError(t, err)
	return &Agent{Host: "east-db1", ConfigFile: file}, p,
		PushInput{Job: "billing", RunID: "r1", Agent: "east-db1", SourceDir: src, Dataset: p.Source.Dataset, Repo: repo}
}

// requirePushRefused has a push in and asserts that it fails, final, as an application
// error of type typ whose message holds want; it returns the error.
func requirePushRefused(t *testing.T, a *Agent, in PushInput, typ, want string) error {
	t.Helper()
	_, err := a.Push(context.Background(), in)
	require.Error(t, err)
	var appErr *temporal.ApplicationError
	require.ErrorAs(t, err, &appErr)
	assert.Equal(t, typ, appErr.Type())
	assert.True(t, appErr.NonRetryable())
	assert.Contains(t, appErr.Error(), want)
	return err
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

// A push that also carries the preflight and the precopy is refused before anything runs
// unless its preflight is of the push's own job, run, agent and dataset, and passes the
// preflight's own checks; every error before the script is marked NotQuiesced (the workflow
// then resumes nothing), not as the quiesce part's.
func TestBeforeQuiesceRefusedFirst(t *testing.T) {
	a, p, push := billingPush(t)
	src := push.SourceDir
	host, err := p.Host(p.Application.Host)
	require.NoError(t, err)
	foreign := t.TempDir()
	good := func() PushInput {
		in := push
		in.Quiesce = &ScriptInput{Job: "billing", RunID: "r1", Step: StepQuiesce, Agent: "east-db1", Host: host, Script: p.Application.Quiesce, SourcePath: src, Timeout: 5 * time.Second}
		in.Before = &BeforeQuiesce{Preflight: PreflightInput{Job: "billing", RunID: "r1", Agent: "east-db1", Storage: p.Source.Storage,
			Datasets: []string{p.Source.Dataset}, SourceDirs: []string{src}}, Precopy: true}
		return in
	}
	for name, c := range map[string]struct {
		mutate func(*PushInput)
		want   string
		typ    string
		part   Step
	}{
		"another job's preflight": {func(in *PushInput) { in.Before.Preflight.Job = "payroll" }, `preflight of job "payroll"`, ErrTypeBadInput, StepPreflight},
		"another run's preflight": {func(in *PushInput) { in.Before.Preflight.RunID = "r2" }, `run "r2"`, ErrTypeBadInput, StepPreflight},
		"another agent's":         {func(in *PushInput) { in.Before.Preflight.Agent = "east-db2" }, `agent "east-db2"`, ErrTypeBadInput, StepPreflight},
		"a second dataset": {func(in *PushInput) {
			in.Before.Preflight.Datasets = append(in.Before.Preflight.Datasets, "db/other")
		}, "db/other", ErrTypeBadInput, StepPreflight},
		"a foreign preflight dir":  {func(in *PushInput) { in.Before.Preflight.SourceDirs = []string{foreign} }, foreign, ErrTypeBadInput, StepPreflight},
		"a foreign dir for both":   {func(in *PushInput) { in.SourceDir, in.Before.Preflight.SourceDirs = foreign, []string{foreign} }, "SourceDirs", ErrTypeRefused, StepPreflight},
		"another run's quiesce":    {func(in *PushInput) { in.Quiesce.RunID = "r2" }, `run "r2"`, ErrTypeBadInput, StepQuiesce},
		"with a resume cursor too": {func(in *PushInput) { in.Resume = &Progress{Step: StepPush} }, "with a resume cursor", ErrTypeBadInput, StepQuiesce},
		// The storage is not on this machine: the preflight's check on disk refuses.
		"as the workflow sends it": {func(*PushInput) {}, "storage check on agent east-db1 before quiesce (nothing was run)", ErrTypeBadInput, StepPreflight},
	} {
		t.Run(name, func(t *testing.T) {
			in := good()
			c.mutate(&in)
			err := requirePushRefused(t, a, in, c.typ, c.want)
			part, ok := NotQuiescedPart(err)
			assert.True(t, ok, "marked as met before the script: %v", err)
			assert.Equal(t, c.part, part)
			_, ok = QuiescePart(err)
			assert.False(t, ok, "not the quiesce part's")
		})
	}
}
