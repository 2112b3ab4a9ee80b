package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/internal/schedsync"
	"github.com/replctl/replctl/workflows"
)

// NewCmdScheduleList is `replctl schedule list`.
func NewCmdScheduleList(f *Factory, runF func(*ScheduleOptions) error) *cobra.Command {
	cmd, _ := newScheduleCmd(f, runF, "list", "List replctl's schedules: spec, paused, last and next action", runScheduleList)
	return cmd
}

func runScheduleList(ctx context.Context, f *Factory, cfg *config.Config, c client.Client, o *ScheduleOptions) error {
	views, err := listSchedules(ctx, c, cfg)
	if err != nil {
		return err
	}
	return f.Render(o.Output, views, func(w io.Writer) { printScheduleList(w, views) })
}

// serverScheduleIDs lists the IDs of the server's replctl schedules (jobs' and
// maintenance), in one pass over the server's list.
func serverScheduleIDs(ctx context.Context, c client.Client) ([]string, error) {
	all, err := schedsync.Temporal(c.ScheduleClient()).List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list schedules: %w", err)
	}
	var ids []string
	for _, id := range all {
		if schedsync.Owned(id) {
			ids = append(ids, id)
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
		job, ok := strings.CutPrefix(id, schedsync.JobPrefix)
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
