package workflows

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/replctl/replctl/activities"
)

func storageFault(msg string) error {
	return temporal.NewNonRetryableApplicationError(msg, activities.ErrTypeStorageFault, nil)
}

func TestClassifyFault(t *testing.T) {
	for _, c := range []struct {
		err  error
		want fault
	}{
		{temporal.NewTimeoutError(enums.TIMEOUT_TYPE_HEARTBEAT, nil), faultAgentLost},
		{temporal.NewTimeoutError(enums.TIMEOUT_TYPE_SCHEDULE_TO_START, nil), faultAgentLost},
		{storageFault("no space left on device"), faultStorage},
		{temporal.NewNonRetryableApplicationError("bad", activities.ErrTypeBadInput, nil), faultFinal},
		{temporal.NewNonRetryableApplicationError("fenced", activities.ErrTypeFenced, nil), faultFinal},
		{temporal.NewNonRetryableApplicationError("refused", activities.ErrTypeRefused, nil), faultFinal},
		{temporal.NewApplicationError("hiccup", "StepFailed"), faultRetry},
		{errors.New("plain"), faultRetry},
	} {
		assert.Equal(t, c.want, classifyFault(c.err), "%v", c.err)
	}
}

// A storage fault of the pull fails the run at once: no retry, no takeover, no takeover
// script; the error names what the agent said.
func TestStorageFaultIsNotTakenOver(t *testing.T) {
	f := &fakeAgents{}
	f.fail = failOn("pull", "", storageFault("pull: storage fault on storage b (target, at /b): no space left on device"))
	st, err := runWorkflow(t, f)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "storage fault on storage b")
	assert.Equal(t, []string{"script:quiesce:a1@a1", "push@a1", "script:resume:a1@a1", "pull@b1"}, f.serial())
	assert.Empty(t, st.Takeovers)
	assert.Equal(t, PhaseFailed, st.Phase)
}

// A storage fault of the precopy fails the run before anything is quiesced: the push would
// meet the same storage while the application is frozen.
func TestPrecopyStorageFaultFailsBeforeQuiesce(t *testing.T) {
	f := &fakeAgents{plan: func(p *activities.Plan) { p.Precopy = "always" }}
	f.fail = failOn("precopy", "", storageFault("precopy: storage fault on storage b (the job's repository at /b/r): no space left on device"))
	st, err := runWorkflow(t, f)
	require.Error(t, err)
	assert.Equal(t, []string{"precopy@a1"}, f.serial())
	assert.Empty(t, st.Takeovers)
	assert.Empty(t, st.QuiescedHost)
}

// With timeouts.storage_retry the step waits and is tried again on the same agent: it goes
// on once the storage accepts it, and fails once the bound has passed.
func TestStorageRetryWaitsOnTheSameAgent(t *testing.T) {
	tries := 0
	f := &fakeAgents{plan: func(p *activities.Plan) { p.Timeouts.StorageRetry = 10 * time.Minute }}
	f.fail = func(kind, agent string) error {
		if kind == "pull" {
			if tries++; tries <= 3 {
				return storageFault("no space left on device")
			}
		}
		return nil
	}
	st, err := runWorkflow(t, f)
	require.NoError(t, err)
	assert.Equal(t, []string{"script:quiesce:a1@a1", "push@a1", "script:resume:a1@a1", "pull@b1", "pull@b1", "pull@b1", "pull@b1"}, f.serial())
	assert.Empty(t, st.Takeovers)
	assert.Contains(t, strings.Join(st.Notes, "\n"), "waiting and retrying on the same agent for up to 10m0s")

	f = &fakeAgents{plan: func(p *activities.Plan) { p.Timeouts.StorageRetry = time.Minute }}
	f.fail = failOn("pull", "", storageFault("no space left on device"))
	st, err = runWorkflow(t, f)
	require.Error(t, err)
	assert.Empty(t, st.Takeovers)
	pulls := strings.Count(strings.Join(f.calls, " "), "pull@b1")
	assert.Equal(t, pulls, len(f.calls)-3, "every pull on b1: %v", f.calls)
	assert.GreaterOrEqual(t, pulls, 4, "5 s, 10 s, 20 s, 25 s: at least four tries within the minute")
	assert.Contains(t, strings.Join(st.Notes, "\n"), "the storage still refused after 1m0s")
}

// An agent that resumed the host outside the run while the push may still read makes the
// image crash-consistent; a signal for a host the run does not hold changes nothing.
func TestHostResumedOutsideTheRunMakesTheImageCrashConsistent(t *testing.T) {
	for _, c := range []struct {
		host  string
		crash bool
		note  string
	}{
		{"a1", true, "host a1 was resumed outside the run by agent a1"},
		{"b9", false, `ignored a host-resumed signal for host "b9"`},
	} {
		pushes := 0
		f := &fakeAgents{}
		f.fail = func(kind, agent string) error {
			if kind == "push" {
				if pushes++; pushes == 1 {
					return temporal.NewApplicationError("hiccup", "StepFailed") // retried after 1 s
				}
			}
			return nil
		}
		st, err := runWorkflowWith(t, f, ReplicationInput{Job: "orders"}, func(env *testsuite.TestWorkflowEnvironment) {
			env.RegisterDelayedCallback(func() {
				env.SignalWorkflow(HostResumedSignal, HostResumed{Host: c.host, Agent: "a1", Reason: "agent stopping"})
			}, 500*time.Millisecond)
		})
		require.NoError(t, err)
		assert.Equal(t, c.crash, st.CrashConsistent, c.host)
		assert.Contains(t, strings.Join(st.Notes, "\n"), c.note)
	}
}

// When every application agent was lost earlier in the run (here: in the precopy, which b2
// then finishes with the preflight), the quiesce is still tried on them in order (a control
// plane that was away loses every agent at once); when none of them starts it (they are
// dead: schedule-to-start timeouts), no quiesce ran and the run fails without claiming the
// host was left quiesced.
//
// The source's agents come in another order than the application's, so the precopy is a
// step of its own (a push that carries it is the quiesce step's attempt: its lost agent
// may have quiesced).
func TestNoQuiesceRanNothingToResume(t *testing.T) {
	f := &fakeAgents{plan: func(p *activities.Plan) { p.Precopy = "always"; p.Order.Source = []string{"a2", "a1", "b2"} }}
	f.fail = func(kind, agent string) error {
		switch {
		case kind == "precopy" && agent != "b2":
			return temporal.NewTimeoutError(enums.TIMEOUT_TYPE_HEARTBEAT, nil)
		case kind == "script:quiesce":
			return temporal.NewTimeoutError(enums.TIMEOUT_TYPE_SCHEDULE_TO_START, nil)
		}
		return nil
	}
	st, err := runWorkflow(t, f)
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "LEFT QUIESCED")
	assert.Contains(t, err.Error(), "quiesce failed on every application agent in order [a1, a2]: a1: schedule-to-start timeout")
	assert.Empty(t, st.QuiescedHost)
	var quiesces []string
	for _, c := range f.calls {
		if strings.HasPrefix(c, "script:quiesce") {
			quiesces = append(quiesces, c)
		}
		assert.NotContains(t, c, "script:resume", "nothing to resume: %v", f.calls)
	}
	assert.Equal(t, []string{"script:quiesce:a1@a1", "script:quiesce:a1@a2"}, quiesces, "tried on both lost agents, in order")
}
