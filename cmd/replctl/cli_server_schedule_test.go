package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/workflows"
)

// TestCLIScheduleSyncCreatesKeepsAndDeletes: schedule sync creates, keeps and deletes schedules.
func TestCLIScheduleSyncCreatesKeepsAndDeletes(t *testing.T) {
	e := newCLIEnv(t)
	ctx := context.Background()
	// A leftover replctl schedule of a job that is gone, a maintenance schedule under the
	// old (unescaped) ID of the config's repository, and somebody else's schedule.
	legacy := workflows.LegacyMaintenanceScheduleID("array-b", ".replctl/repository")
	for _, id := range []string{workflows.ScheduleID("gone"), legacy, "someone-else"} {
		_, err := e.c.ScheduleClient().Create(ctx, client.ScheduleOptions{
			ID: id, Spec: client.ScheduleSpec{CronExpressions: []string{"0 0 1 1 *"}}, Paused: true,
			Action: &client.ScheduleWorkflowAction{Workflow: "Nothing", TaskQueue: "nowhere"},
		})
		require.NoError(t, err)
	}
	var changes []scheduleChange
	eventually(t, 10*time.Second, "sync deleting the stale schedule (schedule list lags)", func() error {
		changes = nil
		out, errOut, err := e.cli("schedule", "sync", "-o", "json")
		if err != nil {
			return fmt.Errorf("%v: %s", err, errOut)
		}
		if err := json.Unmarshal([]byte(out), &changes); err != nil {
			return err
		}
		gone, replaced := false, false
		for _, ch := range changes {
			gone = gone || ch.ScheduleID == workflows.ScheduleID("gone") && ch.Change == "deleted"
			replaced = replaced || ch.ScheduleID == legacy && ch.Change == "deleted" &&
				ch.Detail == "repository maintenance: replaced by "+workflows.MaintenanceScheduleID("array-b", ".replctl/repository")+" (IDs now escape storage and path)"
		}
		if gone && replaced {
			return nil
		}
		return fmt.Errorf("changes %+v", changes)
	})
	var orders []string
	for _, ch := range changes {
		if ch.Job == "orders" {
			orders = append(orders, ch.Change)
		}
	}
	require.Subset(t, []string{"created", "unchanged"}, orders)
	_, err := e.c.ScheduleClient().GetHandle(ctx, "someone-else").Describe(ctx)
	require.NoError(t, err, "a schedule without replctl's ID prefix is left alone")

	var v scheduleView
	e.cliJSON(&v, "schedule", "describe", "orders", "-o", "json")
	require.Equal(t, "30 3 * * *", v.Cron)
	require.Contains(t, v.Spec, "min=30 hour=3", "the server compiled the cron string")
	require.Equal(t, "Europe/Berlin", v.TimeZone)
	require.Equal(t, "buffer_one", v.Overlap)
	require.Equal(t, "1m0s", v.CatchupWindow)
	require.Equal(t, "10s", v.Jitter)
	require.True(t, v.PauseOnFailure)
	require.Equal(t, workflows.ScheduledWorkflowName, v.Workflow)
	require.Equal(t, "replctl", v.TaskQueue)
	require.True(t, v.Synced, "differences: %v", v.Differences)
	require.NotEmpty(t, v.Next)

	out, _, err := e.cli("schedule", "sync")
	require.NoError(t, err)
	require.Regexp(t, `unchanged\s+orders\s+replctl-schedule-orders`, out)

	// An operator's pause survives a sync.
	out, _, err = e.cli("schedule", "pause", "orders", "--note", "array maintenance")
	require.NoError(t, err)
	require.Contains(t, out, "paused schedule replctl-schedule-orders")
	e.cliJSON(&changes, "schedule", "sync", "-o", "json")
	require.Contains(t, changes, scheduleChange{Job: "orders", ScheduleID: workflows.ScheduleID("orders"), Change: "unchanged", Detail: specSummary(fingerprintOf(e.cfg.Jobs[0].Schedule, "replctl")), Paused: true})
	var views []*scheduleView
	e.cliJSON(&views, "schedule", "list", "-o", "json")
	require.Len(t, views, 2, "the job's schedule and the shared repository's maintenance schedule")
	require.True(t, views[0].Paused)
	require.Equal(t, "array maintenance", views[0].Note)
	require.Equal(t, "array-b:.replctl/repository", views[1].Repository)
	require.Equal(t, "orders", views[1].Job, "the first job using the repository owns its maintenance")
	require.Equal(t, "@daily", views[1].Cron)
	require.True(t, views[1].Synced, "differences: %v", views[1].Differences)
	_, _, err = e.cli("schedule", "unpause", "orders")
	require.NoError(t, err)
	out, _, err = e.cli("schedule", "list")
	require.NoError(t, err)
	require.Regexp(t, `orders\s+30 3 \* \* \*\s+active`, out)
	require.Regexp(t, `maintenance array-b:.replctl/repository \(orders\)\s+@daily\s+active\s+-\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+in sync`, out)
}

