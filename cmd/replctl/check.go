package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/internal/runwait"
	"github.com/replctl/replctl/workflows"
)

// CheckOptions are the arguments and flags of `replctl check`.
type CheckOptions struct {
	Job    string
	Wait   time.Duration
	Output string
}

// NewCmdCheck is `replctl check [JOB]`.
func NewCmdCheck(f *Factory, runF func(*CheckOptions) error) *cobra.Command {
	o := &CheckOptions{}
	cmd := &cobra.Command{
		Use:   "check [JOB]",
		Short: "Preflight every agent: storage, scripts, SSH, repository, free space, clock, config",
		Long: "Run a check on the agent of every host of the config (with JOB: of the job's hosts), each on its\n" +
			"host's own queue, from that agent's own config: the storage attached at the configured paths and\n" +
			"its free space (warn under " + fmt.Sprint(activities.CheckMinFreePercent) + " %), the jobs' scripts present and executable on the hosts of\n" +
			"the application order, SSH login to every host the agent may take over (host key known, `true`\n" +
			"runs), the repository reachable, the clock within " + activities.CheckMaxSkew.String() + " of the Temporal server's, and the\n" +
			"config's fingerprint equal on every agent. An agent that does not take its check within --wait is\n" +
			"reported as not reachable. Prints a table per host with a fix for each failure.\n" +
			"Exit 7 (kind check_failed) when any check failed; warnings alone exit 0.",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usageError("want at most one JOB")
			}
			return nil
		},
		ValidArgsFunction: completeJobs(f, false),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				o.Job = args[0]
			}
			if err := checkOutput(o.Output); err != nil {
				return err
			}
			if o.Wait <= 0 {
				return usageError("--wait must be positive")
			}
			if runF != nil {
				return runF(o)
			}
			return runCheck(cmd.Context(), f, o)
		},
	}
	cmd.Flags().DurationVar(&o.Wait, "wait", workflows.DefaultCheckWait, "how long an agent may take to pick up its check before it counts as not reachable")
	addOutputFlag(cmd, &o.Output)
	return cmd
}

func runCheck(ctx context.Context, f *Factory, o *CheckOptions) error {
	res, cfg, err := check(ctx, f, o.Job, o.Wait)
	if err != nil {
		return err
	}
	own := activities.ConfigFingerprint(cfg)
	if err := f.Render(o.Output, res, func(w io.Writer) { printCheck(w, res, cfg.File, own) }); err != nil {
		return err
	}
	return checkOutcome(res)
}

// check runs the Check workflow on the hosts of job ("" = every host of the config).
func check(ctx context.Context, f *Factory, job string, wait time.Duration) (workflows.CheckResult, *config.Config, error) {
	cfg, err := f.Config()
	if err != nil {
		return workflows.CheckResult{}, nil, err
	}
	c, err := f.Client(ctx)
	if err != nil {
		return workflows.CheckResult{}, nil, err
	}
	defer c.Close()
	// The check runs on an agent's workflow worker: without one it would wait for nothing.
	q := cfg.Temporal.TaskQueue
	d, err := c.DescribeTaskQueue(ctx, q, enums.TASK_QUEUE_TYPE_WORKFLOW)
	if err != nil {
		return workflows.CheckResult{}, nil, fmt.Errorf("check: describe queue %s: %w", q, err)
	}
	if len(d.GetPollers()) == 0 {
		return workflows.CheckResult{}, nil, &ExitError{Code: ExitCheckFailed, Err: fmt.Errorf("no agent polls the workflow queue %s: no agent of the config is running (start one: replctl agent --host HOST)", q)}
	}
	res, err := checkWith(ctx, c, cfg, job, wait)
	return res, cfg, err
}

// checkWith runs the Check workflow through c, joining one already going.
func checkWith(ctx context.Context, c client.Client, cfg *config.Config, job string, wait time.Duration) (workflows.CheckResult, error) {
	var res workflows.CheckResult
	hosts, err := checkHosts(cfg, job)
	if err != nil {
		return res, err
	}
	id := workflows.CheckID(job)
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: id, TaskQueue: cfg.Temporal.TaskQueue, WorkflowTaskTimeout: workflows.WorkflowTaskTimeout,
		// A check already going is joined: it answers the same question.
		WorkflowIDReusePolicy:    enums.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		WorkflowIDConflictPolicy: enums.WORKFLOW_ID_CONFLICT_POLICY_USE_EXISTING,
		WorkflowExecutionTimeout: wait + 5*time.Minute,
	}, workflows.CheckWorkflowName, workflows.CheckInput{Job: job, Hosts: hosts, Wait: wait})
	if err != nil {
		return res, fmt.Errorf("start check: %w", err)
	}
	if err := runwait.GetRun(ctx, c, run, &res, runwait.Options{}); err != nil {
		return res, runEndError("check (workflow "+id+")", err)
	}
	return res, nil
}

