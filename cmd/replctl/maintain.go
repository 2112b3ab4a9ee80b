package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/replctl/replctl/workflows"
)

// MaintainOptions are the arguments and flags of `replctl maintain`.
type MaintainOptions struct {
	Job  string
	Full bool
	Wait bool
}

// NewCmdMaintain is `replctl maintain JOB [--full]`: repository maintenance with a single
// owner (one workflow ID per repository).
func NewCmdMaintain(f *Factory, runF func(*MaintainOptions) error) *cobra.Command {
	o := &MaintainOptions{}
	cmd := &cobra.Command{
		Use:   "maintain JOB",
		Short: "Maintain the job's repository (with --full: reclaim space of pruned images and killed pushes)",
		Long: "Run kopia maintenance on the job's repository from one agent of the job's target order.\n" +
			"Only one maintenance runs per repository at a time, whichever jobs share it.",
		Args:              exactArgs(1, "one job name"),
		ValidArgsFunction: completeJobs(f, false),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Job = args[0]
			if runF != nil {
				return runF(o)
			}
			return runMaintain(cmd.Context(), f, o)
		},
	}
	cmd.Flags().BoolVar(&o.Full, "full", false, "full maintenance: also garbage-collect unreferenced data (kopia's safety margins apply)")
	cmd.Flags().BoolVarP(&o.Wait, "wait", "w", false, "wait for the maintenance to end")
	return cmd
}

func runMaintain(ctx context.Context, f *Factory, o *MaintainOptions) error {
	cfg, j, err := f.Job(o.Job)
	if err != nil {
		return err
	}
	c, err := f.Client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	id := workflows.MaintenanceID(j.Repository.Storage, j.Repository.Path)
	run, err := startOwned(ctx, c, id, cfg.Temporal.TaskQueue, workflows.MaintenanceWorkflowName, workflows.MaintenanceInput{Job: o.Job, Full: o.Full})
	var already *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &already) {
		return fmt.Errorf("maintenance of repository %s:%s is already running (workflow %s): it has one owner at a time", j.Repository.Storage, j.Repository.Path, id)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(f.ErrOut, "started maintenance of %s:%s (workflow %s run %s)\n", j.Repository.Storage, j.Repository.Path, id, run.GetRunID())
	if !o.Wait {
		return nil
	}
	var res workflows.MaintenanceResult
	if err := f.waitRun(ctx, c, run, &res); err != nil {
		return runEndError(fmt.Sprintf("maintenance of %s:%s", j.Repository.Storage, j.Repository.Path), err)
	}
	fmt.Fprintf(f.Out, "maintenance (full=%t) done by %s in %s\n", res.Result.Full, res.Result.Agent, res.Result.Duration.Round(1e6))
	return nil
}

// startOwned starts a workflow whose ID has one owner at a time: a start while one runs
// fails with WorkflowExecutionAlreadyStarted.
func startOwned(ctx context.Context, c client.Client, id, queue, workflow string, input any) (client.WorkflowRun, error) {
	return c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: id, TaskQueue: queue, WorkflowTaskTimeout: workflows.WorkflowTaskTimeout,
		WorkflowIDReusePolicy:                    enums.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		WorkflowIDConflictPolicy:                 enums.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
		WorkflowExecutionErrorWhenAlreadyStarted: true,
	}, workflow, input)
}

// runJobWorkflow starts workflow name of job under id, which has one owner at a time (a
// start while one runs exits ExitRunning, naming it), waits for it and decodes its result
// into res. what names it in messages ("verification of orders").
func runJobWorkflow(ctx context.Context, f *Factory, job, id, name string, input, res any, what string) error {
	cfg, _, err := f.Job(job)
	if err != nil {
		return err
	}
	c, err := f.Client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	run, err := startOwned(ctx, c, id, cfg.Temporal.TaskQueue, name, input)
	var already *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &already) {
		return &ExitError{Code: ExitRunning, Err: fmt.Errorf("a %s is already running (workflow %s)", what, id)}
	}
	if err != nil {
		return fmt.Errorf("start %s: %w", what, err)
	}
	if err := f.waitRun(ctx, c, run, res); err != nil {
		return runEndError(what, err)
	}
	return nil
}
