package workflows

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"

	"github.com/replctl/replctl/activities"
)

func heartbeatTimeout() error {
	return temporal.NewTimeoutError(enums.TIMEOUT_TYPE_HEARTBEAT, nil, activities.Progress{Step: "pull", Staging: ".replctl/staging/x"})
}

// A precopy only saves work: when it fails, the run notes it and pushes everything while
// quiesced.
func TestFailedPrecopyIsNotedAndRunGoesOn(t *testing.T) {
	f := &fakeAgents{plan: func(p *activities.Plan) { p.Precopy = "always" }}
	f.fail = failOn("precopy", "", temporal.NewNonRetryableApplicationError("disk read error", "Failed", nil))
	st, err := runWorkflow(t, f)
	require.NoError(t, err)
	assert.Equal(t, []string{"precopy@a1", "script:quiesce:a1@a1", "push@a1", "script:resume:a1@a1", "pull@b1"}, f.serial())
	assert.Nil(t, st.Precopy)
	assert.Contains(t, strings.Join(st.Notes, "\n"), "precopy failed, so the push reads everything while quiesced: disk read error")
}

// An agent lost during the precopy is taken over like in any step: the next source agent
// runs the takeover script for the lost host, copies again, and the application role skips
// the lost agent too.
func TestPrecopyAgentLostIsTakenOver(t *testing.T) {
	f := &fakeAgents{plan: func(p *activities.Plan) { p.Precopy = "auto" }}
	f.fail = failOn("precopy", "a1", heartbeatTimeout())
	st, err := runWorkflow(t, f)
	require.NoError(t, err)
	assert.Equal(t, []string{"precopy@a1", "script:takeover:a1@a2", "precopy@a2", "script:quiesce:a1@a2", "push@a2", "script:resume:a1@a2", "pull@b1"}, f.serial())
	// The precopy travelled in the push that carried the quiesce: its lost agent may have
	// quiesced, so the application role is taken over first; the taker's preflight and
	// precopy then skip the lost agent in the source role.
	require.Len(t, st.Takeovers, 2)
	assert.Equal(t, []string{"application", "quiesce", "a1", "a2"}, []string{st.Takeovers[0].Role, string(st.Takeovers[0].Step), st.Takeovers[0].From, st.Takeovers[0].To})
	assert.Equal(t, []string{"source", "precopy", "a1", "a2"}, []string{st.Takeovers[1].Role, string(st.Takeovers[1].Step), st.Takeovers[1].From, st.Takeovers[1].To})
	assert.Equal(t, "a2", st.Precopy.Agent)
	assert.Equal(t, [2]int{1, 1}, [2]int{f.inPush, f.inPrecopy}, "the preflight in the push on a1, then in the precopy on a2")

	// A precopy step of its own (the application on another agent) is taken over as such.
	f = &fakeAgents{plan: func(p *activities.Plan) { p.Precopy = "auto"; p.Order.Application = []string{"a2", "a1"} }}
	f.fail = failOn("precopy", "a1", heartbeatTimeout())
	st, err = runWorkflow(t, f)
	require.NoError(t, err)
	assert.Equal(t, []string{"precopy@a1", "script:takeover:a1@a2", "precopy@a2", "script:quiesce:a1@a2", "push@a2", "script:resume:a1@a2", "pull@b1"}, f.serial())
	require.Len(t, st.Takeovers, 1)
	assert.Equal(t, []string{"source", "precopy", "a1", "a2"}, []string{st.Takeovers[0].Role, string(st.Takeovers[0].Step), st.Takeovers[0].From, st.Takeovers[0].To})
	assert.Equal(t, "a2", st.Precopy.Agent)
}

func TestHeartbeatTimeoutMovesStepToNextAgent(t *testing.T) {
	f := &fakeAgents{}
	f.fail = failOn("pull", "b1", heartbeatTimeout())
	st, err := runWorkflow(t, f)
	require.NoError(t, err)
	assert.Equal(t, []string{"script:quiesce:a1@a1", "push@a1", "script:resume:a1@a1", "pull@b1", "script:takeover:b1@b2", "pull@b2"}, f.serial())
	require.Len(t, st.Takeovers, 1)
	assert.Equal(t, Takeover{Role: "target", Step: "pull", From: "b1", To: "b2", Reason: "heartbeat timeout: agent died, stalled or was cut off", Time: st.Takeovers[0].Time}, st.Takeovers[0])
	assert.Equal(t, ".replctl/staging/x", st.Replica.ResumedFrom, "the taker resumes from the failed attempt's staging dir")
	assert.Equal(t, "b2", st.Agents.Target)
}

