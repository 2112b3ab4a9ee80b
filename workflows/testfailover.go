package workflows

import (
	"fmt"

	"go.temporal.io/sdk/workflow"

	"github.com/replctl/replctl/activities"
)

// TestFailoverWorkflowName opens or removes a writable test copy of a replica on the target,
// while scheduled replication goes on. The run records who tested what and when (memo and
// the run itself, searchable by ReplctlJob).
const TestFailoverWorkflowName = "TestFailover"

// TestFailoverInput says which replica to open (""= current) under which name, and who asks.
type TestFailoverInput struct {
	Job     string `json:"job"`
	Replica string `json:"replica,omitempty"`
	Name    string `json:"name"`
	Cleanup bool   `json:"cleanup,omitempty"`
	By      string `json:"by,omitempty"`
}

// TestFailoverResult is where the copy is.
type TestFailoverResult struct {
	Status Status                    `json:"status"`
	Copy   activities.TestCopyResult `json:"copy"`
}

// TestFailover runs TestCopy on the job's target order with the takeover protocol.
func TestFailover(ctx workflow.Context, in TestFailoverInput) (TestFailoverResult, error) {
	w, err := newReplication(ctx, in.Job)
	if err != nil {
		return TestFailoverResult{}, err
	}
	var res activities.TestCopyResult
	err = w.setup(ctx)
	if err == nil {
		w.setPhase(ctx, "test-failover")
		err = w.onRole(ctx, w.roles.target, activities.StepTestCopy, func(ctx workflow.Context, agent string, _ *activities.Progress) error {
			root, err := w.plan.TargetRoot(agent)
			if err != nil {
				return nonRetryable(err)
			}
			return workflow.ExecuteActivity(ctx, activities.TestCopyName, activities.TestCopyInput{
				Job: w.plan.Job, Agent: agent, TargetRoot: root, Dataset: w.plan.Target.Dataset,
				Replica: in.Replica, Name: in.Name, Cleanup: in.Cleanup,
			}).Get(ctx, &res)
		})
	}
	w.status.FinishedAt = workflow.Now(ctx)
	if err != nil {
		w.status.Error = rootMessage(err)
		w.setPhase(workflowDisconnected(ctx), endPhase(ctx, err))
		return TestFailoverResult{Status: w.status}, err
	}
	w.setPhase(ctx, PhaseCompleted)
	what := fmt.Sprintf("test copy %s of replica %s opened at %s", res.Name, res.Replica, res.Path)
	if in.Cleanup {
		what = fmt.Sprintf("test copy %s removed", in.Name)
	}
	_ = workflow.UpsertMemo(ctx, map[string]any{"summary": what + " by " + in.By, "by": in.By, "replica": res.Replica, "path": res.Path})
	return TestFailoverResult{Status: w.status, Copy: res}, nil
}
