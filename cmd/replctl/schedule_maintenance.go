package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

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

// listMaintenanceSchedules describes the maintenance schedules the config asks for and
// those the server lists with their ID prefix (e.g. of a repository no job uses any more).
func listMaintenanceSchedules(ctx context.Context, c client.Client, cfg *config.Config) ([]*scheduleView, error) {
	uses := map[string]config.RepositoryUse{}
	var ids []string
	for _, u := range cfg.Repositories() {
		id := workflows.MaintenanceScheduleID(u.Storage, u.Path)
		uses[id] = u
		if u.Maintenance.Cron != config.MaintenanceOff {
			ids = append(ids, id)
		}
	}
	it, err := c.ScheduleClient().List(ctx, client.ScheduleListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list schedules: %w", err)
	}
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			return nil, fmt.Errorf("list schedules: %w", err)
		}
		if strings.HasPrefix(e.ID, workflows.MaintenanceSchedulePrefix) && !slices.Contains(ids, e.ID) {
			ids = append(ids, e.ID)
		}
	}
	var views []*scheduleView
	for _, id := range ids {
		u, inConfig := uses[id]
		repo := u.Storage + ":" + u.Path
		if !inConfig {
			repo = "(not in the config)"
		}
		d, err := c.ScheduleClient().GetHandle(ctx, id).Describe(ctx)
		var nf *serviceerror.NotFound
		if errors.As(err, &nf) {
			if inConfig {
				views = append(views, &scheduleView{Job: u.Jobs[0], ScheduleID: id, Repository: repo, InConfig: true, Spec: "(not on the server: run `replctl schedule sync`)"})
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("describe schedule %s: %w", id, err)
		}
		v := newScheduleView(nil, "", d)
		v.ScheduleID, v.Repository = id, repo
		var fp specFingerprint
		if json.Unmarshal([]byte(actionFingerprint(d.Schedule.Action)), &fp) == nil {
			v.Job = fp.Job
		}
		if inConfig && u.Maintenance.Cron != config.MaintenanceOff {
			want, fp := desiredMaintenanceSchedule(cfg, u)
			v.InConfig, v.Differences = true, scheduleDiff(d, want, fp)
			v.Synced = len(v.Differences) == 0
		}
		views = append(views, v)
	}
	return views, nil
}
