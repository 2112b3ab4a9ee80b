package main

import (
	"context"
	"fmt"
	"os"
	"os/user"

	"github.com/spf13/cobra"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/replctl/replctl/workflows"
)

// TestFailoverOptions are the arguments and flags of `replctl test-failover`.
type TestFailoverOptions struct {
	Job     string
	Replica string
	Name    string
	Cleanup bool
	Output  string
}

// NewCmdTestFailover is `replctl test-failover JOB [REPLICA] [--cleanup]`.
func NewCmdTestFailover(f *Factory, runF func(*TestFailoverOptions) error) *cobra.Command {
	o := &TestFailoverOptions{}
	cmd := &cobra.Command{
		Use:   "test-failover JOB [REPLICA]",
		Short: "Open a writable copy of a replica on the target for a failover test (--cleanup removes it)",
		Long: "Open a writable copy of a replica (default: the current one) at a separate path on the target,\n" +
			"while scheduled replication goes on. Files are cloned copy-on-write where the filesystem can\n" +
			"(reflink), copied in the kernel otherwise; published replicas are never touched. The run records\n" +
			"who tested what and when (workflow " + workflows.TestFailoverID("JOB", "NAME") + ", its memo).",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return usageError("test-failover wants JOB and optionally REPLICA (got %d arguments)", len(args))
			}
			return nil
		},
		ValidArgsFunction: completeJobs(f, false),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Job = args[0]
			if len(args) == 2 {
				o.Replica = args[1]
			}
			if err := checkOutput(o.Output); err != nil {
				return err
			}
			if runF != nil {
				return runF(o)
			}
			return runTestFailover(cmd.Context(), f, o)
		},
	}
	cmd.Flags().StringVar(&o.Name, "name", "test", "name of the test copy (one per name)")
	cmd.Flags().BoolVar(&o.Cleanup, "cleanup", false, "remove the test copy")
	addOutputFlag(cmd, &o.Output)
	return cmd
}

func whoAmI() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return name + "@" + host
}

func runTestFailover(ctx context.Context, f *Factory, o *TestFailoverOptions) error {
	cfg, _, err := f.Job(o.Job)
	if err != nil {
		return err
	}
	c, err := f.Client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: workflows.TestFailoverID(o.Job, o.Name), TaskQueue: cfg.Temporal.TaskQueue, WorkflowTaskTimeout: workflows.WorkflowTaskTimeout,
		WorkflowIDReusePolicy: enums.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
	}, workflows.TestFailoverWorkflowName, workflows.TestFailoverInput{Job: o.Job, Replica: o.Replica, Name: o.Name, Cleanup: o.Cleanup, By: whoAmI()})
	if err != nil {
		return fmt.Errorf("start test failover of %s: %w", o.Job, err)
	}
	var res workflows.TestFailoverResult
	if err := f.waitRun(ctx, c, run, &res); err != nil {
		return runEndError("test failover of "+o.Job, err)
	}
	if o.Output == "json" {
		return f.PrintJSON(res)
	}
	if o.Cleanup {
		fmt.Fprintf(f.Out, "test copy %s of job %s removed (by %s)\n", o.Name, o.Job, res.Copy.Agent)
		return nil
	}
	fmt.Fprintf(f.Out, "writable test copy of replica %s: %s\n  %d files, %s (%d cloned copy-on-write), by %s\n  remove with: replctl test-failover %s --name %s --cleanup\n",
		res.Copy.Replica, res.Copy.Path, res.Copy.Files, humanBytes(res.Copy.Bytes), res.Copy.Cloned, res.Copy.Agent, o.Job, o.Name)
	return nil
}
