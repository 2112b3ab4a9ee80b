package test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/internal/runhistory"
	"github.com/replctl/replctl/workflows"
)

// A run quiesces, pushes, resumes and pulls, and leaves a verified replica identical to the
// source. A second run after changes publishes a new replica that shares unchanged files
// with the first one instead of copying them.
func TestReplicationGivesIdenticalReplica(t *testing.T) {
	e := newEnv(t)
	writeDataset(t, e.sourceDir(), 120, 32<<10, 1)
	e.startAgents("a1", "a2", "b2")
	// b1 logs at INFO: its read-ahead's line is checked below.
	e.startAgentConfig("b1", e.cfgFile, "--log-level", "info")

	st, err := e.wait(e.start("orders"))
	require.NoError(t, err)
	assert.Equal(t, workflows.PhaseCompleted, st.Phase)
	assert.Empty(t, st.Takeovers)
	assert.Empty(t, st.QuiescedHost)
	require.NotNil(t, st.Replica)
	assert.True(t, st.Replica.Verified)
	assert.Equal(t, "b1", st.Replica.Agent)
	assert.Equal(t, workflows.RoleAgents{Application: "a1", Source: "a1", Target: "b1"}, st.Agents)
	assert.Equal(t, e.sourceDir(), st.SourcePath)
	assert.Equal(t, treeDigest(t, e.sourceDir()), treeDigest(t, e.targetLink()))
	resolved, err := filepath.EvalSymlinks(e.targetLink())
	require.NoError(t, err)
	assert.Equal(t, st.Replica.Path, resolved)
	// quiesce then resume, both by the application host's own agent.
	m := e.markers("a1")
	require.Len(t, m, 2, "markers: %v", m)
	assert.True(t, strings.HasPrefix(m[0], "quiesce host=a1 agent=a1"), m[0])
	assert.True(t, strings.HasPrefix(m[1], "resume host=a1 agent=a1"), m[1])
	// precopy always (the test world's config): the first run copies ahead of the freeze too.
	require.NotNil(t, st.Precopy)
	assert.False(t, st.Precopy.Skipped)
	assert.Greater(t, st.Precopy.Files, int64(100))

	// Change the source: modify one file, delete one, add one.
	changed := filepath.Join(e.sourceDir(), "d01/s1/f00001.bin")
	require.NoError(t, os.WriteFile(changed, []byte("new content"), 0o644))
	require.NoError(t, os.Remove(filepath.Join(e.sourceDir(), "d02/s2/f00002.bin")))
	require.NoError(t, os.WriteFile(filepath.Join(e.sourceDir(), "added.txt"), []byte("added"), 0o644))
	first := st.Replica.Path

	st2, err := e.wait(e.start("orders"))
	require.NoError(t, err)
	require.NotNil(t, st2.Replica)
	assert.NotEqual(t, first, st2.Replica.Path)
	assert.Equal(t, treeDigest(t, e.sourceDir()), treeDigest(t, e.targetLink()))
	assert.Greater(t, st2.Replica.Linked, int64(100), "unchanged files are linked, not copied")
	// The second run copied the live source before quiesce.
	require.NotNil(t, st2.Precopy)
	assert.False(t, st2.Precopy.Skipped)
	assert.Equal(t, "a1", st2.Precopy.Agent)
	assert.Greater(t, st2.Precopy.Files, int64(100))
	// An unchanged file is the same inode in both replicas; the changed one is not, and the
	// old replica still has the old content.
	sameInode := func(rel string) bool {
		a, err := os.Stat(filepath.Join(first, rel))
		require.NoError(t, err)
		b, err := os.Stat(filepath.Join(st2.Replica.Path, rel))
		require.NoError(t, err)
		return a.Sys().(*syscall.Stat_t).Ino == b.Sys().(*syscall.Stat_t).Ino
	}
	assert.True(t, sameInode("d00/s0/f00000.bin"))
	assert.False(t, sameInode("d01/s1/f00001.bin"))
	old, err := os.ReadFile(filepath.Join(first, "d01/s1/f00001.bin"))
	require.NoError(t, err)
	assert.NotEqual(t, "new content", string(old))
	// The run's search attributes (sent as one command per blocking point) end with the
	// final phase and no quiesced host.
	d, err := e.c.DescribeWorkflowExecution(context.Background(), workflows.WorkflowID("orders"), st2.RunID)
	require.NoError(t, err)
	attrs := d.GetWorkflowExecutionInfo().GetSearchAttributes().GetIndexedFields()
	var phase string
	require.NoError(t, converter.GetDefaultDataConverter().FromPayload(attrs[workflows.AttrPhase.GetName()], &phase))
	assert.Equal(t, workflows.PhaseCompleted, phase)
	assert.Nil(t, attrs[workflows.AttrQuiescedHost.GetName()], "the quiesced host is unset after resume")
	// The plan is a local activity of the agent that ran the first workflow task: its
	// marker is read as the run's first step, and no Plan activity task was scheduled.
	h, err := runhistory.Load(context.Background(), e.c, workflows.WorkflowID("orders"), st2.RunID)
	require.NoError(t, err)
	require.NotEmpty(t, h.Attempts)
	plan := h.Attempts[0]
	assert.Equal(t, activities.PlanName, plan.Type)
	assert.True(t, plan.Local)
	assert.Empty(t, plan.Queue)
	assert.Equal(t, runhistory.Completed, plan.Outcome)
	planner, ok := workflows.HostOfIdentity(plan.Identity)
	require.True(t, ok, "an agent planned: %q", plan.Identity)
	assert.Contains(t, []string{"a1", "a2", "b1", "b2"}, planner)
	assert.False(t, plan.Closed.Before(plan.Started))
	var res activities.PlanResult
	require.NoError(t, converter.GetDefaultDataConverter().FromPayloads(plan.Result, &res))
	assert.Equal(t, "orders", res.Plan.Job)
	assert.Equal(t, planner, res.Agent)
	for _, a := range h.Attempts[1:] {
		assert.NotEqual(t, activities.PlanName, a.Type, "the plan ran once, locally")
	}
	// normal.json is this run as recorded before the precopy; precopy.json with it;
	// precopy-preflight-resume-beside-pull.json before the coalesced search attributes;
	// precopy-coalesced-search-attributes.json before the local plan;
	// precopy-plan-local-activity.json before the quiesce travelled in the push;
	// precopy-quiesce-in-push.json before the preflight and the precopy travelled there too;
	// precopy-in-push.json before the resume did; baseline.json with one version marker a
	// run; warm.json with the target's read-ahead beside the push.
	recordHistory(t, e, workflows.WorkflowID("orders"), st2.RunID, "warm")
	// The target's first agent read the current replica ahead of the pull: one WarmReplica
	// on b1's queue, kept apart from the steps, and its log line.
	require.Len(t, h.ReadAheads, 1)
	assert.Equal(t, workflows.HostQueue("b1"), h.ReadAheads[0].Queue)
	logb1 := func() string {
		b, err := os.ReadFile(filepath.Join(e.dir, "agent-b1.log"))
		require.NoError(t, err)
		return string(b)
	}
	assert.Regexp(t, `replicas read ahead of the pull.*"entries": [1-9]`, logb1(), "the second run read the first run's replica")

	// Keep 3 (the default): the fourth run's retention retires the first replica, which its
	// pull brings up to date as the new one (recycling) instead of linking a new tree.
	_, err = e.wait(e.start("orders"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(changed, []byte("newer content"), 0o644))
	st4, err := e.wait(e.start("orders"))
	require.NoError(t, err)
	require.NotNil(t, st4.Replica)
	assert.Equal(t, filepath.Base(first), st4.Replica.Recycled)
	assert.Greater(t, st4.Replica.Kept, int64(100), "unchanged files of the first replica stay")
	assert.Equal(t, treeDigest(t, e.sourceDir()), treeDigest(t, e.targetLink()))
	assert.NoDirExists(t, first)
}

// A job no agent's config defines fails in the plan (a local activity), as bad input: at
// once, without retries, naming the job, before any step is scheduled.
func TestUndefinedJobFailsInThePlan(t *testing.T) {
	e := newEnv(t)
	e.startAgents("a1")
	run := e.start("nosuchjob")
	_, err := e.wait(run)
	require.Error(t, err)
	var app *temporal.ApplicationError
	require.ErrorAs(t, err, &app)
	assert.Equal(t, activities.ErrTypeBadInput, app.Type())
	assert.Contains(t, err.Error(), `"nosuchjob"`)
	h, err := runhistory.Load(context.Background(), e.c, run.GetID(), run.GetRunID())
	require.NoError(t, err)
	require.Len(t, h.Attempts, 1, "nothing is scheduled after a failed plan")
	plan := h.Attempts[0]
	assert.True(t, plan.Local)
	assert.Equal(t, runhistory.Failed, plan.Outcome)
	assert.EqualValues(t, 1, plan.Attempt, "bad input is not retried")
	require.NotNil(t, plan.Failure)
	assert.Contains(t, plan.Failure.GetMessage(), "nosuchjob")
}

// The pushing agent is killed in the middle of the push: the next source agent runs the
// takeover script for the dead host, pushes again, and the replica is still identical.
// The application host's agent is the dead one, so resume is taken over too.
func TestKilledPushAgentIsTakenOver(t *testing.T) {
	e := newEnv(t)
	writeDataset(t, e.sourceDir(), 300, 512<<10, 2)
	e.startAgents("a1", "a2", "b1", "b2")
	run := e.start("orders")
	who := e.waitPushing(run)
	require.Equal(t, "replctl-agent-a1", who)
	e.freeze("a1") // stop it at once, so the push cannot finish; then crash it
	killedAt := time.Now()
	e.kill("a1")

	st, err := e.wait(run)
	require.NoError(t, err)
	require.NotEmpty(t, st.Takeovers)
	t.Logf("takeover recorded %s after the kill (heartbeat timeout 1s)", st.Takeovers[0].Time.Sub(killedAt).Round(time.Millisecond))
	tk := st.Takeovers[0]
	assert.Equal(t, []string{"source", "push", "a1", "a2"}, []string{tk.Role, string(tk.Step), tk.From, tk.To})
	assert.Contains(t, tk.Reason, "heartbeat timeout")
	assert.Equal(t, "a2", st.Agents.Source)
	assert.Equal(t, "a2", st.Agents.Application, "resume moved to a2 because a1 is dead")
	assert.Empty(t, st.QuiescedHost)
	assert.Equal(t, treeDigest(t, e.sourceDir()), treeDigest(t, e.targetLink()))
	// a2 ran the takeover script and the resume script for a1, on a1 (local here).
	m := strings.Join(e.markers("a1"), "\n")
	assert.Contains(t, m, "takeover host=a1 agent=a2 failed=a1")
	assert.Contains(t, m, "resume host=a1 agent=a2")
	// (push-takeover-plan-local-activity.json: before the quiesce travelled in the push;
	// push-takeover-quiesce-in-push.json: before the preflight and the precopy did too;
	// push-takeover-precopy-in-push.json: before the resume did.)
	recordHistory(t, e, run.GetID(), run.GetRunID(), "push-takeover-warm")
}

// The agent that quiesced and pushed is killed while it runs the resume script in the same
// activity: the image it made stands (its last heartbeat carried the push's result), so the
// push is not made again; a2 runs a1's takeover script, then the resume, and the replica is
// the source's.
func TestAgentKilledWhileThawingInThePush(t *testing.T) {
	e := newEnv(t)
	writeDataset(t, e.sourceDir(), 30, 8<<10, 5)
	// a1's thaw logs its marker, then waits (at most 60 s) to be killed in the middle.
	release := filepath.Join(e.dir, "release-thaw")
	t.Cleanup(func() { _ = os.WriteFile(release, nil, 0o644) })
	thaw := testScript + `if [ "$REPLCTL_AGENT" = a1 ]; then
  i=0; while [ ! -e ` + release + ` ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done
fi
`
	require.NoError(t, os.WriteFile(filepath.Join(e.dir, "scripts", "thaw.sh"), []byte(thaw), 0o755))
	e.startAgents("a1", "a2", "b1", "b2")
	run := e.start("orders")
	who := e.waitRunning(run, activities.PushName, activities.StepResume)
	require.Equal(t, "replctl-agent-a1", who)
	e.freeze("a1")
	e.kill("a1")

	st, err := e.wait(run)
	require.NoError(t, err)
	require.Len(t, st.Takeovers, 1, "%+v", st.Takeovers)
	tk := st.Takeovers[0]
	assert.Equal(t, []string{"application", "resume", "a1", "a2"}, []string{tk.Role, string(tk.Step), tk.From, tk.To})
	assert.Contains(t, tk.Reason, "heartbeat timeout")
	assert.Empty(t, st.QuiescedHost)
	assert.Equal(t, workflows.PhaseCompleted, st.Phase)
	m := e.markers("a1")
	require.Len(t, m, 4, "markers: %v", m)
	for i, want := range []string{"quiesce host=a1 agent=a1", "resume host=a1 agent=a1", "takeover host=a1 agent=a2 failed=a1", "resume host=a1 agent=a2"} {
		assert.True(t, strings.HasPrefix(m[i], want), "marker %d: %s, want %s", i, m[i], want)
	}
	h, err := runhistory.Load(context.Background(), e.c, run.GetID(), run.GetRunID())
	require.NoError(t, err)
	pushes := 0
	for _, a := range h.Attempts {
		if a.Type == activities.PushName {
			pushes++
		}
	}
	assert.Equal(t, 1, pushes, "the image a1 made stands: no second push")
	assert.Equal(t, treeDigest(t, e.sourceDir()), treeDigest(t, e.targetLink()))
	recordHistory(t, e, run.GetID(), run.GetRunID(), "agent-killed-while-thawing-baseline")
}

// The pulling agent is killed in the middle of the pull: the next target agent continues
// and the published replica is identical and verified.
func TestKilledPullAgentIsTakenOver(t *testing.T) {
	e := newEnv(t)
	writeDataset(t, e.sourceDir(), 300, 512<<10, 3)
	e.startAgents("a1", "a2", "b1", "b2")
	run := e.start("orders")
	who := e.waitStarted(run, "Pull")
	require.Equal(t, "replctl-agent-b1", who)
	e.freeze("b1")
	e.kill("b1")

	st, err := e.wait(run)
	require.NoError(t, err)
	require.Len(t, st.Takeovers, 1)
	tk := st.Takeovers[0]
	assert.Equal(t, []string{"target", "pull", "b1", "b2"}, []string{tk.Role, string(tk.Step), tk.From, tk.To})
	require.NotNil(t, st.Replica)
	assert.Equal(t, "b2", st.Replica.Agent)
	assert.True(t, st.Replica.Verified)
	assert.Equal(t, treeDigest(t, e.sourceDir()), treeDigest(t, e.targetLink()))
	assert.Contains(t, strings.Join(e.markers("b1"), "\n"), "takeover host=b1 agent=b2 failed=b1")
	recordHistory(t, e, run.GetID(), run.GetRunID(), "pull-takeover-warm")
}

// The application host's agent is dead from the start: the precopy waits for it for the
// schedule-to-start timeout, then a2 runs a1's takeover script (once), and quiesce and resume
// scripts.
func TestDeadApplicationAgent(t *testing.T) {
	e := newEnv(t)
	writeDataset(t, e.sourceDir(), 20, 8<<10, 4)
	e.startAgents("a2", "b1", "b2")

	st, err := e.wait(e.start("orders"))
	require.NoError(t, err)
	assert.Equal(t, "a2", st.Agents.Application)
	assert.Equal(t, "a2", st.Agents.Source, "the source order starts at a1 too, which is dead")
	// The push that carries the quiesce, the preflight and the precopy meets the dead a1
	// first; a2 then runs the preflight (in its precopy) before it quiesces, and the source
	// role skips a1.
	require.GreaterOrEqual(t, len(st.Takeovers), 2)
	assert.Equal(t, []string{"application", "quiesce", "a1", "a2"}, []string{st.Takeovers[0].Role, string(st.Takeovers[0].Step), st.Takeovers[0].From, st.Takeovers[0].To})
	assert.Contains(t, st.Takeovers[0].Reason, "schedule-to-start")
	assert.Equal(t, []string{"source", "precopy", "a1", "a2"}, []string{st.Takeovers[1].Role, string(st.Takeovers[1].Step), st.Takeovers[1].From, st.Takeovers[1].To})
	assert.Contains(t, st.Takeovers[1].Reason, "lost earlier")
	m := e.markers("a1")
	require.GreaterOrEqual(t, len(m), 3, "markers: %v", m)
	assert.True(t, strings.HasPrefix(m[0], "takeover host=a1 agent=a2 failed=a1"), m[0])
	assert.True(t, strings.HasPrefix(m[1], "quiesce host=a1 agent=a2"), m[1])
	assert.True(t, strings.HasPrefix(m[len(m)-1], "resume host=a1 agent=a2"), m[len(m)-1])
	assert.Equal(t, treeDigest(t, e.sourceDir()), treeDigest(t, e.targetLink()))
	// dead-application-agent-skip-lost.json is this run as recorded before the precopy;
	// dead-agent-in-precopy-with-preflight.json before the precopy travelled in the push;
	// dead-application-agent-precopy-in-push.json before the resume did.
	recordHistory(t, e, workflows.WorkflowID("orders"), st.RunID, "dead-application-agent-baseline")
}

// Both application agents are dead from the start. The precopy moves on to b2 (source
// order a1, a2, b2); the quiesce then finds every application agent lost earlier, tries
// them again in order, and none receives the script. The run fails naming the quiesce, and
// with nothing frozen it runs no resume and reports no host left quiesced.
func TestNoApplicationAgentNothingQuiesced(t *testing.T) {
	e := newEnv(t)
	writeDataset(t, e.sourceDir(), 5, 4<<10, 6)
	e.startAgents("b1", "b2")
	run := e.start("orders")
	st, err := e.wait(run)
	require.Error(t, err)
	msg := err.Error()
	assert.Contains(t, msg, "quiesce failed on every application agent in order [a1, a2]")
	assert.Contains(t, msg, "a1: schedule-to-start timeout")
	assert.NotContains(t, msg, "LEFT QUIESCED")
	st = e.status(run)
	assert.Empty(t, st.QuiescedHost)
	var quiesce []string
	for _, tk := range st.Takeovers {
		if tk.Step == "quiesce" {
			quiesce = append(quiesce, tk.From)
		}
	}
	assert.Equal(t, []string{"a1", "a2"}, quiesce, "both lost agents tried again, in order: %+v", st.Takeovers)
	// b2 ran a1's takeover script when it took the precopy over; no quiesce or resume ran.
	for _, m := range e.markers("a1") {
		assert.True(t, strings.HasPrefix(m, "takeover host=a1 agent=b2"), m)
	}
	recordHistory(t, e, run.GetID(), run.GetRunID(), "quiesce-never-started-all-lost-baseline")
}

// When every agent of a role is gone the run fails, naming the role, the agents and why.
func TestExhaustedOrderFailsWithReasons(t *testing.T) {
	e := newEnv(t)
	writeDataset(t, e.sourceDir(), 5, 4<<10, 5)
	e.startAgents("a1", "a2", "b2") // b1, the target's primary, is dead from the start
	st, err := e.wait(e.start("orders"))
	require.NoError(t, err, "with b1 dead the pull moves on to b2")
	assert.Equal(t, "b2", st.Agents.Target)

	e.kill("b2")
	e.kill("a2")
	st, err = e.wait(e.start("orders"))
	require.Error(t, err)
	msg := err.Error()
	assert.Contains(t, msg, "pull failed on every target agent in order [b1, b2, a2]")
	assert.Contains(t, msg, "b1: schedule-to-start timeout")
	assert.Contains(t, msg, "a2: schedule-to-start timeout")
}

// Bad workflow input (as typed into the Temporal UI) is rejected with a clear,
// non-retryable error.
func TestBadWorkflowInput(t *testing.T) {
	e := newEnv(t)
	e.startAgents("a1")
	for _, tc := range []struct{ job, want string }{
		{"", `want {"job": "NAME"}`},
		{"../etc", `want {"job": "NAME"}`},
		{"nope", `"nope"`},
	} {
		run, err := e.c.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{
			ID: workflows.WorkflowID(tc.job), TaskQueue: workflows.DefaultTaskQueue,
		}, workflows.ReplicationWorkflowName, workflows.ReplicationInput{Job: tc.job})
		require.NoError(t, err)
		_, err = e.wait(run)
		require.Error(t, err, "job %q", tc.job)
		var appErr *temporal.ApplicationError
		require.ErrorAs(t, err, &appErr)
		assert.Equal(t, "BadInput", appErr.Type())
		assert.Contains(t, err.Error(), tc.want)
	}
}

