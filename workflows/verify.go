package workflows

import (
	"fmt"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/replctl/replctl/activities"
)

// VerifyWorkflowName checks a job's replicas on its target against their images (replctl
// verify): read-only, beside scheduled replication.
const VerifyWorkflowName = "VerifyReplicas"

// VerifyInput says which replicas of the job to check: Replica ("" = the current one), or
// All. Repair rebuilds each damaged one from its image in its place; a repair writes to the
// target like a pull, so it runs under the job's own workflow ID (WorkflowID), never beside
// a replication run.
type VerifyInput struct {
	Job     string `json:"job"`
	Replica string `json:"replica,omitempty"`
	All     bool   `json:"all,omitempty"`
	Repair  bool   `json:"repair,omitempty"`
}

// VerifyResult is the check of each replica.
type VerifyResult struct {
	Status Status                  `json:"status"`
	Result activities.VerifyResult `json:"result"`
}

// Verify runs VerifyReplicas on the job's target order with the takeover protocol.
func Verify(ctx workflow.Context, in VerifyInput) (VerifyResult, error) {
	phase := "verifying"
	if in.Repair {
		if id := workflow.GetInfo(ctx).WorkflowExecution.ID; id != WorkflowID(in.Job) {
			return VerifyResult{}, temporal.NewNonRetryableApplicationError(fmt.Sprintf(
				"this repair's workflow ID is %q, but a repair of job %q writes replicas and must hold the job's workflow ID %q, so that it never runs beside a replication run: use `replctl verify %s --repair`",
				id, in.Job, WorkflowID(in.Job), in.Job), ErrTypeNotJobsID, nil)
		}
		phase = "repairing"
	}
	repairName := replicaName(ctx)
	st, res, err := targetStep[activities.VerifyResult](ctx, in.Job, phase, activities.StepVerify, activities.VerifyName,
		func(w *replication, agent, root string, repo activities.RepoLocation) any {
			vi := activities.VerifyInput{Job: w.plan.Job, Agent: agent, TargetRoot: root, Dataset: w.plan.Target.Dataset,
				Replica: in.Replica, All: in.All, Repo: repo}
			if in.Repair {
				vi.Repair, vi.RepairName, vi.Epoch = true, repairName, w.nextEpoch(ctx)
			}
			return vi
		})
	return VerifyResult{Status: st, Result: res}, err
}

// ImagesWorkflowName lists a job's images in its repository (replctl images).
const ImagesWorkflowName = "ListImages"

// ImagesInput names the job.
type ImagesInput struct {
	Job string `json:"job"`
}

// Images runs ListImages on the job's target order (those agents reach the repository).
func Images(ctx workflow.Context, in ImagesInput) (activities.ImagesResult, error) {
	_, res, err := targetStep[activities.ImagesResult](ctx, in.Job, "listing", "images", activities.ImagesName,
		func(w *replication, agent, _ string, repo activities.RepoLocation) any {
			return activities.ImagesInput{Job: w.plan.Job, Agent: agent, Repo: repo}
		})
	return res, err
}

// targetStep runs one activity on the job's target order with the takeover protocol and
// the run's status and phases (verify, images, restore): input makes the activity's input
// for an agent, its target root and repository as the plan resolves them.
func targetStep[R any](ctx workflow.Context, job, phase string, step activities.Step, activity string,
	input func(w *replication, agent, root string, repo activities.RepoLocation) any) (Status, R, error) {
	var res R
	w, err := newReplication(ctx, job)
	if err != nil {
		return Status{}, res, err
	}
	err = w.setup(ctx)
	if err == nil {
		w.setPhase(ctx, phase)
		err = w.onRole(ctx, w.roles.target, step, func(ctx workflow.Context, agent string, _ *activities.Progress) error {
			root, err := w.plan.TargetRoot(agent)
			if err != nil {
				return nonRetryable(err)
			}
			repo, err := w.plan.Repo(agent)
			if err != nil {
				return nonRetryable(err)
			}
			return workflow.ExecuteActivity(ctx, activity, input(w, agent, root, repo)).Get(ctx, &res)
		})
	}
	w.status.FinishedAt = workflow.Now(ctx)
	if err != nil {
		w.status.Error = rootMessage(err)
		w.setPhase(workflowDisconnected(ctx), endPhase(ctx, err))
		return w.status, res, err
	}
	w.setPhase(ctx, PhaseCompleted)
	return w.status, res, nil
}
