package main

import (
	"context"
	"errors"
	"fmt"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/workflows"
)

// desiredMaintenanceSchedule is the maintenance schedule of repository u: owned by the first
// job using it, whose target order does the work. Overlap is skip: one maintainer at a time.
func desiredMaintenanceSchedule(cfg *config.Config, u config.RepositoryUse) (client.ScheduleOptions, specFingerprint) {
	m := u.Maintenance
	fp := specFingerprint{Cron: m.Cron, TimeZone: m.TimeZone, Overlap: config.DefaultOverlap, TaskQueue: cfg.Temporal.TaskQueue,
		Workflow: workflows.ScheduledMaintenanceWorkflowName, Job: u.Jobs[0], Full: !m.Quick}
	id := workflows.MaintenanceScheduleID(u.Storage, u.Path)
	repo := u.Storage + ":" + u.Path
	kind := "full"
	if m.Quick {
		kind = "quick"
	}
	return client.ScheduleOptions{
		ID:   id,
		Spec: client.ScheduleSpec{CronExpressions: []string{m.Cron}, TimeZoneName: m.TimeZone},
		Action: &client.ScheduleWorkflowAction{
			ID:                    id,
			Workflow:              workflows.ScheduledMaintenanceWorkflowName,
			Args:                  []any{workflows.ScheduledMaintenanceInput{Job: u.Jobs[0], Storage: u.Storage, Path: u.Path, Full: !m.Quick}},
			TaskQueue:             cfg.Temporal.TaskQueue,
			WorkflowTaskTimeout:   workflows.WorkflowTaskTimeout,
			Memo:                  map[string]any{specMemoKey: fp.String()},
			TypedSearchAttributes: temporal.NewSearchAttributes(workflows.AttrJob.ValueSet(u.Jobs[0])),
			StaticSummary:         fmt.Sprintf("scheduled %s maintenance of repository %s (job %s)", kind, repo, u.Jobs[0]),
		},
		Overlap: enums.SCHEDULE_OVERLAP_POLICY_SKIP,
		Memo:    map[string]any{"repository": repo, "job": u.Jobs[0]},
	}, fp
}

// syncMaintenanceSchedules gives every repository of the config its maintenance schedule
// (or deletes it when the config says cron: off). Stale ones are deleted by syncSchedules.
func syncMaintenanceSchedules(ctx context.Context, sc client.ScheduleClient, cfg *config.Config, dryRun bool) ([]scheduleChange, []error) {
	var changes []scheduleChange
	var errs []error
	for _, u := range cfg.Repositories() {
		id := workflows.MaintenanceScheduleID(u.Storage, u.Path)
		base := scheduleChange{Job: u.Jobs[0], ScheduleID: id, Repository: u.Storage + ":" + u.Path}
		h := sc.GetHandle(ctx, id)
		desc, err := h.Describe(ctx)
		var nf *serviceerror.NotFound
		if errors.As(err, &nf) {
			desc, err = nil, nil
		}
		var ch scheduleChange
		switch {
		case err != nil:
			ch = base
			ch.Change = "describe"
		case u.Maintenance.Cron == config.MaintenanceOff:
			if desc == nil {
				continue
			}
			ch = base
			ch.Change, ch.Detail = "deleted", "repository maintenance is off in the config"
			if !dryRun {
				err = h.Delete(ctx)
			}
		default:
			want, fp := desiredMaintenanceSchedule(cfg, u)
			ch, err = upsertSchedule(ctx, sc, h, desc, want, fp, base, dryRun)
			if ch.Change == "created" || ch.Change == "unchanged" {
				ch.Detail = "repository maintenance (" + kindOf(fp) + "), " + ch.Detail
			}
		}
		if err != nil {
			ch.Error = err.Error()
			errs = append(errs, fmt.Errorf("schedule %s: %s: %w", id, ch.Change, err))
		}
		changes = append(changes, ch)
	}
	return changes, errs
}

func kindOf(fp specFingerprint) string {
	if fp.Full {
		return "full"
	}
	return "quick"
}
