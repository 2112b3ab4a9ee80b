package main

import (
	"slices"

	"github.com/spf13/cobra"

	"github.com/replctl/replctl/workflows"
)

// FailbackOptions are the arguments and flags of `replctl failback`.
type FailbackOptions struct {
	Job string
	// From is the target storage to copy back from ("" = the job's first target).
	From   string
	Wait   bool
	Output string
}

// NewCmdFailback is `replctl failback JOB [--from STORAGE] [--wait]`.
func NewCmdFailback(f *Factory, runF func(*FailbackOptions) error) *cobra.Command {
	o := &FailbackOptions{}
	cmd := &cobra.Command{
		Use:   "failback JOB",
		Short: "Copy a job's target replica back to its source after a failover",
		Long: "Reverse JOB after a failover: quiesce the application on the target side (failback.application),\n" +
			"push the target's current replica into the job's repository (only changed data is written: the\n" +
			"repository already holds the rest), resume, then restore it into the source dataset, which becomes a\n" +
			"plain directory again (what was there is kept under .replctl/failback/ on the source storage).\n" +
			"Procedure: stop the application on the DR side (or let failback.application quiesce it), pause the\n" +
			"job's schedule, run failback --wait, start the application on the primary, unpause the schedule.\n" +
			"Refused when the target has no replica. Exit codes as for start --wait.",
		Args: exactArgs(1, "one job name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Job = args[0]
			if err := checkOutput(o.Output); err != nil {
				return err
			}
			if runF != nil {
				return runF(o)
			}
			return runFailback(cmd, f, o)
		},
	}
	cmd.Flags().StringVar(&o.From, "from", "", "target storage to copy back from (default: the job's first target)")
	cmd.Flags().BoolVarP(&o.Wait, "wait", "w", false, "wait for the run to end; the exit code tells how it ended")
	cmd.Flags().StringVarP(&o.Output, "output", "o", "table", "output: table or json")
	return cmd
}

func runFailback(cmd *cobra.Command, f *Factory, o *FailbackOptions) error {
	ctx := cmd.Context()
	cfg, job, err := f.Job(o.Job)
	if err != nil {
		return err
	}
	if o.From != "" {
		var storages []string
		for _, t := range job.AllTargets() {
			storages = append(storages, t.Storage)
		}
		if !slices.Contains(storages, o.From) {
			return usageError("--from %q: job %s has no target on that storage (targets: %v)", o.From, o.Job, storages)
		}
	}
	c, err := f.Client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	return startRun(ctx, f, c, cfg.Temporal.TaskQueue, &StartOptions{Job: o.Job, Wait: o.Wait, Output: o.Output, Direction: workflows.DirectionFailback, From: o.From})
}