// Once a1 failed, later steps of the same role start at a2 (sticky index); resume, on the
// application order, still runs on a1 if a1 is alive for it.
func TestTakeoverIsStickyAndResumeAlwaysRuns(t *testing.T) {
	f := &fakeAgents{}
	f.fail = func(kind, agent string) error {
		if agent == "a1" && kind == "push" {
			return temporal.NewTimeoutError(enums.TIMEOUT_TYPE_SCHEDULE_TO_START, nil)
		}
		if kind == "push" { // every other source agent fails for good
			return temporal.NewNonRetryableApplicationError("source is gone", activities.ErrTypeBadInput, nil)
		}
		return nil
	}
	// (With the quiesce in the push, a1's lost push would be a lost quiesce: quiescepush_test.go.)
	st, err := runWorkflowWith(t, f, ReplicationInput{Job: "orders"}, quiesceApart)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "source is gone")
	assert.Equal(t, []string{"script:quiesce:a1@a1", "push@a1", "script:takeover:a1@a2", "push@a2", "script:resume:a1@a2"}, f.serial(),
		"non-retryable error stops the step without takeover; resume still runs, on a2 since a1 was lost")
	assert.Equal(t, PhaseFailed, st.Phase)
	assert.Empty(t, st.QuiescedHost)
}

// A control plane that was away (every source agent's heartbeat timed out, as when the
// frontend restarts) loses every agent of the order; the resume is still tried on them, in
// order, rather than skipped on each and the host left quiesced.
func TestResumeTriesAgentsLostEarlierWhenAllWere(t *testing.T) {
	f := &fakeAgents{}
	f.fail = func(kind, agent string) error {
		if kind == "push" {
			return heartbeatTimeout()
		}
		return nil
	}
	st, err := runWorkflow(t, f)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "push failed on every source agent in order [a1, a2, b2]")
	assert.NotContains(t, err.Error(), "LEFT QUIESCED")
	assert.Equal(t, []string{"script:quiesce:a1@a1", "push@a1", "script:takeover:a1@a2", "push@a2", "script:takeover:a2@b2", "push@b2", "script:resume:a1@a1"}, f.serial())
	assert.Empty(t, st.QuiescedHost)
	assert.Equal(t, "a1", st.Agents.Application)
}

func TestExhaustedOrderNamesEveryAgent(t *testing.T) {
	f := &fakeAgents{}
	f.fail = func(kind, agent string) error {
		if kind == "pull" || (kind == "script:takeover" && agent == "b2") {
			return temporal.NewTimeoutError(enums.TIMEOUT_TYPE_SCHEDULE_TO_START, nil)
		}
		return nil
	}
	_, err := runWorkflow(t, f)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "pull failed on every target agent in order [b1, b2]")
	assert.Contains(t, err.Error(), "b1: schedule-to-start timeout")
	assert.Contains(t, err.Error(), "b2: schedule-to-start timeout")
}

func TestRetryableErrorsRetrySameAgentThenTakeOver(t *testing.T) {
	f := &fakeAgents{}
	f.fail = failOn("push", "a1", temporal.NewApplicationError("disk hiccup", "StepFailed"))
	st, err := runWorkflow(t, f)
	require.NoError(t, err)
	assert.Equal(t, []string{"script:quiesce:a1@a1", "push@a1", "push@a1", "push@a1", "script:takeover:a1@a2", "push@a2", "script:resume:a1@a2", "pull@b1"}, f.serial())
	require.Len(t, st.Takeovers, 2)
	assert.Contains(t, st.Takeovers[0].Reason, "failed 3 times: disk hiccup")
	assert.Equal(t, Takeover{Role: "application", Step: "resume", From: "a1", To: "a2", Reason: "skipped: agent lost earlier in this run", Time: st.Takeovers[1].Time}, st.Takeovers[1])
}

