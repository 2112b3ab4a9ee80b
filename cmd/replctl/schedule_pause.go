package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	"go.temporal.io/sdk/client"

	"github.com/replctl/replctl/config"
)

// NewCmdSchedulePause is `replctl schedule pause JOB`.
func NewCmdSchedulePause(f *Factory, runF func(*ScheduleOptions) error) *cobra.Command {
	cmd, o := newScheduleCmd(f, runF, "pause JOB", "Pause a job's schedule (no ticks until unpause)", runSchedulePause)
	addNoteFlag(cmd, o)
	return cmd
}

// addNoteFlag is --note of pause and unpause.
func addNoteFlag(cmd *cobra.Command, o *ScheduleOptions) {
	cmd.Flags().StringVar(&o.Note, "note", "", "why (shown by describe and in the Temporal UI)")
}

func runSchedulePause(ctx context.Context, f *Factory, cfg *config.Config, c client.Client, o *ScheduleOptions) error {
	return setPaused(ctx, f, cfg, c, o, true)
}

// setPaused pauses or unpauses the schedule o acts on; without --note the note recorded
// says which command did it.
func setPaused(ctx context.Context, f *Factory, cfg *config.Config, c client.Client, o *ScheduleOptions, pause bool) error {
	h, err := scheduleHandle(ctx, c, cfg, o)
	if err != nil {
		return err
	}
	note := o.Note
	if pause {
		if note == "" {
			note = "paused with replctl schedule pause"
		}
		err = h.Pause(ctx, client.SchedulePauseOptions{Note: note})
		return reportScheduleAction(f, o, h.GetID(), err,
			fmt.Sprintf("paused schedule %s of job %s; `replctl schedule unpause %s` resumes it", h.GetID(), o.Job, o.Job))
	}
	if note == "" {
		note = "unpaused with replctl schedule unpause"
	}
	err = h.Unpause(ctx, client.ScheduleUnpauseOptions{Note: note})
	return reportScheduleAction(f, o, h.GetID(), err, fmt.Sprintf("unpaused schedule %s of job %s", h.GetID(), o.Job))
}
