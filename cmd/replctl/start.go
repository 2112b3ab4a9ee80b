package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/replctl/replctl/workflows"
)

// StartOptions are the arguments and flags of `replctl start`.
type StartOptions struct {
	Job    string
	Wait   bool
	Output string
	// Direction, From, Confirm and PrimaryDown are set by `replctl failback` (see
	// workflows.ReplicationInput).
	Direction   string
	From        string
	Confirm     string
	PrimaryDown bool
}

// NewCmdStart is `replctl start JOB [--wait]`.
func NewCmdStart(f *Factory, runF func(*StartOptions) error) *cobra.Command {
	o := &StartOptions{}
	cmd := &cobra.Command{
		Use:   "start JOB",
		Short: "Start a replication run of a job",
		Long: "Start a replication run of JOB: quiesce, push, resume, pull.\n" +
			"With --wait, wait for the run and exit 0 only if it completed (3: failed, 4: failed and left a host quiesced).",
		Args: exactArgs(1, "one job name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Job = args[0]
			if err := checkOutput(o.Output); err != nil {
				return err
			}
			if runF != nil {
				return runF(o)
			}
			return runStart(cmd, f, o)
		},
	}
	cmd.Flags().BoolVarP(&o.Wait, "wait", "w", false, "wait for the run to end; the exit code tells how it ended")
	cmd.Flags().StringVarP(&o.Output, "output", "o", "table", "output: table or json")
	return cmd
}

func runStart(cmd *cobra.Command, f *Factory, o *StartOptions) error {
	ctx := cmd.Context()
	cfg, _, err := f.Job(o.Job)
	if err != nil {
		return err
	}
	c, err := f.Client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	return startRun(ctx, f, c, cfg.Temporal.TaskQueue, o)
}

// startRun starts a run of o.Job and, with o.Wait, waits for it and reports how it ended.
func startRun(ctx context.Context, f *Factory, c client.Client, taskQueue string, o *StartOptions) error {
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                                       workflows.WorkflowID(o.Job),
		WorkflowTaskTimeout:                      workflows.WorkflowTaskTimeout,
		TaskQueue:                                taskQueue,
		WorkflowIDReusePolicy:                    enums.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		WorkflowIDConflictPolicy:                 enums.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
		WorkflowExecutionErrorWhenAlreadyStarted: true,
	}, workflows.ReplicationWorkflowName, workflows.ReplicationInput{Job: o.Job, Direction: o.Direction, From: o.From, Confirm: o.Confirm, PrimaryDown: o.PrimaryDown})
	var already *serviceerror.WorkflowExecutionAlreadyStarted
	if errors.As(err, &already) {
		return fmt.Errorf("a run of job %s is already in progress (run %s): see `replctl status %s`", o.Job, already.RunId, o.Job)
	}
	if err != nil {
		return fmt.Errorf("start job %s: %w", o.Job, err)
	}
	what := "job " + o.Job
	if o.Direction == workflows.DirectionFailback {
		what = "failback of job " + o.Job
	}
	fmt.Fprintf(f.ErrOut, "started %s: workflow %s run %s\n", what, run.GetID(), run.GetRunID())
	if !o.Wait {
		return nil
	}
	began := time.Now()
	var st workflows.Status
	runErr := run.Get(ctx, &st)
	if runErr != nil {
		// A failed run returns no result: ask the run itself what happened.
		if v, err := c.QueryWorkflow(ctx, run.GetID(), run.GetRunID(), workflows.StatusQuery); err == nil {
			_ = v.Get(&st)
		}
	}
	if o.Output == "json" {
		if err := writeJSON(f.Out, statusView{WorkflowID: run.GetID(), Status: st}); err != nil {
			return err
		}
	} else {
		printStatus(f.Out, statusView{WorkflowID: run.GetID(), Status: st})
		fmt.Fprintf(f.Out, "took %s\n", time.Since(began).Round(time.Millisecond))
	}
	if runErr != nil {
		code := ExitRunFailed
		if st.QuiescedHost != "" {
			code = ExitLeftQuiesce
			runErr = fmt.Errorf("%w; HOST %s WAS LEFT QUIESCED", runErr, st.QuiescedHost)
		}
		if code == ExitRunFailed {
			return runEndError("run of job "+o.Job, runErr)
		}
		return &ExitError{Code: code, Err: fmt.Errorf("run of job %s failed: %w", o.Job, runErr)}
	}
	return nil
}

func checkOutput(o string) error {
	if o != "table" && o != "json" {
		return usageError("--output %q: want table or json", o)
	}
	return nil
}