func TestResumeFailureLeavesHostQuiescedLoudly(t *testing.T) {
	f := &fakeAgents{}
	f.fail = failOn("script:resume", "", temporal.NewTimeoutError(enums.TIMEOUT_TYPE_SCHEDULE_TO_START, nil))
	st, err := runWorkflow(t, f)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "host a1 LEFT QUIESCED")
	assert.Equal(t, "a1", st.QuiescedHost)
	assert.Equal(t, PhaseFailed, st.Phase)
}

func TestUnreachableFailedHostPolicy(t *testing.T) {
	f := &fakeAgents{}
	f.fail = func(kind, agent string) error {
		switch {
		case kind == "push" && agent == "a1":
			return heartbeatTimeout()
		case kind == "script:takeover":
			return temporal.NewNonRetryableApplicationError("dial a1: connection refused", activities.ErrTypeHostUnreachable, nil)
		}
		return nil
	}
	st, err := runWorkflow(t, f)
	require.Error(t, err, "default policy is fail")
	var appErr *temporal.ApplicationError
	require.True(t, errors.As(err, &appErr))
	// a1 cannot be reached for its takeover script nor for resume: the run says loudly that
	// the application host may be left frozen, and why.
	assert.Equal(t, ErrTypeLeftQuiesced, appErr.Type())
	assert.Contains(t, err.Error(), "host a1 LEFT QUIESCED")
	assert.Contains(t, err.Error(), "dial a1: connection refused")
	assert.Equal(t, "a1", st.QuiescedHost)
}

func TestUnreachableFailedHostPolicyContinue(t *testing.T) {
	f := &fakeAgents{plan: func(p *activities.Plan) { p.OnUnreachableHost = "continue" }}
	f.fail = func(kind, agent string) error {
		switch {
		case kind == "push" && agent == "a1":
			return heartbeatTimeout()
		case kind == "script:takeover":
			return temporal.NewNonRetryableApplicationError("dial a1: connection refused", activities.ErrTypeHostUnreachable, nil)
		}
		return nil
	}
	st, err := runWorkflow(t, f)
	require.NoError(t, err)
	assert.True(t, st.CrashConsistent)
	assert.Contains(t, strings.Join(st.Notes, "\n"), "continuing crash-consistent")
	assert.Equal(t, "a2", st.Agents.Source)
}

// The resume and the pull take over from the same lost agent at the same time: its
// takeover script runs once.
func TestResumeAndPullTakeOverOneHostOnce(t *testing.T) {
	f := &fakeAgents{plan: func(p *activities.Plan) {
		p.Order.Application = []string{"c1", "a2"}
		p.Order.Target = []string{"c1", "b1"}
	}}
	f.fail = func(kind, agent string) error {
		if agent == "c1" && (kind == "script:resume" || kind == "pull") {
			return temporal.NewTimeoutError(enums.TIMEOUT_TYPE_SCHEDULE_TO_START, nil)
		}
		return nil
	}
	st, err := runWorkflow(t, f)
	require.NoError(t, err)
	var scripts []string
	for _, c := range f.calls {
		if strings.HasPrefix(c, "script:takeover:") {
			scripts = append(scripts, c)
		}
	}
	assert.Len(t, scripts, 1, "calls: %v", f.calls)
	assert.Contains(t, f.calls, "script:resume:a1@a2")
	assert.Contains(t, f.calls, "pull@b1")
	assert.Empty(t, st.QuiescedHost)
}

// A failed resume still outranks the pull's result, which ran beside it.
func TestResumeFailureBesidePull(t *testing.T) {
	f := &fakeAgents{}
	f.fail = failOn("script:resume", "", temporal.NewNonRetryableApplicationError("thaw.sh exited 1", activities.ErrTypeScriptFailed, nil))
	st, err := runWorkflow(t, f)
	require.Error(t, err)
	var appErr *temporal.ApplicationError
	require.True(t, errors.As(err, &appErr))
	assert.Equal(t, ErrTypeLeftQuiesced, appErr.Type())
	assert.Equal(t, "a1", st.QuiescedHost)
	require.NotNil(t, st.Replica, "the pull ran beside the resume and published")
}
