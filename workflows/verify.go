package workflows

import (
	"go.temporal.io/sdk/workflow"

	"github.com/replctl/replctl/activities"
)

// VerifyWorkflowName checks a job's replicas on its target against their images (replctl
// verify): read-only, beside scheduled replication.
const VerifyWorkflowName = "VerifyReplicas"

// VerifyID is the workflow ID of a job's verification. "." is not in job names, so it never
// is a replication's ID (WorkflowID).
func VerifyID(job string) string { return "replctl-verify." + job }

// VerifyInput says which replicas of the job to check: Replica ("" = the current one), or
// All.
type VerifyInput struct {
	Job     string `json:"job"`
	Replica string `json:"replica,omitempty"`
	All     bool   `json:"all,omitempty"`
}

// VerifyResult is the check of each replica.
type VerifyResult struct {
	Status Status                  `json:"status"`
	Result activities.VerifyResult `json:"result"`
}

// Verify runs VerifyReplicas on the job's target order with the takeover protocol.
func Verify(ctx workflow.Context, in VerifyInput) (VerifyResult, error) {
	w, err := newReplication(ctx, in.Job)
	if err != nil {
		return VerifyResult{}, err
	}
	var res activities.VerifyResult
	err = w.setup(ctx)
	if err == nil {
		w.setPhase(ctx, "verifying")
		err = w.onRole(ctx, w.roles.target, "verify", func(ctx workflow.Context, agent string, _ *activities.Progress) error {
			root, err := w.plan.TargetRoot(agent)
			if err != nil {
				return nonRetryable(err)
			}
			repo, err := w.plan.Repo(agent)
			if err != nil {
				return nonRetryable(err)
			}
			return workflow.ExecuteActivity(ctx, activities.VerifyName, activities.VerifyInput{
				Job: w.plan.Job, Agent: agent, TargetRoot: root, Dataset: w.plan.Target.Dataset,
				Replica: in.Replica, All: in.All, Repo: repo,
			}).Get(ctx, &res)
		})
	}
	w.status.FinishedAt = workflow.Now(ctx)
	if err != nil {
		w.status.Error = rootMessage(err)
		w.setPhase(workflowDisconnected(ctx), endPhase(ctx, err))
		return VerifyResult{Status: w.status}, err
	}
	w.setPhase(ctx, PhaseCompleted)
	return VerifyResult{Status: w.status, Result: res}, nil
}

// ImagesWorkflowName lists a job's images in its repository (replctl images).
const ImagesWorkflowName = "ListImages"

// ImagesID is the workflow ID of a listing of a job's images ("." is in no job name).
func ImagesID(job string) string { return "replctl-images." + job }

// ImagesInput names the job.
type ImagesInput struct {
	Job string `json:"job"`
}

// Images runs ListImages on the job's target order (those agents reach the repository).
func Images(ctx workflow.Context, in ImagesInput) (activities.ImagesResult, error) {
	w, err := newReplication(ctx, in.Job)
	if err != nil {
		return activities.ImagesResult{}, err
	}
	var res activities.ImagesResult
	if err := w.setup(ctx); err != nil {
		return res, err
	}
	err = w.onRole(ctx, w.roles.target, "images", func(ctx workflow.Context, agent string, _ *activities.Progress) error {
		repo, err := w.plan.Repo(agent)
		if err != nil {
			return nonRetryable(err)
		}
		return workflow.ExecuteActivity(ctx, activities.ImagesName, activities.ImagesInput{Job: w.plan.Job, Agent: agent, Repo: repo}).Get(ctx, &res)
	})
	return res, err
}
