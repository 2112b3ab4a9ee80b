package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"go.temporal.io/sdk/client"

	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/internal/schedsync"
)

// NewCmdScheduleSync is `replctl schedule sync`.
func NewCmdScheduleSync(f *Factory, runF func(*ScheduleOptions) error) *cobra.Command {
	cmd, o := newScheduleCmd(f, runF, "sync", "Create, update and delete schedules so the server matches the config", runScheduleSync)
	cmd.Long = "Create, update and delete the Temporal schedules of the config's jobs: cron, time zone, overlap policy\n" +
		"(default skip), catch-up window, jitter and pause-on-failure. Only schedules whose ID starts with\n" +
		schedsync.JobPrefix + " are deleted. A pause set by `replctl schedule pause` is kept. Idempotent."
	cmd.Flags().BoolVar(&o.DryRun, "dry-run", false, "only print what would change")
	return cmd
}

// runScheduleSync prints the report even when some schedules failed: the others were synced.
func runScheduleSync(ctx context.Context, f *Factory, cfg *config.Config, c client.Client, o *ScheduleOptions) error {
	changes, err := schedsync.Sync(ctx, schedsync.Temporal(c.ScheduleClient()), cfg, o.DryRun)
	if rerr := f.Render(o.Output, changes, func(w io.Writer) { printScheduleChanges(w, changes, o.DryRun) }); rerr != nil {
		return rerr
	}
	return err
}

// syncSchedulesOnStart is `replctl dev`'s schedule sync: it reports what changed and
// warns (without stopping dev) when a schedule could not be synced.
func syncSchedulesOnStart(ctx context.Context, f *Factory, c client.Client, cfg *config.Config) {
	changes, err := schedsync.Sync(ctx, schedsync.Temporal(c.ScheduleClient()), cfg, false)
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

// printScheduleChanges is the table of sync; a failed row shows the error instead of the detail.
func printScheduleChanges(w io.Writer, changes []schedsync.Change, dryRun bool) {
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
