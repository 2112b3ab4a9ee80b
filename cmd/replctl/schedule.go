package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/internal/schedsync"
	"github.com/replctl/replctl/workflows"
)

// ScheduleOptions are the arguments and flags of `replctl schedule ...`.
type ScheduleOptions struct {
	// Action is the subcommand: sync, list, describe, pause, unpause, trigger, backfill, delete.
	Action string
	Job    string
	// Note is recorded on pause/unpause (shown by describe and in the Temporal UI).
	Note string
	// Start and End bound a backfill (RFC 3339, "now" or "-DURATION" before now).
	Start, End string
	// Overlap overrides the schedule's overlap policy for trigger and backfill.
	Overlap string
	// DryRun makes sync report what it would change without changing it.
	DryRun bool
	// Wait makes trigger wait for the scheduled run and report how it ended.
	Wait bool
	// Maintenance makes describe, pause, unpause, trigger and delete act on the maintenance
	// schedule of the job's repository instead of the job's own schedule.
	Maintenance bool
	Output      string
}

// NewCmdSchedule is `replctl schedule` and its subcommands. runF, when set, receives the
// parsed options instead of running the action (tests).
func NewCmdSchedule(f *Factory, runF func(*ScheduleOptions) error) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "schedule",
		Short: "Manage the Temporal schedules of jobs (config: jobs[].schedule)",
		Long: "Each job with a `schedule:` in the config gets a Temporal schedule with ID " + workflows.ScheduleID("JOB") + ".\n" +
			"A tick starts workflow " + workflows.ScheduledWorkflowName + ", which runs the job as workflow " + workflows.WorkflowID("JOB") + ":\n" +
			"scheduled and manual runs of a job never overlap (a tick that finds a run going is skipped).\n" +
			"`replctl schedule sync` makes the server's schedules match the config.",
		Args: exactArgs(0, "a subcommand (sync, list, describe, pause, unpause, trigger, backfill, delete)"),
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(
		NewCmdScheduleSync(f, runF),
		NewCmdScheduleList(f, runF),
		NewCmdScheduleDescribe(f, runF),
		NewCmdSchedulePause(f, runF),
		NewCmdScheduleUnpause(f, runF),
		NewCmdScheduleTrigger(f, runF),
		NewCmdScheduleBackfill(f, runF),
		NewCmdScheduleDelete(f, runF),
	)
	return cmd
}

// scheduleRun is what a schedule subcommand does, given the config and a connected client.
type scheduleRun func(ctx context.Context, f *Factory, cfg *config.Config, c client.Client, o *ScheduleOptions) error

// newScheduleCmd is the wiring all schedule subcommands share: a JOB argument when use has
// one, --maintenance on the JOB commands but backfill (a backfill is of a job's runs), -o,
// the checks that need no server, and runF (tests) or run with the config and a client.
// The caller adds the subcommand's own flags to the returned options.
func newScheduleCmd(f *Factory, runF func(*ScheduleOptions) error, use, short string, run scheduleRun) (*cobra.Command, *ScheduleOptions) {
	o := &ScheduleOptions{Action: strings.Fields(use)[0]}
	jobArg := len(strings.Fields(use)) > 1
	c := &cobra.Command{
		Use:   use,
		Short: short,
		RunE: func(c *cobra.Command, args []string) error {
			if jobArg {
				o.Job = args[0]
			}
			if err := checkOutput(o.Output); err != nil {
				return err
			}
			if err := o.check(); err != nil {
				return err
			}
			if runF != nil {
				return runF(o)
			}
			ctx := c.Context()
			cfg, err := f.Config()
			if err != nil {
				return err
			}
			cl, err := f.Client(ctx)
			if err != nil {
				return err
			}
			defer cl.Close()
			return run(ctx, f, cfg, cl, o)
		},
	}
	if jobArg {
		c.Args = exactArgs(1, "one job name")
		c.ValidArgsFunction = completeJobs(f, true)
		if o.Action != "backfill" {
			c.Flags().BoolVar(&o.Maintenance, "maintenance", false, "act on the maintenance schedule of the job's repository")
		}
	} else {
		c.Args = exactArgs(0, "no arguments")
	}
	addOutputFlag(c, &o.Output)
	return c, o
}

