package workflows

import (
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/config"
)

// precopy copies the live source into the repository before quiesce, so the push made while
// quiesced only re-reads what changed since the previous image and stores nothing new: the
// freeze window shrinks to about a walk of the tree. It only saves work: a failure is noted
// and the push does everything while quiesced. It returns an error only when cancelled, or
// when the storage or the preflight refuses the run.
//
// With folded set, its first activity also does the run's preflight; when that activity
// fails otherwise, the preflight runs as its own step before anything is quiesced.
func (w *replication) precopy(ctx workflow.Context, folded bool) error {
	mode := w.plan.Precopy
	if !w.precopyRuns() {
		return nil
	}
	// Runs recorded before the precopy went straight to quiesce.
	if !changed(ctx, "precopy") {
		return nil
	}
	w.setPhase(ctx, PhasePrecopying)
	storage, datasets := w.plan.Source.Storage, w.plan.Source.List()
	started := workflow.Now(ctx)
	err := w.onRole(ctx, w.roles.source, activities.StepPrecopy, func(ctx workflow.Context, agent string, _ *activities.Progress) error {
		repo, err := w.plan.Repo(agent)
		if err != nil {
			return nonRetryable(err)
		}
		sum := Precopy{Agent: agent}
		for i, ds := range datasets {
			src, err := w.plan.DatasetDir(agent, storage, ds)
			if err != nil {
				return nonRetryable(err)
			}
			in := activities.PrecopyInput{
				Job: w.plan.Job, RunID: w.status.RunID, Agent: agent, SourceDir: src, Dataset: ds,
				Repo: repo, First: mode == config.PrecopyAlways,
			}
			if folded && i == 0 {
				pf, err := w.preflightInput(agent)
				if err != nil {
					return err
				}
				in.Preflight = &pf
			}
			var res activities.PrecopyResult
			err = workflow.ExecuteActivity(ctx, activities.PrecopyName, in).Get(ctx, &res)
			if err != nil {
				return err
			}
			sum.Bytes += res.Bytes
			sum.Files += res.Files
			sum.Reused += res.Reused
			if res.Skipped {
				sum.SkippedDatasets++
			}
		}
		sum.Skipped = len(datasets) > 0 && sum.SkippedDatasets == len(datasets)
		sum.Seconds = workflow.Now(ctx).Sub(started).Seconds()
		w.status.Precopy = &sum
		return nil
	})
	if err != nil {
		if temporal.IsCanceledError(err) || ctx.Err() != nil {
			return err
		}
		// A storage that refuses the precopy refuses the push: fail before quiescing.
		// (Runs recorded before storage faults were told apart went on to quiesce.)
		if classifyFault(err) == faultStorage && changed(ctx, "precopy-storage-fault") {
			return err
		}
		if folded {
			if preflightRefused(err) {
				return err
			}
			// The preflight may not have run to its end: it runs on its own before quiesce.
			if perr := w.preflight(ctx); perr != nil {
				return perr
			}
		}
		w.note("precopy failed, so the push reads everything while quiesced: " + rootMessage(err))
	}
	return nil
}

// precopyRuns tells whether the run has a precopy step (the agent may still find it
// has nothing to gain: PrecopyResult.Skipped).
func (w *replication) precopyRuns() bool {
	mode := w.plan.Precopy
	return w.plan.Application.Quiesce != "" && w.failback == nil && (mode == config.PrecopyAuto || mode == config.PrecopyAlways)
}