// Repository maintenance runs on one target agent; a second one for the same repository
// is refused while the first runs (one owner per repository); a scheduled one runs under
// the same ID.
func TestRepositoryMaintenance(t *testing.T) {
	e := newEnv(t)
	writeDataset(t, e.sourceDir(), 30, 16<<10, 8)
	e.startAgents("a1", "b1")
	_, err := e.wait(e.start("orders"))
	require.NoError(t, err)

	id := workflows.MaintenanceID("array-b", ".replctl/repository")
	opts := client.StartWorkflowOptions{ID: id, TaskQueue: workflows.DefaultTaskQueue, WorkflowExecutionErrorWhenAlreadyStarted: true}
	run, err := e.c.ExecuteWorkflow(context.Background(), opts, workflows.MaintenanceWorkflowName, workflows.MaintenanceInput{Job: "orders", Full: true})
	require.NoError(t, err)
	_, err = e.c.ExecuteWorkflow(context.Background(), opts, workflows.MaintenanceWorkflowName, workflows.MaintenanceInput{Job: "orders"})
	require.Error(t, err, "a second maintainer of the same repository is refused")
	var res workflows.MaintenanceResult
	require.NoError(t, run.Get(context.Background(), &res))
	assert.Equal(t, "b1", res.Result.Agent)
	assert.True(t, res.Result.Full)

	// A maintenance schedule's tick (ScheduledMaintenance) maintains the repository through
	// a child under the same ID.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	srun, err := e.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: "test-scheduled-maintenance", TaskQueue: workflows.DefaultTaskQueue, WorkflowTaskTimeout: workflows.WorkflowTaskTimeout,
	}, workflows.ScheduledMaintenanceWorkflowName, workflows.ScheduledMaintenanceInput{Job: "orders", Storage: "array-b", Path: ".replctl/repository"})
	require.NoError(t, err)
	var sres workflows.ScheduledResult
	require.NoError(t, srun.Get(ctx, &sres))
	require.True(t, sres.Started)
	require.Equal(t, workflows.PhaseCompleted, sres.Phase)
	var child workflows.MaintenanceResult
	require.NoError(t, e.c.GetWorkflow(ctx, id, "").Get(ctx, &child))
	require.Equal(t, "b1", child.Result.Agent)
	recordHistory(t, e, srun.GetID(), srun.GetRunID(), "scheduled-maintenance")
}