// TestCLIScheduleTriggerMakesRunAndReplica: schedule trigger makes a run and a replica.
func TestCLIScheduleTriggerMakesRunAndReplica(t *testing.T) {
	e := newCLIEnv(t)
	e.scheduledRun() // syncs, triggers and checks the run completed

	var reps replicasView
	e.cliJSON(&reps, "replicas", "orders", "-o", "json")
	require.Len(t, reps.Replicas, 1)
	r := reps.Replicas[0]
	require.True(t, r.Current)
	require.NotNil(t, r.Verified)
	require.True(t, *r.Verified)
	require.Equal(t, "b1", r.Agent)
	require.EqualValues(t, 12, r.Files)
	require.Greater(t, r.Bytes, int64(12*4096))
	require.Greater(t, r.AddedBytes, int64(0))
	out, _, err := e.cli("replicas", "orders")
	require.NoError(t, err)
	require.Regexp(t, `\*\s+`+r.Name+`.*yes\s+b1`, out)
}

// TestCLIScheduleSyncOwnsMaintenanceSchedule: schedule sync owns the repository maintenance schedule.
func TestCLIScheduleSyncOwnsMaintenanceSchedule(t *testing.T) {
	e := newCLIEnv(t)
	e.scheduledRun() // syncs, and gives the repository an image for the maintenance to work on
	ctx := context.Background()
	id := workflows.MaintenanceScheduleID("array-b", ".replctl/repository")
	d, err := e.c.ScheduleClient().GetHandle(ctx, id).Describe(ctx)
	require.NoError(t, err, "the first sync created the maintenance schedule of the shared repository")
	a, ok := d.Schedule.Action.(*client.ScheduleWorkflowAction)
	require.True(t, ok)
	require.Equal(t, workflows.ScheduledMaintenanceWorkflowName, a.Workflow)
	require.Equal(t, enums.SCHEDULE_OVERLAP_POLICY_SKIP, d.Schedule.Policy.Overlap)

	// Both jobs share the repository, so both say when; the schedule fires by itself.
	e.writeConfig(func(c *config.Config) {
		ordersSchedule(c)
		for i := range c.Jobs {
			c.Jobs[i].Repository.Maintenance = config.Maintenance{Cron: "@every 2s", Quick: true}
		}
	})
	var changes []scheduleChange
	e.cliJSON(&changes, "schedule", "sync", "-o", "json")
	require.Contains(t, changes, scheduleChange{Job: "orders", ScheduleID: id, Repository: "array-b:.replctl/repository", Change: "updated",
		Detail: `cron "@daily" -> "@every 2s"; full "true" -> "false"`})
	eventually(t, 30*time.Second, "a scheduled maintenance completing", func() error {
		desc, err := e.c.DescribeWorkflowExecution(ctx, workflows.MaintenanceID("array-b", ".replctl/repository"), "")
		if err != nil {
			return err
		}
		if st := desc.WorkflowExecutionInfo.Status; st != enums.WORKFLOW_EXECUTION_STATUS_COMPLETED {
			return fmt.Errorf("maintenance %s", st)
		}
		return nil
	})

	// The maintenance schedule by job name: describe, pause, trigger (a paused one too).
	var v scheduleView
	e.cliJSON(&v, "schedule", "describe", "ticker", "--maintenance", "-o", "json")
	require.Equal(t, id, v.ScheduleID)
	require.Equal(t, "orders", v.Job, "owned by the first job using the repository")
	require.True(t, v.Synced, "differences: %v", v.Differences)
	out, _, err := e.cli("schedule", "pause", "orders", "--maintenance")
	require.NoError(t, err)
	require.Contains(t, out, "paused schedule "+id)
	var res struct {
		workflows.ScheduledResult
		Error string `json:"error"`
	}
	e.cliJSON(&res, "schedule", "trigger", "orders", "--maintenance", "--wait", "--overlap", "allow_all", "-o", "json")
	require.Empty(t, res.Error)
	if res.Started { // else a tick's maintenance was still going: skipped, which is right too
		require.Equal(t, workflows.PhaseCompleted, res.Phase)
	}

	e.writeConfig(func(c *config.Config) {
		ordersSchedule(c)
		for i := range c.Jobs {
			c.Jobs[i].Repository.Maintenance = config.Maintenance{Cron: config.MaintenanceOff}
		}
	})
	e.cliJSON(&changes, "schedule", "sync", "-o", "json")
	require.Contains(t, changes, scheduleChange{Job: "orders", ScheduleID: id, Repository: "array-b:.replctl/repository", Change: "deleted", Detail: "repository maintenance is off in the config"})
	_, _, err = e.cli("schedule", "describe", "orders", "--maintenance")
	require.Error(t, err)
	require.Contains(t, err.Error(), "has no maintenance schedule on the server")
	e.writeConfig(ordersSchedule)
	out, _, err = e.cli("schedule", "sync")
	require.NoError(t, err)
	require.Regexp(t, `created\s+orders\s+`+id+`\s+repository maintenance \(full\), cron "@daily" UTC`, out)
}

