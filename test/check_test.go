package test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/api/enums/v1"

	"github.com/replctl/replctl/workflows"
)

// `replctl check` with one agent not started and a resume script that is not executable:
// the table names both failures with a fix, and the command exits 7. Fixed, it exits 0.
func TestCheckReportsBrokenHosts(t *testing.T) {
	e := newEnv(t)
	thaw := filepath.Join(e.dir, "scripts", "thaw.sh")
	require.NoError(t, os.Chmod(thaw, 0o644))
	e.startAgents("a1", "a2", "b1") // b2 is not started
	e.waitWorkflowPoller()
	// An agent polls its own queue for activities only: no workflow runs there, and idle
	// workflow polls would cost a fleet's frontend two long polls per agent.
	require.Eventually(t, func() bool {
		d, err := e.c.DescribeTaskQueue(context.Background(), workflows.HostQueue("a1"), enums.TASK_QUEUE_TYPE_ACTIVITY)
		return err == nil && len(d.GetPollers()) > 0
	}, 30*time.Second, 100*time.Millisecond)
	d, err := e.c.DescribeTaskQueue(context.Background(), workflows.HostQueue("a1"), enums.TASK_QUEUE_TYPE_WORKFLOW)
	require.NoError(t, err)
	assert.Empty(t, d.GetPollers(), "workflow-task pollers on a host queue")

	out, err := e.cli("check", "--wait", "3s")
	t.Logf("replctl check:\n%s", out)
	require.Error(t, err)
	assert.Equal(t, 7, exitCodeOf(err), out)
	assert.Contains(t, out, "HOST b2 (agent not reached)")
	assert.Contains(t, out, "agent not reachable: no agent polled queue replctl-host-b2 within 3s")
	assert.Contains(t, out, "fix: start the agent of b2")
	assert.Contains(t, out, "thaw.sh is not executable")
	assert.Contains(t, out, "fix: chmod +x "+thaw)
	assert.Contains(t, out, "same on all 3 agent(s) checked")
	assert.Contains(t, out, "check: ")
	recordLatest(t, e, workflows.CheckID(""), "check-broken-host")

	require.NoError(t, os.Chmod(thaw, 0o755))
	e.startAgent("b2")
	out, err = e.cli("check", "orders", "--wait", "10s", "-o", "json")
	require.NoError(t, err, out)
	var res workflows.CheckResult
	require.NoError(t, json.Unmarshal([]byte(out), &res), out)
	assert.Equal(t, 0, res.Failed, out)
	assert.Equal(t, "orders", res.Job)
	require.Len(t, res.Hosts, 4)
	for _, h := range res.Hosts {
		assert.True(t, h.Reached, h.Host)
	}
}

// waitWorkflowPoller waits until an agent polls the shared workflow queue.
func (e *env) waitWorkflowPoller() {
	e.t.Helper()
	require.Eventually(e.t, func() bool {
		d, err := e.c.DescribeTaskQueue(context.Background(), workflows.DefaultTaskQueue, enums.TASK_QUEUE_TYPE_WORKFLOW)
		return err == nil && len(d.GetPollers()) > 0
	}, 30*time.Second, 100*time.Millisecond)
}
