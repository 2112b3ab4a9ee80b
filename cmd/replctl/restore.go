package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/replctl/replctl/workflows"
)

// RestoreOptions are the arguments and flags of `replctl restore`.
type RestoreOptions struct {
	Job    string
	Image  string
	To     string
	Output string
}

// NewCmdRestore is `replctl restore JOB IMAGE --to PATH`.
func NewCmdRestore(f *Factory, runF func(*RestoreOptions) error) *cobra.Command {
	o := &RestoreOptions{}
	cmd := &cobra.Command{
		Use:   "restore JOB IMAGE --to PATH",
		Short: "Bring an image (a retained point in time) back into a new directory on the target storage",
		Long: "Materialise IMAGE of JOB (see `replctl images`) in PATH, an absolute path beneath the job's\n" +
			"target storage as the agents mount it, on an agent of the target order: every entry with\n" +
			"its metadata, holes and extras, verified in full. PATH must be new or empty, and neither a\n" +
			"dataset of the job nor inside one, nor replctl's own directory: a restore never writes\n" +
			"over live data or a replica.",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return usageError("want JOB and IMAGE")
			}
			return nil
		},
		ValidArgsFunction: completeJobs(f, false),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Job, o.Image = args[0], args[1]
			if o.To == "" || !filepath.IsAbs(o.To) || filepath.Clean(o.To) != o.To {
				return usageError("--to must be a clean absolute path, got %q", o.To)
			}
			if err := checkOutput(o.Output); err != nil {
				return err
			}
			if runF != nil {
				return runF(o)
			}
			return runRestore(cmd.Context(), f, o)
		},
	}
	cmd.Flags().StringVar(&o.To, "to", "", "where to restore: a new or empty directory beneath the target storage")
	addOutputFlag(cmd, &o.Output)
	return cmd
}

func runRestore(ctx context.Context, f *Factory, o *RestoreOptions) error {
	var res workflows.RestoreResult
	if err := runJobWorkflow(ctx, f, o.Job, workflows.RestoreID(o.Job), workflows.RestoreWorkflowName,
		workflows.RestoreInput{Job: o.Job, Image: o.Image, To: o.To, By: whoAmI()}, &res, "restore of "+o.Job); err != nil {
		return err
	}
	r := res.Result
	return f.Render(o.Output, r, func(w io.Writer) {
		fmt.Fprintf(w, "image %s restored to %s: %d files, %s, verified=%t, by agent %s in %s\n",
			r.Image, r.Path, r.Files, humanBytes(r.Bytes), r.Verified, r.Agent, r.Duration.Round(1e6))
	})
}
