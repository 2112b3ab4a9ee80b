package workflows

import (
	"go.temporal.io/sdk/workflow"

	"github.com/replctl/replctl/activities"
)

// MaintenanceWorkflowName is the workflow that maintains a job's repository (index
// compaction; with Full, garbage collection of data no image refers to, e.g. what killed
// pushes left). Its workflow ID is per repository (MaintenanceID), so a repository has
// exactly one maintainer at a time even when several jobs share it.
const MaintenanceWorkflowName = "RepositoryMaintenance"

// MaintenanceInput names a job using the repository (for its plan) and the kind of
// maintenance.
type MaintenanceInput struct {
	Job  string `json:"job"`
	Full bool   `json:"full"`
}

// MaintenanceResult says which agent maintained the repository.
type MaintenanceResult struct {
	Status Status                    `json:"status"`
	Result activities.MaintainResult `json:"result"`
}

// Maintenance plans the job and runs Maintain on the job's target order (those agents see
// the repository), with the same takeover protocol as a replication step.
func Maintenance(ctx workflow.Context, in MaintenanceInput) (MaintenanceResult, error) {
	w, err := newReplication(ctx, in.Job)
	if err != nil {
		return MaintenanceResult{}, err
	}
	var res activities.MaintainResult
	err = w.setup(ctx)
	if err == nil {
		w.setPhase(ctx, "maintaining")
		err = w.onRole(ctx, w.roles.target, activities.StepMaintain, func(ctx workflow.Context, agent string, _ *activities.Progress) error {
			repo, err := w.plan.Repo(agent)
			if err != nil {
				return nonRetryable(err)
			}
			return workflow.ExecuteActivity(ctx, activities.MaintainName, activities.MaintainInput{
				Job: w.plan.Job, Agent: agent, Full: in.Full,
				Repo: repo,
			}).Get(ctx, &res)
		})
	}
	w.status.FinishedAt = workflow.Now(ctx)
	if err != nil {
		w.status.Error = rootMessage(err)
		w.setPhase(workflowDisconnected(ctx), endPhase(ctx, err))
	} else {
		w.setPhase(ctx, PhaseCompleted)
	}
	return MaintenanceResult{Status: w.status, Result: res}, err
}
