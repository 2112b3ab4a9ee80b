package workflows

import (
	"go.temporal.io/sdk/workflow"

	"github.com/replctl/replctl/activities"
)

// RestoreWorkflowName brings an image back into a new directory on the job's target storage
// (replctl restore).
const RestoreWorkflowName = "RestoreImage"

// RestoreInput names the image and the directory (absolute, beneath the target storage as
// the agents mount it).
type RestoreInput struct {
	Job   string `json:"job"`
	Image string `json:"image"`
	To    string `json:"to"`
	By    string `json:"by,omitempty"`
}

// RestoreResult is what was restored where.
type RestoreResult struct {
	Status Status                   `json:"status"`
	Result activities.RestoreResult `json:"result"`
}

// Restore runs RestoreImage on the job's target order with the takeover protocol.
func Restore(ctx workflow.Context, in RestoreInput) (RestoreResult, error) {
	st, res, err := targetStep[activities.RestoreResult](ctx, in.Job, "restoring", activities.StepRestore, activities.RestoreName,
		func(w *replication, agent, root string, repo activities.RepoLocation) any {
			return activities.RestoreInput{Job: w.plan.Job, Agent: agent, TargetRoot: root, Dataset: w.plan.Target.Dataset,
				ImageID: in.Image, To: in.To, Repo: repo}
		})
	if err == nil {
		_ = workflow.UpsertMemo(ctx, map[string]any{"summary": "image " + in.Image + " restored to " + res.Path + " by " + in.By})
	}
	return RestoreResult{Status: st, Result: res}, err
}
