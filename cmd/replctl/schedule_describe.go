package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/sdk/client"

	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/workflows"
)

// NewCmdScheduleDescribe is `replctl schedule describe JOB`.
func NewCmdScheduleDescribe(f *Factory, runF func(*ScheduleOptions) error) *cobra.Command {
	cmd, _ := newScheduleCmd(f, runF, "describe JOB", "Show a job's schedule: spec, policies, state, recent and next actions", runScheduleDescribe)
	return cmd
}

func runScheduleDescribe(ctx context.Context, f *Factory, cfg *config.Config, c client.Client, o *ScheduleOptions) error {
	describe := describeSchedule
	if o.Maintenance {
		describe = describeMaintenanceSchedule
	}
	v, err := describe(ctx, c, cfg, o.Job)
	if err != nil {
		return err
	}
	return f.Render(o.Output, v, func(w io.Writer) { printScheduleView(w, v) })
}

func describeSchedule(ctx context.Context, c client.Client, cfg *config.Config, job string) (*scheduleView, error) {
	d, err := c.ScheduleClient().GetHandle(ctx, workflows.ScheduleID(job)).Describe(ctx)
	if err != nil {
		return nil, scheduleError(err, job, "describe")
	}
	return newScheduleView(cfg, job, d), nil
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
