package workflows

import (
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/config"
)

// failbackInput is a confirmed failback of the test job.
func failbackInput() ReplicationInput {
	return ReplicationInput{Job: "orders", Direction: DirectionFailback, Confirm: "orders"}
}

// allowFailback makes the test plan allow failback, with the primary's check script.
func allowFailback(p *activities.Plan) {
	p.Application.Check = "stopped.sh"
	p.FailbackGuard = &activities.FailbackGuard{Allow: true, PrimaryStopped: config.PrimaryStoppedCheck}
}

// checkExit is the error of a check script that exited code.
func checkExit(code int) error {
	res := activities.ScriptResult{Step: "check", Host: "a1", Script: "stopped.sh", ExitCode: code}
	return temporal.NewNonRetryableApplicationError("check script stopped.sh on host a1 exited", activities.ErrTypeScriptFailed, nil, res)
}

func requireErrType(t *testing.T, err error, typ string) {
	t.Helper()
	var appErr *temporal.ApplicationError
	require.ErrorAs(t, err, &appErr)
	assert.Equal(t, typ, appErr.Type())
	assert.True(t, appErr.NonRetryable())
}

// Failback: the primary's check says stopped (before the push and again before the pull),
// the target side's application is quiesced, the target order pushes the target's replica
// (following the dataset link), the source order restores it in place.
func TestFailbackRunsTheJobBackwards(t *testing.T) {
	f := &fakeAgents{fail: func(string, string) error { return nil }}
	f.plan = func(p *activities.Plan) {
		allowFailback(p)
		p.Failback = &activities.Application{Host: "b1", Quiesce: "freeze.sh", Resume: "thaw.sh"}
	}
	st, err := runWorkflowInput(t, f, failbackInput())
	require.NoError(t, err)
	assert.Equal(t, []string{"script:check:a1@a1", "script:quiesce:b1@b1", "push@b1", "script:resume:b1@b1", "script:check:a1@a1", "pull@a1"}, f.serial())
	require.Len(t, f.pushes, 1)
	assert.True(t, f.pushes[0].FollowLink)
	assert.Equal(t, "/b/orders", f.pushes[0].SourceDir)
	require.Len(t, f.pulls, 1)
	assert.True(t, f.pulls[0].InPlace)
	assert.Equal(t, "/a", f.pulls[0].TargetRoot)
	assert.Equal(t, "orders", f.pulls[0].Dataset)
	assert.Zero(t, f.pulls[0].KeepImages, "failback leaves image retention to replication runs")
	assert.Equal(t, DirectionFailback, st.Direction)
	assert.Equal(t, "stopped: check script stopped.sh on host a1 exited 0", st.PrimaryCheck)
	var checks []string
	for _, s := range st.Scripts {
		if s.Step == "check" {
			checks = append(checks, s.Script+"@"+s.Host)
		}
	}
	assert.Equal(t, []string{"stopped.sh@a1", "stopped.sh@a1"}, checks, "both checks are in the run's script results")
}

// Bad failback input is refused before anything runs: no confirmation, a wrong one, the
// failback fields on a replication, a job that does not allow failback.
func TestFailbackBadInputIsNonRetryable(t *testing.T) {
	notAllowed := func(p *activities.Plan) { p.Application.Check = "stopped.sh" }
	allowFalse := func(p *activities.Plan) {
		allowFailback(p)
		p.FailbackGuard.Allow = false
	}
	for _, tc := range []struct {
		in   ReplicationInput
		plan func(*activities.Plan)
		want string
	}{
		{ReplicationInput{Job: "orders", Direction: "sideways"}, allowFailback, `direction "sideways"`},
		{ReplicationInput{Job: "orders", Direction: DirectionFailback, From: "zz", Confirm: "orders"}, allowFailback, `no target on storage "zz"`},
		{ReplicationInput{Job: "orders", From: "b"}, allowFailback, `"from" ("b") is only used with "direction": "failback"`},
		{ReplicationInput{Job: "orders", Direction: DirectionFailback}, allowFailback,
			`confirm it by typing the job's name, {"job": "orders", "direction": "failback", "confirm": "orders"} (got "confirm": "")`},
		{ReplicationInput{Job: "orders", Direction: DirectionFailback, Confirm: "yes"}, allowFailback, `(got "confirm": "yes")`},
		{ReplicationInput{Job: "orders", Confirm: "orders"}, allowFailback, `"confirm" and "primary_down" are only used with "direction": "failback"`},
		{ReplicationInput{Job: "orders", PrimaryDown: true}, allowFailback, `"primary_down": true)`},
		{failbackInput(), notAllowed, "job orders does not allow failback: set `failback: {allow: true}`"},
		{failbackInput(), allowFalse, "jobs[].failback.allow"},
		{failbackInput(), func(p *activities.Plan) { allowFailback(p); p.Application.Check = "" }, `job orders has no application.check script and failback.primary_stopped is not "operator"`},
	} {
		f := &fakeAgents{fail: func(string, string) error { return nil }, plan: tc.plan}
		_, err := runWorkflowInput(t, f, tc.in)
		require.Error(t, err)
		assert.Contains(t, err.Error(), tc.want)
		requireErrType(t, err, activities.ErrTypeBadInput)
		assert.Empty(t, f.serial(), "nothing ran")
	}
}

