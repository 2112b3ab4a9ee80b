package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/sdk/client"

	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/internal/schedsync"
	"github.com/replctl/replctl/workflows"
)

// NewCmdScheduleTrigger is `replctl schedule trigger JOB`.
func NewCmdScheduleTrigger(f *Factory, runF func(*ScheduleOptions) error) *cobra.Command {
	cmd, o := newScheduleCmd(f, runF, "trigger JOB", "Take the schedule's action now (a run of the job, unless one is going)", runScheduleTrigger)
	cmd.Flags().StringVar(&o.Overlap, "overlap", "", "overlap policy for this trigger (default: the schedule's)")
	cmd.Flags().BoolVarP(&o.Wait, "wait", "w", false, "wait for the triggered run; the exit code tells how it ended")
	return cmd
}

// runScheduleTrigger takes the schedule's action now and, with o.Wait, waits for the
// ScheduledReplication workflow it started and reports its run.
func runScheduleTrigger(ctx context.Context, f *Factory, cfg *config.Config, c client.Client, o *ScheduleOptions) error {
	h, err := scheduleHandle(ctx, c, cfg, o)
	if err != nil {
		return err
	}
	before, err := h.Describe(ctx)
	if err != nil {
		return scheduleActionError(o, h.GetID(), err)
	}
	known := map[string]bool{}
	for _, a := range before.Info.RecentActions {
		if a.StartWorkflowResult != nil {
			known[a.StartWorkflowResult.WorkflowID+"/"+a.StartWorkflowResult.FirstExecutionRunID] = true
		}
	}
	if err := h.Trigger(ctx, client.ScheduleTriggerOptions{Overlap: overlapFlag(o)}); err != nil {
		return scheduleActionError(o, h.GetID(), err)
	}
	fmt.Fprintf(f.ErrOut, "triggered schedule %s of job %s\n", h.GetID(), o.Job)
	if !o.Wait {
		if !o.Maintenance {
			fmt.Fprintf(f.ErrOut, "follow it with: replctl status %s --watch\n", o.Job)
		}
		if o.Output == "json" {
			return f.PrintJSON(scheduleActionJSON(o, h.GetID(), "triggered schedule "+h.GetID()+" of job "+o.Job))
		}
		return nil
	}
	// The schedule starts the trigger workflow asynchronously: wait for it to show up.
	var started *client.ScheduleWorkflowExecution
	deadline := time.Now().Add(30 * time.Second)
	for started == nil {
		d, err := h.Describe(ctx)
		if err != nil {
			return scheduleActionError(o, h.GetID(), err)
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
				h.GetID(), o.Job, schedsync.OverlapName(d.Schedule.Policy.Overlap), o.Job)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	fmt.Fprintf(f.ErrOut, "scheduled workflow %s started; waiting for the run of job %s\n", started.WorkflowID, o.Job)
	var res workflows.ScheduledResult
	runErr := f.waitRun(ctx, c, c.GetWorkflow(ctx, started.WorkflowID, started.FirstExecutionRunID), &res)
	if lostRun(runErr) {
		return runEndError("scheduled run of job "+o.Job, runErr)
	}
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
