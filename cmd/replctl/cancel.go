package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"

	"github.com/replctl/replctl/workflows"
)

// CancelOptions are the arguments and flags of `replctl cancel`.
type CancelOptions struct {
	Job string
	// Wait waits until the run ended (after its resume step) and reports how.
	Wait   bool
	Output string
}

// NewCmdCancel is `replctl cancel JOB`.
func NewCmdCancel(f *Factory, runF func(*CancelOptions) error) *cobra.Command {
	o := &CancelOptions{}
	cmd := &cobra.Command{
		Use:   "cancel JOB",
		Short: "Cancel the running run of a job (the application is still resumed)",
		Long: "Request cancellation of the job's running run. The running step stops, but the run still resumes\n" +
			"the application if it quiesced it: the workflow runs the resume step whatever happens, so\n" +
			"cancelling never leaves the application frozen. With --wait, wait for the run to end; the exit\n" +
			"code is 4 if the resume failed and a host is LEFT QUIESCED.",
		Args:              exactArgs(1, "one job name"),
		ValidArgsFunction: completeJobs(f, false),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Job = args[0]
			if err := checkOutput(o.Output); err != nil {
				return err
			}
			if runF != nil {
				return runF(o)
			}
			return runCancel(cmd.Context(), f, o)
		},
	}
	cmd.Flags().BoolVarP(&o.Wait, "wait", "w", false, "wait for the run to end (after resume) and show its final status")
	addOutputFlag(cmd, &o.Output)
	return cmd
}

func runCancel(ctx context.Context, f *Factory, o *CancelOptions) error {
	c, err := f.Client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	id := workflows.WorkflowID(o.Job)
	desc, err := c.DescribeWorkflowExecution(ctx, id, "")
	var nf *serviceerror.NotFound
	if errors.As(err, &nf) {
		return notFoundError("job %s has no run to cancel (no workflow %s); `replctl list --job %s` shows its runs", o.Job, id, o.Job)
	}
	if err != nil {
		return fmt.Errorf("describe the latest run of job %s: %w", o.Job, err)
	}
	info := desc.GetWorkflowExecutionInfo()
	runID := info.GetExecution().GetRunId()
	if info.GetStatus() != enums.WORKFLOW_EXECUTION_STATUS_RUNNING {
		return fmt.Errorf("job %s has no running run: its latest run %s is %s (closed %s)", o.Job, runID,
			executionStatusName(info.GetStatus()), info.GetCloseTime().AsTime().Local().Format(time.DateTime))
	}
	if err := c.CancelWorkflow(ctx, id, runID); err != nil {
		return fmt.Errorf("cancel run %s of job %s: %w", runID, o.Job, err)
	}
	fmt.Fprintf(f.ErrOut, "cancellation of job %s run %s requested: the running step stops; resume still runs if the application was quiesced\n", o.Job, runID)
	if !o.Wait {
		fmt.Fprintf(f.ErrOut, "follow it with: replctl status %s --watch\n", o.Job)
		if o.Output == "json" {
			return f.PrintJSON(struct {
				runHandle
				CancelRequested bool `json:"cancel_requested"`
			}{runHandle{Job: o.Job, WorkflowID: id, RunID: runID}, true})
		}
		return nil
	}
	// Get returns once the run closed, i.e. after the resume step.
	var st workflows.Status
	runErr := f.waitRun(ctx, c, c.GetWorkflow(ctx, id, runID), &st)
	if lostRun(runErr) {
		return runEndError("cancelled run of job "+o.Job, runErr)
	}
	if runErr != nil {
		if v, err := c.QueryWorkflow(ctx, id, runID, workflows.StatusQuery); err == nil {
			_ = v.Get(&st)
		}
	}
	final := statusView{WorkflowID: id, Status: st}
	if d, err := c.DescribeWorkflowExecution(ctx, id, runID); err == nil {
		final.ExecutionStatus = executionStatusName(d.GetWorkflowExecutionInfo().GetStatus())
	}
	if err := f.Render(o.Output, final, func(w io.Writer) { printStatus(w, final) }); err != nil {
		return err
	}
	if st.QuiescedHost != "" {
		return &ExitError{Code: ExitLeftQuiesce, Err: fmt.Errorf("run %s of job %s ended %s and HOST %s WAS LEFT QUIESCED: run its resume script by hand", runID, o.Job, st.Phase, st.QuiescedHost)}
	}
	if runErr == nil {
		fmt.Fprintf(f.ErrOut, "run %s of job %s completed before the cancellation took effect\n", runID, o.Job)
	}
	return nil
}
