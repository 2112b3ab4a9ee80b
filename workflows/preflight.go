package workflows

import (
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
	if workflow.GetVersion(ctx, preflightChange, workflow.DefaultVersion, 1) == workflow.DefaultVersion {
		return nil
	}
	storage, datasets := w.plan.Source.Storage, w.plan.Source.List()
	return w.onRole(ctx, w.roles.source, activities.StepPreflight, func(ctx workflow.Context, agent string, _ *activities.Progress) error {
		dirs := make([]string, len(datasets))
		for i, ds := range datasets {
			dir, err := w.plan.DatasetDir(agent, storage, ds)
			if err != nil {
				return nonRetryable(err)
			}
			dirs[i] = dir
		}
		var res activities.PreflightResult
		return workflow.ExecuteActivity(ctx, activities.PreflightName, activities.PreflightInput{
			Job: w.plan.Job, RunID: w.status.RunID, Agent: agent, Storage: storage, Datasets: datasets, SourceDirs: dirs,
		}).Get(ctx, &res)
	})
}
