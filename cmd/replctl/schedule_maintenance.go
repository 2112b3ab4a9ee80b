package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/internal/schedsync"
	"github.com/replctl/replctl/workflows"
)

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
	if fp, ok := schedsync.ReadFingerprint(d.Schedule.Action); ok {
		v.Job = fp.Job
	}
	if inConfig && u.Maintenance.Cron != config.MaintenanceOff {
		v.InConfig, v.Differences = true, schedsync.Differences(d, schedsync.MaintenanceSchedule(cfg, u))
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
