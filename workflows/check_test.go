package workflows

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/replctl/replctl/activities"
)

// Check asks every host, reports an agent that never took its check as not reachable and
// fails the fingerprint of the agent whose config differs from the others'.
func TestCheckCollectsHostsAndComparesFingerprints(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.RegisterWorkflowWithOptions(Check, workflow.RegisterOptions{Name: CheckWorkflowName})
	var (
		mu    sync.Mutex // the test environment runs the hosts' activities in parallel
		asked []activities.CheckHostInput
	)
	env.RegisterActivityWithOptions(func(ctx context.Context, in activities.CheckHostInput) (activities.CheckHostResult, error) {
		mu.Lock()
		asked = append(asked, in)
		mu.Unlock()
		fp := "aaaaaaaaaaaaaaaa"
		switch in.Agent {
		case "b2":
			return activities.CheckHostResult{}, temporal.NewTimeoutError(enums.TIMEOUT_TYPE_SCHEDULE_TO_START, nil)
		case "b1":
			fp = "bbbbbbbbbbbbbbbb"
		}
		items := []activities.CheckItem{{Check: "storage", Result: activities.CheckOK}}
		if in.Agent == "a2" {
			items = append(items, activities.CheckItem{Check: "free space a", Result: activities.CheckWarn})
		}
		return activities.CheckHostResult{Agent: in.Agent, Fingerprint: fp, ConfigFile: "/etc/replctl/config.yaml", Items: items}, nil
	}, activity.RegisterOptions{Name: activities.CheckHostName})
	env.ExecuteWorkflow(CheckWorkflowName, CheckInput{Job: "orders", Hosts: []string{"a1", "a2", "b1", "b2"}})
	require.NoError(t, env.GetWorkflowError())
	var res CheckResult
	require.NoError(t, env.GetWorkflowResult(&res))
	assert.Len(t, asked, 4)
	for _, in := range asked {
		assert.Equal(t, "orders", in.Job)
	}
	require.Len(t, res.Hosts, 4)
	fpResult := func(h HostCheck) string {
		for _, c := range h.Checks {
			if c.Check == "config fingerprint" {
				return c.Result
			}
		}
		return ""
	}
	assert.Equal(t, activities.CheckOK, fpResult(res.Hosts[0]))
	assert.Contains(t, res.Hosts[0].Checks[1].Detail, "same as 1 other agent(s)")
	assert.Equal(t, activities.CheckOK, fpResult(res.Hosts[1]))
	assert.Equal(t, activities.CheckFail, fpResult(res.Hosts[2]))
	assert.Contains(t, res.Hosts[2].Checks[1].Detail, "differs from aaaaaaaaaaaa of 2 other agent(s)")
	b2 := res.Hosts[3]
	assert.False(t, b2.Reached)
	require.Len(t, b2.Checks, 1)
	assert.Equal(t, "agent", b2.Checks[0].Check)
	assert.Contains(t, b2.Checks[0].Detail, "agent not reachable: no agent polled queue replctl-host-b2 within 10s")
	assert.Contains(t, b2.Checks[0].Fix, "start the agent of b2")
	assert.Equal(t, 2, res.Failed)
	assert.Equal(t, 1, res.Warned)
}
