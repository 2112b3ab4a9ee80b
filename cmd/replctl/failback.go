package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/replctl/replctl/activities/dataplane"
	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/workflows"
)

// FailbackOptions are the arguments and flags of `replctl failback`.
type FailbackOptions struct {
	Job string
	// From is the target storage to copy back from ("" = the job's first target).
	From   string
	Wait   bool
	Output string
	// Yes confirms that the source dataset is replaced: without it the command only shows
	// what would be replaced.
	Yes bool
	// PrimaryDown lets the run go on when the primary application host cannot be reached to
	// run its check script.
	PrimaryDown bool
}

// NewCmdFailback is `replctl failback JOB [--from STORAGE] [--yes] [--primary-down] [--wait]`.
func NewCmdFailback(f *Factory, runF func(*FailbackOptions) error) *cobra.Command {
	o := &FailbackOptions{}
	cmd := &cobra.Command{
		Use:   "failback JOB",
		Short: "Copy a job's target replica back to its source after a failover",
		Long: "Reverse JOB after a failover: check that the application on the primary is stopped\n" +
			"(application.check), quiesce the application on the target side (failback.application), push the\n" +
			"target's current replica into the job's repository (only changed data is written), resume, then\n" +
			"rebuild the source dataset beside it and switch it in with one atomic rename (what was there is\n" +
			"kept under .replctl/failback/ on the source storage).\n" +
			"The job must allow it (failback: {allow: true}). Without --yes the command shows what would be\n" +
			"replaced and exits 2. Procedure: stop the application on the primary and on the DR side (or let\n" +
			"failback.application quiesce it), pause the job's schedule, run failback --yes --wait, start the\n" +
			"application on the primary, unpause the schedule. Exit codes and -o json as for start (5: a run is going).",
		Args: exactArgs(1, "one job name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Job = args[0]
			if err := checkOutput(o.Output); err != nil {
				return err
			}
			if runF != nil {
				return runF(o)
			}
			return runFailback(cmd.Context(), f, o, startFailback(f))
		},
	}
	cmd.Flags().StringVar(&o.From, "from", "", "target storage to copy back from (default: the job's first target)")
	cmd.Flags().BoolVar(&o.Yes, "yes", false, "replace the source dataset: without it, only show what would be replaced")
	cmd.Flags().BoolVar(&o.PrimaryDown, "primary-down", false, "the primary host is down: go on when its application check cannot reach it (the run notes it)")
	cmd.Flags().BoolVarP(&o.Wait, "wait", "w", false, "wait for the run to end; the exit code tells how it ended")
	addOutputFlag(cmd, &o.Output)
	return cmd
}

// failbackStarter starts the confirmed failback run (tests fake it).
type failbackStarter func(ctx context.Context, cfg *config.Config, o *StartOptions) error

// startFailback starts the run on Temporal and, with --wait, reports how it ended.
func startFailback(f *Factory) failbackStarter {
	return func(ctx context.Context, cfg *config.Config, o *StartOptions) error {
		c, err := f.Client(ctx)
		if err != nil {
			return err
		}
		defer c.Close()
		return startRun(ctx, f, c, cfg.Temporal.TaskQueue, o)
	}
}

// runFailback refuses a job that does not allow failback, shows what the failback replaces
// and, only with --yes, starts it with the typed confirmation the workflow wants.
func runFailback(ctx context.Context, f *Factory, o *FailbackOptions, start failbackStarter) error {
	cfg, job, err := f.Job(o.Job)
	if err != nil {
		return err
	}
	if job.Failback == nil || !job.Failback.Allow {
		return usageError("job %s does not allow failback: set `failback: {allow: true}` on it (jobs[%d].failback.allow in %s) on every agent's host; see config/REFERENCE.md",
			o.Job, slices.IndexFunc(cfg.Jobs, func(j config.Job) bool { return j.Name == o.Job }), cfg.File)
	}
	var storages []string
	target := job.AllTargets()[0]
	for _, t := range job.AllTargets() {
		storages = append(storages, t.Storage)
		if t.Storage == o.From {
			target = t
		}
	}
	if o.From != "" && !slices.Contains(storages, o.From) {
		return usageError("--from %q: job %s has no target on that storage (targets: %v)", o.From, o.Job, storages)
	}
	printFailbackPlan(f.ErrOut, cfg, job, target, time.Now())
	if !o.Yes {
		return usageError("failback of job %s replaces the source data shown above: add --yes to go ahead", o.Job)
	}
	return start(ctx, cfg, &StartOptions{Job: o.Job, Wait: o.Wait, Output: o.Output, Direction: workflows.DirectionFailback, From: o.From, Confirm: o.Job, PrimaryDown: o.PrimaryDown})
}

// printFailbackPlan shows, per dataset, the source directory the failback replaces and the
// target replica it is replaced with (read from the target's layout when this machine sees
// the target storage), and how the run knows the primary application is stopped.
func printFailbackPlan(w io.Writer, cfg *config.Config, job *config.Job, target config.Target, now time.Time) {
	srcHost := job.Order.Source[0]
	mount := ""
	if h, err := cfg.Host(srcHost); err == nil {
		mount, _ = h.Mount(job.Source.Storage)
	}
	troot, terr := targetRoot(cfg, &config.Job{Name: job.Name, Targets: []config.Target{target}})
	fmt.Fprintf(w, "failback of job %s replaces, on source storage %s, with target %s's current replica:\n", job.Name, job.Source.Storage, target.Storage)
	tds := target.Endpoint().List()
	for i, ds := range job.Source.List() {
		fmt.Fprintf(w, "  %s: %s on host %s\n", ds, filepath.Join(mount, filepath.FromSlash(ds)), srcHost)
		if i >= len(tds) {
			continue
		}
		fmt.Fprintf(w, "    with %s:%s: %s\n", target.Storage, tds[i], currentReplica(troot, terr, tds[i], now))
	}
	fmt.Fprintf(w, "  the replaced directories are kept under %s/.replctl/failback/\n", mount)
	switch {
	case job.Application.Check != "":
		fmt.Fprintf(w, "  the primary application on host %s must be stopped: its check script %s runs first and refuses the run otherwise\n", job.Application.Host, job.Application.Check)
	default:
		fmt.Fprintf(w, "  no check script (failback.primary_stopped: operator): your --yes says the application on host %s is stopped\n", job.Application.Host)
	}
}

// currentReplica describes the replica a target dataset link points to, as far as this
// machine can tell.
func currentReplica(root string, rootErr error, ds string, now time.Time) string {
	if rootErr != nil {
		return "replica not known here (" + rootErr.Error() + ")"
	}
	infos, err := dataplane.ListReplicas(root, ds)
	if err != nil {
		return "replica not known: " + err.Error()
	}
	for _, ri := range infos {
		if ri.Current {
			return fmt.Sprintf("replica %s, published %s (%s ago), plus what the application changed in it since",
				ri.Name, ri.ModTime.UTC().Format(time.DateTime+" UTC"), now.Sub(ri.ModTime).Round(time.Second))
		}
	}
	return "no current replica (the failback will be refused: nothing to copy back)"
}