// TestCLIScheduleFiresByItself: a schedule fires by itself.
func TestCLIScheduleFiresByItself(t *testing.T) {
	e := newCLIEnv(t)
	e.syncSchedules() // the orders schedule as the config had it
	// keep_within keeps every replica of the last hour although replicas is 1.
	e.writeConfig(func(c *config.Config) {
		ordersSchedule(c)
		cliJob(c, "orders").Schedule.Cron = "45 3 * * *"
		ticker := cliJob(c, "ticker")
		ticker.Schedule = &config.Schedule{Cron: "@every 2s"}
		ticker.Retention = config.Retention{Replicas: 1, KeepWithin: time.Hour}
	})
	var changes []scheduleChange
	e.cliJSON(&changes, "schedule", "sync", "-o", "json")
	require.Contains(t, changes, scheduleChange{Job: "ticker", ScheduleID: workflows.ScheduleID("ticker"), Change: "created", Detail: `cron "@every 2s" UTC, overlap skip`})
	require.Contains(t, changes, scheduleChange{Job: "orders", ScheduleID: workflows.ScheduleID("orders"), Change: "updated", Detail: `cron "30 3 * * *" -> "45 3 * * *"`})

	eventually(t, 40*time.Second, "the ticker schedule publishing replicas, all kept by keep_within", func() error {
		var reps replicasView
		out, _, err := e.cli("replicas", "ticker", "-o", "json")
		if err != nil {
			return err
		}
		if err := json.Unmarshal([]byte(out), &reps); err != nil {
			return err
		}
		if len(reps.Replicas) < 3 {
			return fmt.Errorf("%d replicas", len(reps.Replicas))
		}
		return nil
	})
	_, _, err := e.cli("schedule", "pause", "ticker")
	require.NoError(t, err)
	var v scheduleView
	e.cliJSON(&v, "schedule", "describe", "ticker", "-o", "json")
	require.True(t, v.Paused)
	require.Equal(t, "@every 2s", v.Spec)
	require.GreaterOrEqual(t, v.Actions, 1)
	require.NotEmpty(t, v.Recent)
	require.True(t, strings.HasPrefix(v.Recent[0].WorkflowID, workflows.ScheduleID("ticker")))

	var st statusView
	e.cliJSON(&st, "status", "ticker", "-o", "json")
	require.NotNil(t, st.RPO)
	require.Equal(t, 2*time.Second, st.RPO.Interval)

	out, _, err := e.cli("schedule", "delete", "ticker")
	require.NoError(t, err)
	require.Contains(t, out, "would recreate it")
	_, _, err = e.cli("schedule", "describe", "ticker")
	require.Error(t, err)
	require.Contains(t, err.Error(), "schedule sync")

	out, _, err = e.cli("schedule", "backfill", "orders", "--start", "-1h")
	require.NoError(t, err)
	require.Contains(t, out, "backfill of schedule replctl-schedule-orders")
}
