package workflows

import (
	"errors"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/replctl/replctl/activities"
)

// preflightChange is the GetVersion change ID of the preflight: runs recorded before it
// went straight to the precopy or the quiesce.
const preflightChange = "preflight-storage"

// preflight has the source role's agent check on disk, before the precopy and the quiesce,
// what the push will read: its host's storage roots and each source dataset (an existing
// directory, no symlink on its way beneath the storage root). A problem fails the run as bad
// input before any script runs. A failback pushes the target's published replicas (reached
// through their link on purpose) and is not checked here.
func (w *replication) preflight(ctx workflow.Context) error {
	if w.failback != nil {
		return nil
	}
	if !changed(ctx, preflightChange) {
		return nil
	}
	return w.onRole(ctx, w.roles.source, activities.StepPreflight, func(ctx workflow.Context, agent string, _ *activities.Progress) error {
		in, err := w.preflightInput(agent)
		if err != nil {
			return err
		}
		var res activities.PreflightResult
		return workflow.ExecuteActivity(ctx, activities.PreflightName, in).Get(ctx, &res)
	})
}

// preflightInput is the preflight of agent: the source datasets as it sees them.
func (w *replication) preflightInput(agent string) (activities.PreflightInput, error) {
	storage, datasets := w.plan.Source.Storage, w.plan.Source.List()
	dirs := make([]string, len(datasets))
	for i, ds := range datasets {
		dir, err := w.plan.DatasetDir(agent, storage, ds)
		if err != nil {
			return activities.PreflightInput{}, nonRetryable(err)
		}
		dirs[i] = dir
	}
	return activities.PreflightInput{
		Job: w.plan.Job, RunID: w.status.RunID, Agent: agent, Storage: storage, Datasets: datasets, SourceDirs: dirs,
	}, nil
}

// preflightInPrecopy tells whether the precopy's first activity does the preflight (one
// step less before quiesce). Runs recorded before it ran the preflight as its own step.
func (w *replication) preflightInPrecopy(ctx workflow.Context) bool {
	if !w.precopyRuns() {
		return false
	}
	return changed(ctx, "preflight-in-precopy")
}

// preflightRefused tells whether a precopy that carried the preflight failed for what the
// preflight checks: the run must not go on (another agent would see the same).
func preflightRefused(err error) bool {
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) {
		return false
	}
	switch appErr.Type() {
	case activities.ErrTypeBadInput, activities.ErrTypeRefused, activities.ErrTypeUnsupported:
		return true
	}
	return false
}
