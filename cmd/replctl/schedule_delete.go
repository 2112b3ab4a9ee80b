package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"go.temporal.io/sdk/client"

	"github.com/replctl/replctl/config"
)

// NewCmdScheduleDelete is `replctl schedule delete JOB`.
func NewCmdScheduleDelete(f *Factory, runF func(*ScheduleOptions) error) *cobra.Command {
	cmd, _ := newScheduleCmd(f, runF, "delete JOB", "Delete a job's schedule (sync recreates it while the config has one)", runScheduleDelete)
	return cmd
}

func runScheduleDelete(ctx context.Context, f *Factory, cfg *config.Config, c client.Client, o *ScheduleOptions) error {
	h, err := scheduleHandle(ctx, c, cfg, o)
	if err != nil {
		return err
	}
	err = h.Delete(ctx)
	msg := fmt.Sprintf("deleted schedule %s of job %s", h.GetID(), o.Job)
	if j, jerr := cfg.Job(o.Job); jerr == nil && j.Schedule != nil {
		msg += "; the config still has a schedule for it: `replctl schedule sync` would recreate it"
	}
	return reportScheduleAction(f, o, h.GetID(), err, msg)
}