// The primary's check says running (exit 3) or something else: refused before the push,
// nothing replaced.
func TestFailbackRefusedUnlessPrimaryStopped(t *testing.T) {
	for _, tc := range []struct {
		code int
		typ  string
		want string
	}{
		{3, ErrTypePrimaryRunning, "the primary application is running on host a1 (check script stopped.sh exited 3): stop it before failing back; nothing was replaced"},
		{1, ErrTypePrimaryUnknown, "cannot tell whether the primary application on host a1 is stopped"},
	} {
		f := &fakeAgents{fail: failOn("script:check", "", checkExit(tc.code)), plan: allowFailback}
		st, err := runWorkflowInput(t, f, failbackInput())
		require.Error(t, err)
		assert.Contains(t, err.Error(), tc.want)
		requireErrType(t, err, tc.typ)
		assert.Equal(t, []string{"script:check:a1@a1"}, f.serial(), "no push, no pull")
		assert.Equal(t, PhaseFailed, st.Phase)
		assert.Equal(t, DirectionFailback, st.Direction, "a refused failback says it was one")
	}
}

// The application was started on the primary during the push: the check before the pull
// refuses the run, and the source is not replaced.
func TestFailbackRecheckBeforePull(t *testing.T) {
	var checks atomic.Int32
	f := &fakeAgents{plan: allowFailback, fail: func(kind, agent string) error {
		if kind == "script:check" && checks.Add(1) == 2 {
			return checkExit(3)
		}
		return nil
	}}
	_, err := runWorkflowInput(t, f, failbackInput())
	requireErrType(t, err, ErrTypePrimaryRunning)
	assert.Equal(t, []string{"script:check:a1@a1", "push@b1", "script:check:a1@a1"}, f.serial())
	assert.Empty(t, f.pulls)
}

