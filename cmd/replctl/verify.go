package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/replctl/replctl/workflows"
)

// VerifyOptions are the arguments and flags of `replctl verify`.
type VerifyOptions struct {
	Job     string
	Replica string
	All     bool
	Repair  bool
	Output  string
}

// NewCmdVerify is `replctl verify JOB [REPLICA|--all] [--repair]`.
func NewCmdVerify(f *Factory, runF func(*VerifyOptions) error) *cobra.Command {
	o := &VerifyOptions{}
	cmd := &cobra.Command{
		Use:   "verify JOB [REPLICA|--all] [--repair]",
		Short: "Check replicas on the target against their images; list every difference",
		Long: "Check the current replica of JOB (or REPLICA, or with --all every retained one) on the job's\n" +
			"target against the image it was built from: names, types, content, sizes, modes, owners,\n" +
			"mtimes, holes, xattrs, ACLs, capabilities, hard-link groups and special files. It runs on an\n" +
			"agent of the target order (read-only) and lists every difference, up to 100 per replica.\n" +
			"Exit 6 (kind damaged) when a replica differs from its image.\n\n" +
			"With --repair, each damaged replica is rebuilt from its image as a new, verified replica that\n" +
			"takes its place (the current one's link, its place in retention); files of the damaged replica\n" +
			"are reused only when their content is read and matches. A repair writes to the target, so it\n" +
			"runs as the job's run (workflow replctl-JOB): never beside a replication; exit 5 if one is going.\n" +
			"Exit 0 when every damaged replica was repaired.",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return usageError("want JOB and at most one REPLICA")
			}
			return nil
		},
		ValidArgsFunction: completeJobs(f, false),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Job = args[0]
			if len(args) == 2 {
				o.Replica = args[1]
			}
			if o.Replica != "" && o.All {
				return usageError("give a REPLICA or --all, not both")
			}
			if err := checkOutput(o.Output); err != nil {
				return err
			}
			if runF != nil {
				return runF(o)
			}
			return runVerify(cmd.Context(), f, o)
		},
	}
	cmd.Flags().BoolVar(&o.All, "all", false, "check every retained replica, not only the current one")
	cmd.Flags().BoolVar(&o.Repair, "repair", false, "rebuild each damaged replica from its image in its place")
	addOutputFlag(cmd, &o.Output)
	return cmd
}

func runVerify(ctx context.Context, f *Factory, o *VerifyOptions) error {
	var res workflows.VerifyResult
	id, what := workflows.VerifyID(o.Job), "verification of "+o.Job
	if o.Repair {
		// A repair writes replicas: it holds the job's own ID, as a replication run does.
		id, what = workflows.WorkflowID(o.Job), "run of job "+o.Job
	}
	if err := runJobWorkflow(ctx, f, o.Job, id, workflows.VerifyWorkflowName,
		workflows.VerifyInput{Job: o.Job, Replica: o.Replica, All: o.All, Repair: o.Repair}, &res, what); err != nil {
		return err
	}
	if err := f.Render(o.Output, res.Result, func(w io.Writer) { printVerify(w, res) }); err != nil {
		return err
	}
	return verifyOutcome(o.Job, res)
}

// verifyOutcome is ExitDamaged when a replica differs from its image.
func verifyOutcome(job string, res workflows.VerifyResult) error {
	n := 0
	for _, r := range res.Result.Replicas {
		if r.Damaged && r.Repaired == nil {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	return &ExitError{Code: ExitDamaged, Err: fmt.Errorf("job %s: %d of %d replicas checked differ from their images", job, n, len(res.Result.Replicas))}
}

func printVerify(w io.Writer, res workflows.VerifyResult) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "REPLICA\tCURRENT\tRESULT\tIMAGE\n")
	for _, r := range res.Result.Replicas {
		result := "ok"
		switch {
		case r.Note != "":
			result = "not checked: " + r.Note
		case r.Damaged && r.Repaired != nil:
			result = fmt.Sprintf("REPAIRED: %d differences; now replica %s (%d entries written from the repository, %d files reused after reading)",
				r.Differences.Count, r.Repaired.Name, r.Repaired.Restored, r.Repaired.Linked)
		case r.Damaged:
			result = fmt.Sprintf("DAMAGED: %d differences", r.Differences.Count)
		}
		fmt.Fprintf(tw, "%s\t%t\t%s\t%s\n", r.Name, r.Current, result, r.Image)
	}
	_ = tw.Flush()
	for _, r := range res.Result.Replicas {
		for _, d := range r.Differences.First {
			fmt.Fprintf(w, "%s: %s\n", r.Name, d)
		}
		if more := r.Differences.Count - len(r.Differences.First); more > 0 {
			fmt.Fprintf(w, "%s: ... and %d more\n", r.Name, more)
		}
	}
	fmt.Fprintf(w, "checked by agent %s in %s\n", res.Result.Agent, res.Result.Duration.Round(1e6))
}
