package main

import (
	"context"

	"github.com/spf13/cobra"
	"go.temporal.io/sdk/client"

	"github.com/replctl/replctl/config"
)

// NewCmdScheduleUnpause is `replctl schedule unpause JOB`.
func NewCmdScheduleUnpause(f *Factory, runF func(*ScheduleOptions) error) *cobra.Command {
	cmd, o := newScheduleCmd(f, runF, "unpause JOB", "Unpause a job's schedule", runScheduleUnpause)
	addNoteFlag(cmd, o)
	return cmd
}

// runScheduleUnpause is pause undone (see setPaused).
func runScheduleUnpause(ctx context.Context, f *Factory, cfg *config.Config, c client.Client, o *ScheduleOptions) error {
	return setPaused(ctx, f, cfg, c, o, false)
}