// An unreachable primary refuses the run, naming the override; with "primary_down" the run
// goes on and says so. Every application agent lost counts as unreachable too: their check
// is taken over along order.application (the takeover script first) as quiesce is.
func TestFailbackUnreachablePrimary(t *testing.T) {
	unreachable := failOn("script:check", "", temporal.NewNonRetryableApplicationError("dial a1: connection refused", activities.ErrTypeHostUnreachable, nil))
	f := &fakeAgents{fail: unreachable, plan: allowFailback}
	_, err := runWorkflowInput(t, f, failbackInput())
	requireErrType(t, err, ErrTypePrimaryUnreachable)
	assert.Contains(t, err.Error(), "the primary application host a1 cannot be reached to check that its application is stopped (dial a1: connection refused); if the primary is down, start the failback with --primary-down")
	assert.Equal(t, []string{"script:check:a1@a1"}, f.serial())

	in := failbackInput()
	in.PrimaryDown = true
	f = &fakeAgents{fail: unreachable, plan: allowFailback}
	st, err := runWorkflowInput(t, f, in)
	require.NoError(t, err)
	assert.Equal(t, []string{"script:check:a1@a1", "push@b1", "script:check:a1@a1", "pull@a1"}, f.serial())
	assert.True(t, strings.HasPrefix(st.PrimaryCheck, "unreachable, going on because the input says primary_down"), st.PrimaryCheck)
	assert.Equal(t, 1, strings.Count(strings.Join(st.Notes, "\n"), "primary_down"), "noted once: %v", st.Notes)

	dead := func(kind, agent string) error {
		if agent == "a1" || (kind == "script:check" && agent == "a2") {
			return temporal.NewTimeoutError(enums.TIMEOUT_TYPE_SCHEDULE_TO_START, nil)
		}
		return nil
	}
	f = &fakeAgents{fail: dead, plan: allowFailback}
	st, err = runWorkflowInput(t, f, failbackInput())
	requireErrType(t, err, ErrTypePrimaryUnreachable)
	assert.Contains(t, err.Error(), "check failed on every application agent in order [a1, a2]")
	assert.Equal(t, []string{"script:check:a1@a1", "script:takeover:a1@a2", "script:check:a1@a2"}, f.serial())
	require.Len(t, st.Takeovers, 2)
	assert.Equal(t, activities.StepCheck, st.Takeovers[0].Step)

	// The primary's agent dead and its host unreachable for the takeover script too
	// (on_unreachable_host: fail): "primary_down" lets the check's takeover go, and the
	// pull is taken over by a2 (the failback's application has no takeover script).
	downAndUnreachable := func(kind, agent string) error {
		if agent == "a1" {
			return temporal.NewTimeoutError(enums.TIMEOUT_TYPE_SCHEDULE_TO_START, nil)
		}
		if kind == "script:takeover" || kind == "script:check" {
			return temporal.NewNonRetryableApplicationError("dial a1: connection refused", activities.ErrTypeHostUnreachable, nil)
		}
		return nil
	}
	f = &fakeAgents{fail: downAndUnreachable, plan: allowFailback}
	_, err = runWorkflowInput(t, f, failbackInput())
	requireErrType(t, err, ErrTypePrimaryUnreachable)
	f = &fakeAgents{fail: downAndUnreachable, plan: allowFailback}
	st, err = runWorkflowInput(t, f, in)
	require.NoError(t, err)
	assert.Equal(t, []string{"script:check:a1@a1", "script:takeover:a1@a2", "push@b1", "script:takeover:a1@a2", "pull@a2"}, f.serial())
}

// Without a check script the config may say the operator's confirmation stands for it.
func TestFailbackOperatorSaysPrimaryStopped(t *testing.T) {
	f := &fakeAgents{fail: func(string, string) error { return nil }, plan: func(p *activities.Plan) {
		p.FailbackGuard = &activities.FailbackGuard{Allow: true, PrimaryStopped: config.PrimaryStoppedOperator}
	}}
	st, err := runWorkflowInput(t, f, failbackInput())
	require.NoError(t, err)
	assert.Equal(t, []string{"push@b1", "pull@a1"}, f.serial())
	assert.True(t, strings.HasPrefix(st.PrimaryCheck, "operator: no check script"), st.PrimaryCheck)
	assert.Contains(t, strings.Join(st.Notes, "\n"), "failback: primary application operator")
}

// Failback of a group from the second target of a fan-out: that target's order pushes each
// dataset's replica, the source order restores each in place; no group publish on the source.
func TestFailbackOfGroupFromSecondTarget(t *testing.T) {
	f := &fakeAgents{fail: func(string, string) error { return nil }}
	f.plan = func(p *activities.Plan) {
		groupPlan(p)
		allowFailback(p)
		p.Targets = []activities.TargetPlan{
			{Endpoint: p.Target, Order: []string{"b1", "b2"}},
			{Endpoint: activities.Endpoint{Storage: "c", Dataset: "c/db", Datasets: []string{"c/db", "c/logs"}}, Order: []string{"c1"}},
		}
	}
	in := failbackInput()
	in.From = "c"
	st, err := runWorkflowInput(t, f, in)
	require.NoError(t, err)
	assert.Equal(t, []string{"script:check:a1@a1", "push@c1", "push@c1", "script:check:a1@a1", "pull@a1", "pull@a1"}, f.serial(), "no failback application: nothing to quiesce")
	assert.Equal(t, "/c/c/db", f.pushes[0].SourceDir)
	assert.Equal(t, "c/logs", f.pushes[1].Dataset)
	for i, ds := range []string{"db", "logs"} {
		assert.True(t, f.pulls[i].InPlace)
		assert.False(t, f.pulls[i].Defer)
		assert.Equal(t, "orders/"+ds, f.pulls[i].Dataset)
		assert.Equal(t, "c/"+ds, f.pulls[i].SourceDataset, "the image's identity is the target dataset")
		assert.Equal(t, "img-c/"+ds, f.pulls[i].ImageID)
	}
	assert.True(t, st.CrashConsistent)
	assert.Contains(t, strings.Join(st.Notes, "\n"), "job has no failback.application")
}
