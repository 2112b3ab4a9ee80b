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
			Memo:                  map[string]any{specMemoKey: clearMemo(fp.String())},
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
// those of listed (the server's schedule IDs) with their ID prefix (e.g. of a repository
// no job uses any more).
func listMaintenanceSchedules(ctx context.Context, c client.Client, cfg *config.Config, listed []string) ([]*scheduleView, error) {
	uses := map[string]config.RepositoryUse{}
	var ids []string
	for _, u := range cfg.Repositories() {
		id := workflows.MaintenanceScheduleID(u.Storage, u.Path)
		uses[id] = u
		if u.Maintenance.Cron != config.MaintenanceOff {
			ids = append(ids, id)
		}
	}
	for _, id := range listed {
		if strings.HasPrefix(id, workflows.MaintenanceSchedulePrefix) && !slices.Contains(ids, id) {
			ids = append(ids, id)
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
		views = append(views, newMaintenanceScheduleView(cfg, id, repo, u, inConfig, d))
	}
	return views, nil
}

// newMaintenanceScheduleView is what describe and list show of a maintenance schedule; u is
// its repository in the config when inConfig.
func newMaintenanceScheduleView(cfg *config.Config, id, repo string, u config.RepositoryUse, inConfig bool, d *client.ScheduleDescription) *scheduleView {
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
	return v
}

// repositoryOf is the repository job keeps its images in.
func repositoryOf(cfg *config.Config, job string) (config.RepositoryUse, error) {
	j, err := cfg.Job(job)
	if err != nil {
		return config.RepositoryUse{}, &ExitError{Code: ExitUsage, Err: err}
	}
	for _, u := range cfg.Repositories() {
		if u.Storage == j.Repository.Storage && u.Path == j.Repository.Path {
			return u, nil
		}
	}
	return config.RepositoryUse{}, fmt.Errorf("job %s: repository %s:%s not found in the config", job, j.Repository.Storage, j.Repository.Path)
}

// describeMaintenanceSchedule describes the maintenance schedule of job's repository.
func describeMaintenanceSchedule(ctx context.Context, c client.Client, cfg *config.Config, job string) (*scheduleView, error) {
	u, err := repositoryOf(cfg, job)
	if err != nil {
		return nil, err
	}
	id := workflows.MaintenanceScheduleID(u.Storage, u.Path)
	d, err := c.ScheduleClient().GetHandle(ctx, id).Describe(ctx)
	if err != nil {
		return nil, maintenanceScheduleError(err, job, id, "describe")
	}
	return newMaintenanceScheduleView(cfg, id, u.Storage+":"+u.Path, u, true, d), nil
}

// maintenanceScheduleError explains a failed call on a repository's maintenance schedule.
func maintenanceScheduleError(err error, job, id, action string) error {
	var nf *serviceerror.NotFound
	if errors.As(err, &nf) {
		return notFoundError("the repository of job %s has no maintenance schedule on the server (ID %s): run `replctl schedule sync` (unless its repository.maintenance.cron is off)", job, id)
	}
	return fmt.Errorf("maintenance schedule %s (job %s): %s: %w", id, job, action, err)
}
