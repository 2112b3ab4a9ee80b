package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"

	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/workflows"
)

// scheduleIDPrefix marks the schedules replctl owns: sync deletes only these.
var scheduleIDPrefix = workflows.ScheduleID("")

// specMemoKey is the memo field of a schedule's workflow action that holds the config the
// schedule was last synced from. The server compiles cron strings into calendars, so the
// described spec cannot be compared with the config; this fingerprint can. It lives on the
// action because, unlike the schedule's own memo, the action can be updated.
const specMemoKey = "replctl_schedule"

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
	sub := func(use, short string, jobArg bool, setup func(*cobra.Command, *ScheduleOptions)) {
		o := &ScheduleOptions{Action: strings.Fields(use)[0]}
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
				return runSchedule(c.Context(), f, o)
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
		if setup != nil {
			setup(c, o)
		}
		cmd.AddCommand(c)
	}
	sub("sync", "Create, update and delete schedules so the server matches the config", false, func(c *cobra.Command, o *ScheduleOptions) {
		c.Long = "Create, update and delete the Temporal schedules of the config's jobs: cron, time zone, overlap policy\n" +
			"(default skip), catch-up window, jitter and pause-on-failure. Only schedules whose ID starts with\n" +
			scheduleIDPrefix + " are deleted. A pause set by `replctl schedule pause` is kept. Idempotent."
		c.Flags().BoolVar(&o.DryRun, "dry-run", false, "only print what would change")
	})
	sub("list", "List replctl's schedules: spec, paused, last and next action", false, nil)
	sub("describe JOB", "Show a job's schedule: spec, policies, state, recent and next actions", true, nil)
	sub("pause JOB", "Pause a job's schedule (no ticks until unpause)", true, func(c *cobra.Command, o *ScheduleOptions) {
		c.Flags().StringVar(&o.Note, "note", "", "why (shown by describe and in the Temporal UI)")
	})
	sub("unpause JOB", "Unpause a job's schedule", true, func(c *cobra.Command, o *ScheduleOptions) {
		c.Flags().StringVar(&o.Note, "note", "", "why (shown by describe and in the Temporal UI)")
	})
	sub("trigger JOB", "Take the schedule's action now (a run of the job, unless one is going)", true, func(c *cobra.Command, o *ScheduleOptions) {
		c.Flags().StringVar(&o.Overlap, "overlap", "", "overlap policy for this trigger (default: the schedule's)")
		c.Flags().BoolVarP(&o.Wait, "wait", "w", false, "wait for the triggered run; the exit code tells how it ended")
	})
	sub("backfill JOB", "Take the actions the schedule would have taken between --start and --end, now", true, func(c *cobra.Command, o *ScheduleOptions) {
		c.Long = "Take the schedule's actions for the times between --start and --end as if that time passed now.\n" +
			"With the default overlap policy skip, one run covers the whole range (a replica is a full copy)."
		c.Flags().StringVar(&o.Start, "start", "", "start of the range: RFC 3339 time, or -DURATION before now (e.g. -6h)")
		c.Flags().StringVar(&o.End, "end", "now", "end of the range: RFC 3339 time, now, or -DURATION")
		c.Flags().StringVar(&o.Overlap, "overlap", "", "overlap policy for the backfill (default: the schedule's)")
	})
	sub("delete JOB", "Delete a job's schedule (sync recreates it while the config has one)", true, nil)
	return cmd
}