// check validates flag values that do not need the server.
func (o *ScheduleOptions) check() error {
	if o.Overlap != "" {
		if _, err := schedsync.OverlapPolicy(o.Overlap); err != nil {
			return usageError("--overlap: %v", err)
		}
	}
	if o.Action == "backfill" {
		if o.Start == "" {
			return usageError("schedule backfill needs --start (RFC 3339 time or -DURATION, e.g. --start -6h)")
		}
		start, err := parseWhen(o.Start, time.Now())
		if err != nil {
			return usageError("--start: %v", err)
		}
		end, err := parseWhen(o.End, time.Now())
		if err != nil {
			return usageError("--end: %v", err)
		}
		if !start.Before(end) {
			return usageError("--start %s is not before --end %s", start.Format(time.RFC3339), end.Format(time.RFC3339))
		}
	}
	return nil
}

// parseWhen reads an RFC 3339 time, "now", or "-DURATION" (before now).
func parseWhen(s string, now time.Time) (time.Time, error) {
	switch {
	case s == "now":
		return now, nil
	case strings.HasPrefix(s, "-"):
		d, err := time.ParseDuration(s[1:])
		if err != nil {
			return time.Time{}, fmt.Errorf("%q: want -DURATION such as -6h", s)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q: want an RFC 3339 time such as 2025-01-31T02:00:00Z, now, or -DURATION", s)
	}
	return t, nil
}

// scheduleHandle is the schedule o acts on: the job's, or with --maintenance the
// maintenance schedule of the job's repository.
func scheduleHandle(ctx context.Context, c client.Client, cfg *config.Config, o *ScheduleOptions) (client.ScheduleHandle, error) {
	if !o.Maintenance {
		return c.ScheduleClient().GetHandle(ctx, workflows.ScheduleID(o.Job)), nil
	}
	u, err := repositoryOf(cfg, o.Job)
	if err != nil {
		return nil, err
	}
	return c.ScheduleClient().GetHandle(ctx, workflows.MaintenanceScheduleID(u.Storage, u.Path)), nil
}

// reportScheduleAction ends pause, unpause, backfill and delete: it explains err, or prints
// msg (with -o json, as an object that names the schedule).
func reportScheduleAction(f *Factory, o *ScheduleOptions, id string, err error, msg string) error {
	if err != nil {
		return scheduleActionError(o, id, err)
	}
	return f.Render(o.Output, scheduleActionJSON(o, id, msg), func(w io.Writer) { fmt.Fprintln(w, msg) })
}

// scheduleActionJSON is the -o json output of an action on a schedule.
func scheduleActionJSON(o *ScheduleOptions, id, msg string) map[string]string {
	return map[string]string{"job": o.Job, "schedule_id": id, "action": o.Action, "message": msg}
}

// scheduleActionError explains a failed call on the schedule o acts on (schedule id).
func scheduleActionError(o *ScheduleOptions, id string, err error) error {
	if o.Maintenance {
		return maintenanceScheduleError(err, o.Job, id, o.Action)
	}
	return scheduleError(err, o.Job, o.Action)
}

// scheduleError explains a failed call on a job's schedule.
func scheduleError(err error, job, action string) error {
	var nf *serviceerror.NotFound
	if errors.As(err, &nf) {
		return notFoundError("job %s has no schedule on the server (ID %s): give the job a `schedule:` in the config and run `replctl schedule sync`", job, workflows.ScheduleID(job))
	}
	return fmt.Errorf("schedule %s of job %s: %s: %w", workflows.ScheduleID(job), job, action, err)
}
