package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/workflows"
)

// ImagesOptions are the arguments and flags of `replctl images`.
type ImagesOptions struct {
	Job    string
	Output string
}

// NewCmdImages is `replctl images JOB`.
func NewCmdImages(f *Factory, runF func(*ImagesOptions) error) *cobra.Command {
	o := &ImagesOptions{}
	cmd := &cobra.Command{
		Use:   "images JOB",
		Short: "List the job's images in its repository: time, files, bytes (the points in time kept)",
		Long: "List the images of JOB's source dataset in the job's repository, newest first, as an agent of\n" +
			"the target order reads them: time, files, bytes, and whether the image keeps extras (xattrs,\n" +
			"hard links, special files) or lacks entries (on_unsupported: skip). Incomplete checkpoints\n" +
			"of pushes that did not finish are listed as such.",
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
			return runImages(cmd.Context(), f, o)
		},
	}
	addOutputFlag(cmd, &o.Output)
	return cmd
}

func runImages(ctx context.Context, f *Factory, o *ImagesOptions) error {
	var res activities.ImagesResult
	if err := runJobWorkflow(ctx, f, o.Job, workflows.ImagesID(o.Job), workflows.ImagesWorkflowName,
		workflows.ImagesInput{Job: o.Job}, &res, "listing of the images of "+o.Job); err != nil {
		return err
	}
	return f.Render(o.Output, res, func(w io.Writer) { printImages(w, res, f.now()) })
}

func printImages(w io.Writer, res activities.ImagesResult, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "IMAGE\tTIME\tAGE\tFILES\tSIZE\tNOTE\n")
	for _, im := range res.Images {
		note := ""
		switch {
		case im.Incomplete != "":
			note = "checkpoint (" + im.Incomplete + ")"
		case im.Lacks != nil:
			note = "INCOMPLETE: " + im.Lacks.Kinds()
		case im.Extras:
			note = "with extras"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", im.ID, im.Time.Format(time.RFC3339), now.Sub(im.Time).Round(time.Second), im.Files, humanBytes(im.Bytes), note)
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "%d images of dataset %s, read by agent %s\n", len(res.Images), res.Dataset, res.Agent)
}