// check validates flag values that do not need the server.
func (o *ScheduleOptions) check() error {
	if o.Overlap != "" {
		if _, err := overlapPolicy(o.Overlap); err != nil {
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

func overlapPolicy(s string) (enums.ScheduleOverlapPolicy, error) {
	switch s {
	case "skip":
		return enums.SCHEDULE_OVERLAP_POLICY_SKIP, nil
	case "buffer_one":
		return enums.SCHEDULE_OVERLAP_POLICY_BUFFER_ONE, nil
	case "buffer_all":
		return enums.SCHEDULE_OVERLAP_POLICY_BUFFER_ALL, nil
	case "cancel_other":
		return enums.SCHEDULE_OVERLAP_POLICY_CANCEL_OTHER, nil
	case "terminate_other":
		return enums.SCHEDULE_OVERLAP_POLICY_TERMINATE_OTHER, nil
	case "allow_all":
		return enums.SCHEDULE_OVERLAP_POLICY_ALLOW_ALL, nil
	}
	return 0, fmt.Errorf("%q is not an overlap policy (want one of %s)", s, strings.Join(config.OverlapPolicies, ", "))
}

// overlapName is the config spelling of a Temporal overlap policy.
func overlapName(p enums.ScheduleOverlapPolicy) string {
	for _, n := range config.OverlapPolicies {
		if q, _ := overlapPolicy(n); q == p {
			return n
		}
	}
	return enumName(p.String(), "SCHEDULE_OVERLAP_POLICY_")
}

func runSchedule(ctx context.Context, f *Factory, o *ScheduleOptions) error {
	cfg, err := f.Config()
	if err != nil {
		return err
	}
	c, err := f.Client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	switch o.Action {
	case "sync":
		changes, err := syncSchedules(ctx, c, cfg, o.DryRun)
		if o.Output == "json" {
			if jerr := f.PrintJSON(changes); jerr != nil {
				return jerr
			}
		} else {
			printScheduleChanges(f.Out, changes, o.DryRun)
		}
		return err
	case "list":
		views, err := listSchedules(ctx, c, cfg)
		if err != nil {
			return err
		}
		if o.Output == "json" {
			return f.PrintJSON(views)
		}
		printScheduleList(f.Out, views)
		return nil
	case "describe":
		describe := describeSchedule
		if o.Maintenance {
			describe = describeMaintenanceSchedule
		}
		v, err := describe(ctx, c, cfg, o.Job)
		if err != nil {
			return err
		}
		if o.Output == "json" {
			return f.PrintJSON(v)
		}
		printScheduleView(f.Out, v)
		return nil
	}

	h := c.ScheduleClient().GetHandle(ctx, workflows.ScheduleID(o.Job))
	if o.Maintenance {
		u, err := repositoryOf(cfg, o.Job)
		if err != nil {
			return err
		}
		h = c.ScheduleClient().GetHandle(ctx, workflows.MaintenanceScheduleID(u.Storage, u.Path))
	}
	overlap := enums.SCHEDULE_OVERLAP_POLICY_UNSPECIFIED
	if o.Overlap != "" {
		overlap, _ = overlapPolicy(o.Overlap) // checked in o.check
	}
	var msg string
	switch o.Action {
	case "pause":
		note := o.Note
		if note == "" {
			note = "paused with replctl schedule pause"
		}
		err = h.Pause(ctx, client.SchedulePauseOptions{Note: note})
		msg = fmt.Sprintf("paused schedule %s of job %s; `replctl schedule unpause %s` resumes it", h.GetID(), o.Job, o.Job)
	case "unpause":
		note := o.Note
		if note == "" {
			note = "unpaused with replctl schedule unpause"
		}
		err = h.Unpause(ctx, client.ScheduleUnpauseOptions{Note: note})
		msg = fmt.Sprintf("unpaused schedule %s of job %s", h.GetID(), o.Job)
	case "trigger":
		return triggerSchedule(ctx, f, c, h, o, overlap)
	case "backfill":
		now := time.Now()
		start, _ := parseWhen(o.Start, now) // checked in o.check
		end, _ := parseWhen(o.End, now)
		err = h.Backfill(ctx, client.ScheduleBackfillOptions{Backfill: []client.ScheduleBackfill{{Start: start, End: end, Overlap: overlap}}})
		msg = fmt.Sprintf("backfill of schedule %s for %s .. %s requested; `replctl list --job %s` shows the runs", h.GetID(), start.Format(time.RFC3339), end.Format(time.RFC3339), o.Job)
	case "delete":
		err = h.Delete(ctx)
		msg = fmt.Sprintf("deleted schedule %s of job %s", h.GetID(), o.Job)
		if j, jerr := cfg.Job(o.Job); jerr == nil && j.Schedule != nil {
			msg += "; the config still has a schedule for it: `replctl schedule sync` would recreate it"
		}
	default:
		return usageError("unknown schedule action %q", o.Action)
	}
	if err != nil && o.Maintenance {
		return maintenanceScheduleError(err, o.Job, h.GetID(), o.Action)
	}
	if err != nil {
		return scheduleError(err, o.Job, o.Action)
	}
	if o.Output == "json" {
		return f.PrintJSON(map[string]string{"job": o.Job, "schedule_id": h.GetID(), "action": o.Action, "message": msg})
	}
	fmt.Fprintln(f.Out, msg)
	return nil
}

// scheduleError explains a failed call on a job's schedule.
func scheduleError(err error, job, action string) error {
	var nf *serviceerror.NotFound
	if errors.As(err, &nf) {
		return notFoundError("job %s has no schedule on the server (ID %s): give the job a `schedule:` in the config and run `replctl schedule sync`", job, workflows.ScheduleID(job))
	}
	return fmt.Errorf("schedule %s of job %s: %s: %w", workflows.ScheduleID(job), job, action, err)
}

// triggerSchedule takes the schedule's action now and, with o.Wait, waits for the
// ScheduledReplication workflow it started and reports its run.
func triggerSchedule(ctx context.Context, f *Factory, c client.Client, h client.ScheduleHandle, o *ScheduleOptions, overlap enums.ScheduleOverlapPolicy) error {
	before, err := h.Describe(ctx)
	if err != nil {
		return triggerError(o, h.GetID(), err)
	}
	known := map[string]bool{}
	for _, a := range before.Info.RecentActions {
		if a.StartWorkflowResult != nil {
			known[a.StartWorkflowResult.WorkflowID+"/"+a.StartWorkflowResult.FirstExecutionRunID] = true
		}
	}
	if err := h.Trigger(ctx, client.ScheduleTriggerOptions{Overlap: overlap}); err != nil {
		return triggerError(o, h.GetID(), err)
	}
	fmt.Fprintf(f.ErrOut, "triggered schedule %s of job %s\n", h.GetID(), o.Job)
	if !o.Wait {
		if !o.Maintenance {
			fmt.Fprintf(f.ErrOut, "follow it with: replctl status %s --watch\n", o.Job)
		}
		if o.Output == "json" {
			return f.PrintJSON(map[string]string{"job": o.Job, "schedule_id": h.GetID(), "action": o.Action, "message": "triggered schedule " + h.GetID() + " of job " + o.Job})
		}
		return nil
	}
	// The schedule starts the trigger workflow asynchronously: wait for it to show up.
	var started *client.ScheduleWorkflowExecution
	deadline := time.Now().Add(30 * time.Second)
	for started == nil {
		d, err := h.Describe(ctx)
		if err != nil {
			return triggerError(o, h.GetID(), err)
		}
		for _, a := range d.Info.RecentActions {
			if r := a.StartWorkflowResult; r != nil && !known[r.WorkflowID+"/"+r.FirstExecutionRunID] {
				started = r
			}
		}
		if started != nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("schedule %s of job %s was triggered but started no workflow within 30s (overlap policy %s may have skipped it; is it paused?): see `replctl schedule describe %s`",
				h.GetID(), o.Job, overlapName(d.Schedule.Policy.Overlap), o.Job)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	fmt.Fprintf(f.ErrOut, "scheduled workflow %s started; waiting for the run of job %s\n", started.WorkflowID, o.Job)
	var res workflows.ScheduledResult
	runErr := c.GetWorkflow(ctx, started.WorkflowID, started.FirstExecutionRunID).Get(ctx, &res)
	out := struct {
		Job        string `json:"job"`
		WorkflowID string `json:"scheduled_workflow_id"`
		workflows.ScheduledResult
		Error string `json:"error,omitempty"`
	}{Job: o.Job, WorkflowID: started.WorkflowID, ScheduledResult: res}
	if runErr != nil {
		out.Error = runErr.Error()
	}
	if o.Output == "json" {
		if err := f.PrintJSON(out); err != nil {
			return err
		}
	} else {
		switch {
		case runErr != nil:
			fmt.Fprintf(f.Out, "scheduled run of job %s failed: %v\n", o.Job, runErr)
		case !res.Started:
			fmt.Fprintf(f.Out, "tick skipped: %s\n", res.Reason)
		default:
			fmt.Fprintf(f.Out, "scheduled run of job %s: run %s %s\n", o.Job, res.RunID, res.Phase)
		}
	}
	if runErr != nil {
		return &ExitError{Code: ExitRunFailed, Err: fmt.Errorf("scheduled run of job %s failed: %w; see `replctl history %s`", o.Job, runErr, o.Job)}
	}
	return nil
}

func triggerError(o *ScheduleOptions, id string, err error) error {
	if o.Maintenance {
		return maintenanceScheduleError(err, o.Job, id, "trigger")
	}
	return scheduleError(err, o.Job, "trigger")
}

// specFingerprint is what a schedule was synced from (stored in the action's memo).
type specFingerprint struct {
	Cron           string `json:"cron"`
	TimeZone       string `json:"time_zone"`
	Overlap        string `json:"overlap"`
	CatchupWindow  string `json:"catchup_window,omitempty"`
	Jitter         string `json:"jitter,omitempty"`
	PauseOnFailure bool   `json:"pause_on_failure,omitempty"`
	TaskQueue      string `json:"task_queue"`
	Workflow       string `json:"workflow"`
	// Job and Full: the owner job and kind of a repository's maintenance schedule.
	Job  string `json:"job,omitempty"`
	Full bool   `json:"full,omitempty"`
}

func (s specFingerprint) String() string {
	b, _ := json.Marshal(s)
	return string(b)
}

func fingerprintOf(s *config.Schedule, taskQueue string) specFingerprint {
	fp := specFingerprint{Cron: s.Cron, TimeZone: s.TimeZone, Overlap: s.Overlap, PauseOnFailure: s.PauseOnFailure, TaskQueue: taskQueue, Workflow: workflows.ScheduledWorkflowName}
	if fp.TimeZone == "" {
		fp.TimeZone = config.DefaultTimeZone
	}
	if fp.Overlap == "" {
		fp.Overlap = config.DefaultOverlap
	}
	if s.CatchupWindow > 0 {
		fp.CatchupWindow = s.CatchupWindow.String()
	}
	if s.Jitter > 0 {
		fp.Jitter = s.Jitter.String()
	}
	return fp
}

// desiredSchedule is the schedule a job's config asks for.
func desiredSchedule(cfg *config.Config, j *config.Job) (client.ScheduleOptions, specFingerprint, error) {
	s := j.Schedule
	fp := fingerprintOf(s, cfg.Temporal.TaskQueue)
	overlap, err := overlapPolicy(fp.Overlap)
	if err != nil {
		return client.ScheduleOptions{}, fp, fmt.Errorf("job %s: schedule.overlap: %w", j.Name, err)
	}
	return client.ScheduleOptions{
		ID: workflows.ScheduleID(j.Name),
		Spec: client.ScheduleSpec{
			CronExpressions: []string{s.Cron},
			TimeZoneName:    fp.TimeZone,
			Jitter:          s.Jitter,
		},
		Action:         scheduleAction(j.Name, cfg.Temporal.TaskQueue, fp),
		Overlap:        overlap,
		CatchupWindow:  s.CatchupWindow,
		PauseOnFailure: s.PauseOnFailure,
		Memo:           map[string]any{"job": j.Name},
	}, fp, nil
}

func scheduleAction(job, taskQueue string, fp specFingerprint) *client.ScheduleWorkflowAction {
	return &client.ScheduleWorkflowAction{
		// The schedule appends the tick's time to this ID; the job's run itself gets
		// workflows.WorkflowID(job) from the ScheduledReplication workflow.
		ID:                    workflows.ScheduleID(job),
		Workflow:              workflows.ScheduledWorkflowName,
		Args:                  []any{workflows.ReplicationInput{Job: job}},
		TaskQueue:             taskQueue,
		WorkflowTaskTimeout:   workflows.WorkflowTaskTimeout,
		Memo:                  map[string]any{specMemoKey: clearMemo(fp.String())},
		TypedSearchAttributes: temporal.NewSearchAttributes(workflows.AttrJob.ValueSet(job)),
		StaticSummary:         "scheduled run of job " + job,
	}
}

// syncSchedulesOnStart is `replctl dev`'s schedule sync: it reports what changed and
// warns (without stopping dev) when a schedule could not be synced.
func syncSchedulesOnStart(ctx context.Context, f *Factory, c client.Client, cfg *config.Config) {
	changes, err := syncSchedules(ctx, c, cfg, false)
	for _, ch := range changes {
		switch {
		case ch.Change == "unchanged" || ch.Error != "":
		case ch.Repository != "":
			fmt.Fprintf(f.ErrOut, "maintenance schedule of repository %s %s (%s)\n", ch.Repository, ch.Change, ch.Detail)
		default:
			fmt.Fprintf(f.ErrOut, "schedule of job %s %s (%s)\n", ch.Job, ch.Change, ch.Detail)
		}
	}
	if err != nil {
		fmt.Fprintf(f.ErrOut, "replctl: WARNING: %v; fix the config and run `replctl schedule sync`\n", err)
	}
}

// scheduleChange is one thing sync did (or, with --dry-run, would do).
type scheduleChange struct {
	Job        string `json:"job,omitempty"`
	ScheduleID string `json:"schedule_id"`
	// Repository is set on a repository's maintenance schedule (storage:path); Job owns it.
	Repository string `json:"repository,omitempty"`
	// Change is created, updated, deleted or unchanged.
	Change string `json:"change"`
	Detail string `json:"detail,omitempty"`
	Paused bool   `json:"paused,omitempty"`
	Error  string `json:"error,omitempty"`
}

// syncSchedules makes the server's schedules match the config: create the missing ones,
// update those that differ, delete replctl schedules of jobs without a schedule. It goes on
// after a failing schedule and returns all errors joined.
func syncSchedules(ctx context.Context, c client.Client, cfg *config.Config, dryRun bool) ([]scheduleChange, error) {
	sc := c.ScheduleClient()
	var changes []scheduleChange
	var errs []error
	fail := func(ch scheduleChange, err error) {
		ch.Error = err.Error()
		changes = append(changes, ch)
		errs = append(errs, fmt.Errorf("schedule %s: %s: %w", ch.ScheduleID, ch.Change, err))
	}
	wanted := map[string]bool{}
	for i := range cfg.Jobs {
		j := &cfg.Jobs[i]
		id := workflows.ScheduleID(j.Name)
		h := sc.GetHandle(ctx, id)
		desc, err := h.Describe(ctx)
		var nf *serviceerror.NotFound
		exists := err == nil
		if err != nil && !errors.As(err, &nf) {
			fail(scheduleChange{Job: j.Name, ScheduleID: id, Change: "describe"}, err)
			continue
		}
		if !exists {
			desc = nil
		}
		if j.Schedule == nil {
			if exists {
				ch := scheduleChange{Job: j.Name, ScheduleID: id, Change: "deleted", Detail: "job has no schedule in the config"}
				if !dryRun {
					if err := h.Delete(ctx); err != nil {
						fail(ch, err)
						continue
					}
				}
				changes = append(changes, ch)
			}
			continue
		}
		wanted[id] = true
		want, fp, err := desiredSchedule(cfg, j)
		if err != nil {
			fail(scheduleChange{Job: j.Name, ScheduleID: id, Change: "created"}, err)
			continue
		}
		ch, err := upsertSchedule(ctx, sc, h, desc, want, fp, scheduleChange{Job: j.Name, ScheduleID: id}, dryRun)
		if err != nil {
			fail(ch, err)
			continue
		}
		changes = append(changes, ch)
	}

	mchanges, merrs := syncMaintenanceSchedules(ctx, sc, cfg, dryRun)
	changes, errs = append(changes, mchanges...), append(errs, merrs...)
	for _, ch := range mchanges {
		wanted[ch.ScheduleID] = true
	}

	// Schedules of jobs (and repositories) that are no longer in the config. List is
	// eventually consistent; the loops above already handled everything the config names.
	legacyMaint := map[string]string{} // old-format maintenance schedule ID -> current one
	for _, u := range cfg.Repositories() {
		if old, id := workflows.LegacyMaintenanceScheduleID(u.Storage, u.Path), workflows.MaintenanceScheduleID(u.Storage, u.Path); old != id {
			legacyMaint[old] = id
		}
	}
	it, err := sc.List(ctx, client.ScheduleListOptions{})
	if err != nil {
		errs = append(errs, fmt.Errorf("list schedules: %w", err))
	} else {
		for it.HasNext() {
			e, err := it.Next()
			if err != nil {
				errs = append(errs, fmt.Errorf("list schedules: %w", err))
				break
			}
			isMaint := strings.HasPrefix(e.ID, workflows.MaintenanceSchedulePrefix)
			if !(strings.HasPrefix(e.ID, scheduleIDPrefix) || isMaint) || wanted[e.ID] || slices.ContainsFunc(changes, func(ch scheduleChange) bool { return ch.ScheduleID == e.ID }) {
				continue
			}
			job := strings.TrimPrefix(e.ID, scheduleIDPrefix)
			ch := scheduleChange{Job: job, ScheduleID: e.ID, Change: "deleted", Detail: "job is not in the config"}
			if isMaint {
				ch = scheduleChange{ScheduleID: e.ID, Change: "deleted", Detail: "repository maintenance: no job of the config uses the repository"}
				if id, ok := legacyMaint[e.ID]; ok {
					ch.Detail = "repository maintenance: replaced by " + id + " (IDs now escape storage and path)"
				}
			} else if _, err := cfg.Job(job); err == nil {
				ch.Detail = "job has no schedule in the config"
			}
			if !dryRun {
				if err := sc.GetHandle(ctx, e.ID).Delete(ctx); err != nil {
					var nf *serviceerror.NotFound
					if !errors.As(err, &nf) {
						fail(ch, err)
					}
					continue
				}
			}
			changes = append(changes, ch)
		}
	}
	if len(errs) > 0 {
		return changes, fmt.Errorf("schedule sync incomplete (the other schedules were synced): %w", errors.Join(errs...))
	}
	return changes, nil
}

// upsertSchedule creates the schedule want when desc is nil, else updates it when it differs
// from want (keeping an operator's pause), and says what it did in ch.
func upsertSchedule(ctx context.Context, sc client.ScheduleClient, h client.ScheduleHandle, desc *client.ScheduleDescription, want client.ScheduleOptions, fp specFingerprint, ch scheduleChange, dryRun bool) (scheduleChange, error) {
	if desc == nil {
		ch.Change, ch.Detail = "created", specSummary(fp)
		if !dryRun {
			if _, err := sc.Create(ctx, want); err != nil {
				return ch, err
			}
		}
		return ch, nil
	}
	diff := scheduleDiff(desc, want, fp)
	ch.Paused = desc.Schedule.State != nil && desc.Schedule.State.Paused
	if len(diff) == 0 {
		ch.Change, ch.Detail = "unchanged", specSummary(fp)
		return ch, nil
	}
	ch.Change, ch.Detail = "updated", strings.Join(diff, "; ")
	if dryRun {
		return ch, nil
	}
	return ch, h.Update(ctx, client.ScheduleUpdateOptions{DoUpdate: func(in client.ScheduleUpdateInput) (*client.ScheduleUpdate, error) {
		s := in.Description.Schedule
		spec := want.Spec
		s.Spec = &spec
		s.Action = want.Action
		s.Policy = &client.SchedulePolicies{Overlap: want.Overlap, CatchupWindow: want.CatchupWindow, PauseOnFailure: want.PauseOnFailure}
		// s.State is kept: an operator's pause survives a sync.
		return &client.ScheduleUpdate{Schedule: &s}, nil
	}})
}

// scheduleDiff lists what differs between a described schedule and the wanted one.
func scheduleDiff(d *client.ScheduleDescription, want client.ScheduleOptions, fp specFingerprint) []string {
	var diff []string
	s := d.Schedule
	if got := actionFingerprint(s.Action); got != fp.String() {
		if got == "" {
			diff = append(diff, "not made by this version of replctl sync")
		} else {
			var old specFingerprint
			_ = json.Unmarshal([]byte(got), &old)
			diff = append(diff, fingerprintDiff(old, fp)...)
			if len(diff) == 0 {
				diff = append(diff, "spec changed")
			}
		}
	}
	a, ok := s.Action.(*client.ScheduleWorkflowAction)
	switch {
	case !ok:
		diff = append(diff, "action is not a workflow start")
	default:
		if name, _ := a.Workflow.(string); name != fp.Workflow {
			diff = append(diff, fmt.Sprintf("workflow %q -> %q", name, fp.Workflow))
		}
		if a.TaskQueue != fp.TaskQueue {
			diff = append(diff, fmt.Sprintf("task queue %q -> %q", a.TaskQueue, fp.TaskQueue))
		}
	}
	// Edits made outside replctl (e.g. in the Temporal UI) are undone too.
	if p := s.Policy; p != nil {
		if p.Overlap != want.Overlap {
			diff = append(diff, fmt.Sprintf("overlap %s -> %s (changed outside replctl)", overlapName(p.Overlap), fp.Overlap))
		}
		if p.PauseOnFailure != want.PauseOnFailure {
			diff = append(diff, fmt.Sprintf("pause_on_failure %t -> %t (changed outside replctl)", p.PauseOnFailure, want.PauseOnFailure))
		}
		if want.CatchupWindow > 0 && p.CatchupWindow != want.CatchupWindow {
			diff = append(diff, fmt.Sprintf("catchup_window %s -> %s (changed outside replctl)", p.CatchupWindow, want.CatchupWindow))
		}
	}
	if sp := s.Spec; sp != nil {
		if sp.TimeZoneName != want.Spec.TimeZoneName && !(sp.TimeZoneName == "" && want.Spec.TimeZoneName == "UTC") {
			diff = append(diff, fmt.Sprintf("time_zone %q -> %q (changed outside replctl)", sp.TimeZoneName, want.Spec.TimeZoneName))
		}
		if sp.Jitter != want.Spec.Jitter {
			diff = append(diff, fmt.Sprintf("jitter %s -> %s (changed outside replctl)", sp.Jitter, want.Spec.Jitter))
		}
	}
	return dedupe(diff)
}

func dedupe(s []string) []string {
	var out []string
	for _, v := range s {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

func fingerprintDiff(old, cur specFingerprint) []string {
	var d []string
	add := func(field, a, b string) {
		if a != b {
			d = append(d, fmt.Sprintf("%s %q -> %q", field, a, b))
		}
	}
	add("cron", old.Cron, cur.Cron)
	add("time_zone", old.TimeZone, cur.TimeZone)
	add("overlap", old.Overlap, cur.Overlap)
	add("catchup_window", old.CatchupWindow, cur.CatchupWindow)
	add("jitter", old.Jitter, cur.Jitter)
	add("pause_on_failure", strconv.FormatBool(old.PauseOnFailure), strconv.FormatBool(cur.PauseOnFailure))
	add("task_queue", old.TaskQueue, cur.TaskQueue)
	add("workflow", old.Workflow, cur.Workflow)
	add("job", old.Job, cur.Job)
	add("full", strconv.FormatBool(old.Full), strconv.FormatBool(cur.Full))
	return d
}

// clearMemo encodes a memo value with the SDK's default converter, so that a payload codec
// leaves it as it is: schedule fingerprints (cron, time zone, policies, job name) hold
// nothing secret, and every replctl reads them back whatever its codec key.
func clearMemo(s string) *commonpb.Payload {
	p, err := converter.GetDefaultDataConverter().ToPayload(s)
	if err != nil {
		panic(err) // a string always encodes
	}
	return p
}

// actionFingerprint reads the sync fingerprint from a described action ("" if none).
func actionFingerprint(a client.ScheduleAction) string {
	wa, ok := a.(*client.ScheduleWorkflowAction)
	if !ok {
		return ""
	}
	var s string
	switch v := wa.Memo[specMemoKey].(type) {
	case string:
		s = v
	case *commonpb.Payload:
		// Described memos come back as payloads.
		_ = converter.GetDefaultDataConverter().FromPayload(v, &s)
	}
	return s
}

func specSummary(fp specFingerprint) string {
	s := fmt.Sprintf("cron %q %s, overlap %s", fp.Cron, fp.TimeZone, fp.Overlap)
	if fp.CatchupWindow != "" {
		s += ", catchup " + fp.CatchupWindow
	}
	if fp.Jitter != "" {
		s += ", jitter " + fp.Jitter
	}
	if fp.PauseOnFailure {
		s += ", pause on failure"
	}
	return s
}

func printScheduleChanges(w io.Writer, changes []scheduleChange, dryRun bool) {
	if len(changes) == 0 {
		fmt.Fprintln(w, "no schedules in the config and none on the server: nothing to do")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	verb := ""
	if dryRun {
		verb = "would be "
	}
	for _, ch := range changes {
		state := ch.Change
		if ch.Change != "unchanged" {
			state = verb + ch.Change
		}
		if ch.Error != "" {
			state = "FAILED to " + strings.TrimSuffix(ch.Change, "d")
		}
		detail := ch.Detail
		if ch.Paused && ch.Repository == "" {
			detail += " (paused: `replctl schedule unpause " + ch.Job + "`)"
		} else if ch.Paused {
			detail += " (paused on the server)"
		}
		if ch.Error != "" {
			detail = ch.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", state, dash(ch.Job), ch.ScheduleID, detail)
	}
	tw.Flush()
}

// scheduleView is what describe and list show of a schedule.
type scheduleView struct {
	Job        string `json:"job"`
	ScheduleID string `json:"schedule_id"`
	// Repository is set on a repository's maintenance schedule (storage:path); Job owns it.
	Repository string `json:"repository,omitempty"`
	// InConfig tells whether the config has a schedule for the job.
	InConfig bool `json:"in_config"`
	// Synced is false when the schedule differs from the config (run schedule sync).
	Synced bool `json:"synced"`
	// Cron is the cron string the schedule was synced from.
	Cron           string               `json:"cron,omitempty"`
	Spec           string               `json:"spec"`
	TimeZone       string               `json:"time_zone,omitempty"`
	Overlap        string               `json:"overlap"`
	CatchupWindow  string               `json:"catchup_window,omitempty"`
	Jitter         string               `json:"jitter,omitempty"`
	PauseOnFailure bool                 `json:"pause_on_failure"`
	Paused         bool                 `json:"paused"`
	Note           string               `json:"note,omitempty"`
	Workflow       string               `json:"workflow"`
	TaskQueue      string               `json:"task_queue"`
	Actions        int                  `json:"actions"`
	SkippedOverlap int                  `json:"skipped_overlap"`
	MissedCatchup  int                  `json:"missed_catchup"`
	Running        []string             `json:"running,omitempty"`
	Recent         []scheduleActionView `json:"recent_actions,omitempty"`
	Next           []time.Time          `json:"next_action_times,omitempty"`
	Created        time.Time            `json:"created,omitzero"`
	Updated        time.Time            `json:"updated,omitzero"`
	// Differences lists what sync would change.
	Differences []string `json:"differences,omitempty"`
}

type scheduleActionView struct {
	ScheduleTime time.Time `json:"schedule_time"`
	ActualTime   time.Time `json:"actual_time"`
	WorkflowID   string    `json:"workflow_id,omitempty"`
	RunID        string    `json:"run_id,omitempty"`
}

func describeSchedule(ctx context.Context, c client.Client, cfg *config.Config, job string) (*scheduleView, error) {
	d, err := c.ScheduleClient().GetHandle(ctx, workflows.ScheduleID(job)).Describe(ctx)
	if err != nil {
		return nil, scheduleError(err, job, "describe")
	}
	return newScheduleView(cfg, job, d), nil
}

func newScheduleView(cfg *config.Config, job string, d *client.ScheduleDescription) *scheduleView {
	s := d.Schedule
	v := &scheduleView{Job: job, ScheduleID: workflows.ScheduleID(job)}
	if fp := actionFingerprint(s.Action); fp != "" {
		var f specFingerprint
		if json.Unmarshal([]byte(fp), &f) == nil {
			v.Cron = f.Cron
		}
	}
	if sp := s.Spec; sp != nil {
		v.Spec = formatSpec(sp)
		v.TimeZone = sp.TimeZoneName
		if sp.Jitter > 0 {
			v.Jitter = sp.Jitter.String()
		}
	}
	if p := s.Policy; p != nil {
		v.Overlap = overlapName(p.Overlap)
		v.PauseOnFailure = p.PauseOnFailure
		if p.CatchupWindow > 0 {
			v.CatchupWindow = p.CatchupWindow.String()
		}
	}
	if st := s.State; st != nil {
		v.Paused, v.Note = st.Paused, st.Note
	}
	if a, ok := s.Action.(*client.ScheduleWorkflowAction); ok {
		v.Workflow, _ = a.Workflow.(string)
		v.TaskQueue = a.TaskQueue
	}
	i := d.Info
	v.Actions, v.SkippedOverlap, v.MissedCatchup = i.NumActions, i.NumActionsSkippedOverlap, i.NumActionsMissedCatchupWindow
	for _, r := range i.RunningWorkflows {
		v.Running = append(v.Running, r.WorkflowID)
	}
	for _, a := range i.RecentActions {
		av := scheduleActionView{ScheduleTime: a.ScheduleTime, ActualTime: a.ActualTime}
		if r := a.StartWorkflowResult; r != nil {
			av.WorkflowID, av.RunID = r.WorkflowID, r.FirstExecutionRunID
		}
		v.Recent = append(v.Recent, av)
	}
	v.Next = i.NextActionTimes
	v.Created, v.Updated = i.CreatedAt, i.LastUpdateAt
	if cfg != nil {
		if j, err := cfg.Job(job); err == nil && j.Schedule != nil {
			v.InConfig = true
			if want, fp, err := desiredSchedule(cfg, j); err == nil {
				v.Differences = scheduleDiff(d, want, fp)
			}
			v.Synced = len(v.Differences) == 0
		}
	}
	return v
}

// formatSpec renders a described spec (the server keeps calendars and intervals, not
// the cron string).
func formatSpec(sp *client.ScheduleSpec) string {
	var parts []string
	for _, in := range sp.Intervals {
		s := "@every " + shortDuration(in.Every)
		if in.Offset > 0 {
			s += "/" + shortDuration(in.Offset)
		}
		parts = append(parts, s)
	}
	for _, c := range sp.Calendars {
		parts = append(parts, formatCalendar(c))
	}
	parts = append(parts, sp.CronExpressions...)
	if len(parts) == 0 {
		return "(no times)"
	}
	return strings.Join(parts, " | ")
}

func formatCalendar(c client.ScheduleCalendarSpec) string {
	f := func(name string, rs []client.ScheduleRange) string {
		if len(rs) == 0 {
			return ""
		}
		var s []string
		for _, r := range rs {
			v := strconv.Itoa(r.Start)
			if r.End > r.Start {
				v += "-" + strconv.Itoa(r.End)
			}
			if r.Step > 1 {
				v += "/" + strconv.Itoa(r.Step)
			}
			s = append(s, v)
		}
		return name + "=" + strings.Join(s, ",")
	}
	var out []string
	for _, p := range []string{f("sec", c.Second), f("min", c.Minute), f("hour", c.Hour), f("dom", c.DayOfMonth), f("month", c.Month), f("dow", c.DayOfWeek), f("year", c.Year)} {
		if p != "" {
			out = append(out, p)
		}
	}
	s := strings.Join(out, " ")
	if c.Comment != "" {
		s += " # " + c.Comment
	}
	return s
}

// shortDuration prints 2s, 1h, 1h30m (time.Duration.String prints 1h0m0s).
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func printScheduleView(w io.Writer, v *scheduleView) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "job\t%s\n", v.Job)
	fmt.Fprintf(tw, "schedule\t%s\n", v.ScheduleID)
	if v.Cron != "" {
		fmt.Fprintf(tw, "cron\t%s (%s)\n", v.Cron, dash(v.TimeZone))
	}
	fmt.Fprintf(tw, "spec\t%s\n", v.Spec)
	fmt.Fprintf(tw, "overlap\t%s\n", v.Overlap)
	if v.CatchupWindow != "" {
		fmt.Fprintf(tw, "catch-up window\t%s\n", v.CatchupWindow)
	}
	if v.Jitter != "" {
		fmt.Fprintf(tw, "jitter\t%s\n", v.Jitter)
	}
	fmt.Fprintf(tw, "pause on failure\t%t\n", v.PauseOnFailure)
	state := "active"
	if v.Paused {
		state = "PAUSED"
	}
	if v.Note != "" {
		state += ": " + v.Note
	}
	fmt.Fprintf(tw, "state\t%s\n", state)
	fmt.Fprintf(tw, "action\tstart %s on task queue %s\n", v.Workflow, v.TaskQueue)
	fmt.Fprintf(tw, "actions\t%d taken, %d skipped (overlap), %d missed (catch-up window)\n", v.Actions, v.SkippedOverlap, v.MissedCatchup)
	for _, r := range v.Running {
		fmt.Fprintf(tw, "running\t%s\n", r)
	}
	for _, a := range v.Recent {
		fmt.Fprintf(tw, "recent\t%s (for %s): %s\n", a.ActualTime.Local().Format(time.DateTime), a.ScheduleTime.Local().Format(time.DateTime), a.WorkflowID)
	}
	for i, t := range v.Next {
		if i == 3 {
			break
		}
		fmt.Fprintf(tw, "next\t%s\n", t.Local().Format(time.DateTime+" MST"))
	}
	switch {
	case !v.InConfig:
		fmt.Fprintf(tw, "config\tthe config has no schedule for job %s: `replctl schedule sync` deletes this schedule\n", v.Job)
	case !v.Synced:
		fmt.Fprintf(tw, "config\tdiffers (%s): run `replctl schedule sync`\n", strings.Join(v.Differences, "; "))
	default:
		fmt.Fprintf(tw, "config\tin sync\n")
	}
	tw.Flush()
}

// serverScheduleIDs lists the IDs of the server's replctl schedules (jobs' and
// maintenance), in one pass over the server's list.
func serverScheduleIDs(ctx context.Context, c client.Client) ([]string, error) {
	it, err := c.ScheduleClient().List(ctx, client.ScheduleListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list schedules: %w", err)
	}
	var ids []string
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			return nil, fmt.Errorf("list schedules: %w", err)
		}
		if strings.HasPrefix(e.ID, scheduleIDPrefix) || strings.HasPrefix(e.ID, workflows.MaintenanceSchedulePrefix) {
			ids = append(ids, e.ID)
		}
	}
	return ids, nil
}

// listSchedules describes every replctl schedule: those the config asks for and those the
// server lists with replctl's ID prefix. Describing (not only listing) gives up-to-date
// state even when the list lags behind.
func listSchedules(ctx context.Context, c client.Client, cfg *config.Config) ([]*scheduleView, error) {
	var jobs []string
	for _, j := range cfg.Jobs {
		if j.Schedule != nil {
			jobs = append(jobs, j.Name)
		}
	}
	listed, err := serverScheduleIDs(ctx, c)
	if err != nil {
		return nil, err
	}
	for _, id := range listed {
		job, ok := strings.CutPrefix(id, scheduleIDPrefix)
		if ok && !slices.Contains(jobs, job) {
			jobs = append(jobs, job)
		}
	}
	slices.Sort(jobs)
	views := []*scheduleView{}
	for _, job := range jobs {
		d, err := c.ScheduleClient().GetHandle(ctx, workflows.ScheduleID(job)).Describe(ctx)
		var nf *serviceerror.NotFound
		if errors.As(err, &nf) {
			if j, jerr := cfg.Job(job); jerr == nil && j.Schedule != nil {
				views = append(views, &scheduleView{Job: job, ScheduleID: workflows.ScheduleID(job), InConfig: true, Spec: "(not on the server: run `replctl schedule sync`)"})
			} // else: deleted; the list lags behind
			continue
		}
		if err != nil {
			return nil, scheduleError(err, job, "describe")
		}
		views = append(views, newScheduleView(cfg, job, d))
	}
	mviews, err := listMaintenanceSchedules(ctx, c, cfg, listed)
	return append(views, mviews...), err
}

func printScheduleList(w io.Writer, views []*scheduleView) {
	if len(views) == 0 {
		fmt.Fprintln(w, "no schedules: give jobs a `schedule:` in the config and run `replctl schedule sync`")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tSCHEDULE\tSTATE\tLAST\tNEXT\tCONFIG")
	for _, v := range views {
		spec := v.Cron
		if spec == "" {
			spec = v.Spec
		}
		state := "active"
		if v.Paused {
			state = "paused"
		}
		last, next := "-", "-"
		if n := len(v.Recent); n > 0 {
			last = v.Recent[n-1].ActualTime.Local().Format(time.DateTime)
		}
		if len(v.Next) > 0 {
			next = v.Next[0].Local().Format(time.DateTime)
		}
		conf := "in sync"
		switch {
		case v.Workflow == "":
			conf = "not synced"
			state = "-"
		case !v.InConfig:
			conf = "not in config"
		case !v.Synced:
			conf = "differs"
		}
		who := v.Job
		if v.Repository != "" {
			who = "maintenance " + v.Repository + " (" + dash(v.Job) + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", who, spec, state, last, next, conf)
	}
	tw.Flush()
}