// A test failover opens a writable copy of the current replica at a separate path; writing
// it leaves the replica alone, and a later replication still publishes normally.
func TestTestFailoverCopy(t *testing.T) {
	e := newEnv(t)
	writeDataset(t, e.sourceDir(), 20, 8<<10, 9)
	e.startAgents("a1", "b1")
	st, err := e.wait(e.start("orders"))
	require.NoError(t, err)
	want := treeDigest(t, e.targetLink())

	run, err := e.c.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{ID: workflows.TestFailoverID("orders", "t1"), TaskQueue: workflows.DefaultTaskQueue},
		workflows.TestFailoverWorkflowName, workflows.TestFailoverInput{Job: "orders", Name: "t1", By: "tester@test"})
	require.NoError(t, err)
	var res workflows.TestFailoverResult
	require.NoError(t, run.Get(context.Background(), &res))
	assert.Equal(t, st.Replica.Name, res.Copy.Replica)
	assert.Equal(t, want, treeDigest(t, res.Copy.Path), "the copy equals the replica")
	require.NoError(t, os.WriteFile(filepath.Join(res.Copy.Path, "written-by-test.txt"), []byte("x"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(res.Copy.Path, "d00/s0/f00000.bin"), []byte("changed"), 0o644))
	assert.Equal(t, want, treeDigest(t, e.targetLink()), "the replica is untouched")
	desc, err := e.c.DescribeWorkflowExecution(context.Background(), run.GetID(), run.GetRunID())
	require.NoError(t, err)
	assert.Contains(t, string(desc.GetWorkflowExecutionInfo().GetMemo().GetFields()["summary"].GetData()), "by tester@test", "who tested is recorded")

	_, err = e.wait(e.start("orders"))
	require.NoError(t, err)
	assert.Equal(t, treeDigest(t, e.sourceDir()), treeDigest(t, e.targetLink()))

	run, err = e.c.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{ID: workflows.TestFailoverID("orders", "t1"), TaskQueue: workflows.DefaultTaskQueue},
		workflows.TestFailoverWorkflowName, workflows.TestFailoverInput{Job: "orders", Name: "t1", Cleanup: true})
	require.NoError(t, err)
	require.NoError(t, run.Get(context.Background(), &res))
	_, err = os.Stat(filepath.Join(e.dir, "storage/array-b/.replctl/test-failover"))
	require.NoError(t, err)
	entries, err := os.ReadDir(filepath.Join(e.dir, "storage/array-b/.replctl/test-failover/orders"))
	if err == nil {
		assert.Empty(t, entries, "cleanup removed the copy")
	}
}
