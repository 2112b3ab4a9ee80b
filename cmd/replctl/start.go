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
			"With --wait, wait for the run and exit 0 only if it completed (3: failed, 4: failed and left a host quiesced).\n" +
			"A run of JOB that is already going refuses the start with exit 5, naming that run.\n" +
			"With -o json, print the started run (with --wait: its final status), or on failure {\"error\": {...}}.",
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
	addOutputFlag(cmd, &o.Output)
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
		return alreadyRunning(ctx, c, o.Job, already.RunId, f.now())
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
		if o.Output == "json" {
			return f.PrintJSON(runHandle{Job: o.Job, WorkflowID: run.GetID(), RunID: run.GetRunID()})
		}
		return nil
	}
	began := f.now()
	var st workflows.Status
	runErr := f.waitRun(ctx, c, run, &st)
	if lostRun(runErr) {
		return runEndError("run of job "+o.Job, runErr)
	}
	if runErr != nil {
		// A failed run returns no result: ask the run itself what happened.
		if v, err := c.QueryWorkflow(ctx, run.GetID(), run.GetRunID(), workflows.StatusQuery); err == nil {
			_ = v.Get(&st)
		}
	}
	if o.Output == "json" {
		if err := f.PrintJSON(statusView{WorkflowID: run.GetID(), Status: st}); err != nil {
			return err
		}
	} else {
		printStatus(f.Out, statusView{WorkflowID: run.GetID(), Status: st})
		fmt.Fprintf(f.Out, "took %s\n", f.now().Sub(began).Round(time.Millisecond))
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

// runHandle names a run: what `start -o json` prints for a run it started without
// --wait (statusView, printed with --wait, has the same names).
type runHandle struct {
	Job        string `json:"job"`
	WorkflowID string `json:"workflow_id"`
	RunID      string `json:"run_id"`
}

// runningLookup bounds how long a refused start spends asking about the running run.
const runningLookup = 3 * time.Second

// alreadyRunning is the refusal of a start because a run of job is going (ExitRunning).
// It names that run with its phase and start time, as far as the server tells within
// runningLookup: the phase from the run's status query (which needs an agent), else its
// ReplctlPhase search attribute. now dates the run's age.
func alreadyRunning(ctx context.Context, c client.Client, job, runID string, now time.Time) error {
	ref := &runRef{Job: job, WorkflowID: workflows.WorkflowID(job), RunID: runID}
	lctx, cancel := context.WithTimeout(ctx, runningLookup)
	defer cancel()
	if d, err := c.DescribeWorkflowExecution(lctx, ref.WorkflowID, runID); err == nil {
		info := d.GetWorkflowExecutionInfo()
		ref.RunID = info.GetExecution().GetRunId()
		ref.StartedAt = info.GetStartTime().AsTime()
		ref.Phase = payloadString(info.GetSearchAttributes().GetIndexedFields()[workflows.AttrPhase.GetName()])
	}
	if q, err := c.QueryWorkflow(lctx, ref.WorkflowID, ref.RunID, workflows.StatusQuery); err == nil {
		var st workflows.Status
		if q.Get(&st) == nil && st.Phase != "" {
			ref.Phase = st.Phase
		}
	}
	phase, started := "phase unknown", "start time unknown"
	if ref.Phase != "" {
		phase = "phase " + ref.Phase
	}
	if !ref.StartedAt.IsZero() {
		started = fmt.Sprintf("started %s (%s ago)", ref.StartedAt.UTC().Format(time.DateTime+" UTC"), now.Sub(ref.StartedAt).Round(time.Second))
	}
	return &ExitError{Code: ExitRunning, Run: ref, Err: fmt.Errorf(
		"a run of job %s is already going: workflow %s run %s, %s, %s; follow it with `replctl status %s --watch` or stop it with `replctl cancel %s`",
		job, ref.WorkflowID, ref.RunID, phase, started, job, job)}
}

func checkOutput(o string) error {
	if o != "table" && o != "json" {
		return usageError("--output %q: want table or json", o)
	}
	return nil
}