// checkOnStart runs the check of every host once dev's agents run and prints its table; a
// failure is a warning: dev goes on.
func checkOnStart(ctx context.Context, f *Factory, c client.Client, cfg *config.Config) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	res, err := checkWith(ctx, c, cfg, "", workflows.DefaultCheckWait)
	if err != nil {
		fmt.Fprintf(f.ErrOut, "replctl: WARNING: check on start: %v\n", err)
		return
	}
	printCheck(f.ErrOut, res, cfg.File, activities.ConfigFingerprint(cfg))
	if err := checkOutcome(res); err != nil {
		fmt.Fprintf(f.ErrOut, "replctl: WARNING: %v (see the table above; `replctl check` checks again)\n", err)
	}
}

// checkHosts are the hosts a check asks: the job's (every host of its orders) or every host
// of the config.
func checkHosts(cfg *config.Config, job string) ([]string, error) {
	var hosts []string
	if job == "" {
		for _, h := range cfg.Hosts {
			hosts = append(hosts, h.Name)
		}
		return hosts, nil
	}
	p, err := activities.NewPlan(cfg, job)
	if err != nil {
		return nil, &ExitError{Code: ExitUsage, Err: err}
	}
	for _, h := range p.Hosts {
		hosts = append(hosts, h.Name)
	}
	return hosts, nil
}

// checkOutcome is ExitCheckFailed when a check failed.
func checkOutcome(res workflows.CheckResult) error {
	if res.Failed == 0 {
		return nil
	}
	var hosts []string
	for _, h := range res.Hosts {
		for _, c := range h.Checks {
			if c.Result == activities.CheckFail {
				hosts = append(hosts, h.Host)
				break
			}
		}
	}
	return &ExitError{Code: ExitCheckFailed, Err: fmt.Errorf("check: %d check(s) failed on %s", res.Failed, strings.Join(hosts, ", "))}
}

// printCheck prints a table per host; cfgFile and own are the CLI's config and its fingerprint.
func printCheck(w io.Writer, res workflows.CheckResult, cfgFile, own string) {
	for i, h := range res.Hosts {
		if i > 0 {
			fmt.Fprintln(w)
		}
		state := "agent not reached"
		if h.Reached {
			state = "config " + h.ConfigFile
		}
		fmt.Fprintf(w, "HOST %s (%s)\n", h.Host, state)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "  CHECK\tRESULT\tDETAIL\n")
		for _, c := range h.Checks {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", c.Check, c.Result, c.Detail)
			if c.Fix != "" && c.Result != activities.CheckOK {
				fmt.Fprintf(tw, "  \t\tfix: %s\n", c.Fix)
			}
		}
		_ = tw.Flush()
	}
	fmt.Fprintln(w)
	if ref := referenceFingerprint(res); ref != "" && ref != own {
		fmt.Fprintf(w, "note: this command's config %s (fingerprint %.12s) differs from the agents' (%.12s)\n", cfgFile, own, ref)
	}
	verdict := "all checks passed"
	if res.Failed > 0 || res.Warned > 0 {
		verdict = fmt.Sprintf("%d failed, %d warning(s)", res.Failed, res.Warned)
	}
	fmt.Fprintf(w, "checked %d host(s): %s\n", len(res.Hosts), verdict)
}

// referenceFingerprint is the fingerprint the workflow found on most agents ("" if none).
func referenceFingerprint(res workflows.CheckResult) string {
	n := map[string]int{}
	ref := ""
	for _, h := range res.Hosts {
		if h.Fingerprint == "" {
			continue
		}
		n[h.Fingerprint]++
		if ref == "" || n[h.Fingerprint] > n[ref] {
			ref = h.Fingerprint
		}
	}
	return ref
}
