package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/internal/schedsync"
)

// NewCmdScheduleBackfill is `replctl schedule backfill JOB --start ... [--end ...]`.
func NewCmdScheduleBackfill(f *Factory, runF func(*ScheduleOptions) error) *cobra.Command {
	cmd, o := newScheduleCmd(f, runF, "backfill JOB", "Take the actions the schedule would have taken between --start and --end, now", runScheduleBackfill)
	cmd.Long = "Take the schedule's actions for the times between --start and --end as if that time passed now.\n" +
		"With the default overlap policy skip, one run covers the whole range (a replica is a full copy)."
	cmd.Flags().StringVar(&o.Start, "start", "", "start of the range: RFC 3339 time, or -DURATION before now (e.g. -6h)")
	cmd.Flags().StringVar(&o.End, "end", "now", "end of the range: RFC 3339 time, now, or -DURATION")
	cmd.Flags().StringVar(&o.Overlap, "overlap", "", "overlap policy for the backfill (default: the schedule's)")
	return cmd
}

func runScheduleBackfill(ctx context.Context, f *Factory, cfg *config.Config, c client.Client, o *ScheduleOptions) error {
	h, err := scheduleHandle(ctx, c, cfg, o)
	if err != nil {
		return err
	}
	now := time.Now()
	start, _ := parseWhen(o.Start, now) // checked in o.check
	end, _ := parseWhen(o.End, now)
	err = h.Backfill(ctx, client.ScheduleBackfillOptions{Backfill: []client.ScheduleBackfill{{Start: start, End: end, Overlap: overlapFlag(o)}}})
	return reportScheduleAction(f, o, h.GetID(), err,
		fmt.Sprintf("backfill of schedule %s for %s .. %s requested; `replctl list --job %s` shows the runs", h.GetID(), start.Format(time.RFC3339), end.Format(time.RFC3339), o.Job))
}

// overlapFlag is --overlap of trigger and backfill (unspecified: the schedule's policy).
func overlapFlag(o *ScheduleOptions) enums.ScheduleOverlapPolicy {
	if o.Overlap == "" {
		return enums.SCHEDULE_OVERLAP_POLICY_UNSPECIFIED
	}
	p, _ := schedsync.OverlapPolicy(o.Overlap) // checked in o.check
	return p
}
