package workflows

import (
	"fmt"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// ScheduledWorkflowName is the workflow a job's Temporal Schedule starts. Schedules give
// their runs IDs of their own (schedule ID + time); this workflow starts the job's run as a
// child with the job's workflow ID, so scheduled and manual runs of a job never overlap.
const ScheduledWorkflowName = "ScheduledReplication"

// ScheduledResult says what a scheduled trigger did.
type ScheduledResult struct {
	// Started is false when a run of the job was already going: that tick is skipped.
	Started bool   `json:"started"`
	RunID   string `json:"run_id,omitempty"`
	Phase   string `json:"phase,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// Scheduled starts one replication run of in.Job (workflow ID WorkflowID(job)) and waits
// for it; a tick that finds a run in progress is skipped, not queued.
func Scheduled(ctx workflow.Context, in ReplicationInput) (ScheduledResult, error) {
	if !jobName.MatchString(in.Job) {
		return ScheduledResult{}, temporal.NewNonRetryableApplicationError(fmt.Sprintf(`bad schedule input: job %q: want {"job": "NAME"}`, in.Job), "BadInput", nil)
	}
	cctx := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
		WorkflowID:            WorkflowID(in.Job),
		WorkflowIDReusePolicy: enums.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		// The run outlives a terminated trigger: it must resume the application whatever happens.
		ParentClosePolicy:        enums.PARENT_CLOSE_POLICY_ABANDON,
		WorkflowTaskTimeout:      WorkflowTaskTimeout,
		WorkflowExecutionTimeout: 24 * time.Hour,
	})
	child := workflow.ExecuteChildWorkflow(cctx, ReplicationWorkflowName, in)
	var exec workflow.Execution
	if err := child.GetChildWorkflowExecution().Get(ctx, &exec); err != nil {
		if temporal.IsWorkflowExecutionAlreadyStartedError(err) {
			return ScheduledResult{Reason: "a run of job " + in.Job + " is in progress: tick skipped"}, nil
		}
		return ScheduledResult{}, err
	}
	var st Status
	err := child.Get(ctx, &st)
	res := ScheduledResult{Started: true, RunID: exec.RunID, Phase: st.Phase}
	if err != nil {
		// Failing the trigger lets the schedule's pause-on-failure act.
		return res, err
	}
	return res, nil
}

// ScheduledMaintenanceWorkflowName is the workflow a repository's maintenance schedule
// starts. Like Scheduled, it starts the real Maintenance as a child under the repository's
// MaintenanceID, so scheduled and manual maintenance never overlap (one owner at a time).
const ScheduledMaintenanceWorkflowName = "ScheduledMaintenance"

// ScheduledMaintenanceInput names the repository (for the child's workflow ID) and the job
// whose plan maintains it (its target order does the work).
type ScheduledMaintenanceInput struct {
	Job     string `json:"job"`
	Storage string `json:"storage"`
	Path    string `json:"path"`
	Full    bool   `json:"full"`
}

// ScheduledMaintenance starts one Maintenance of a repository and waits for it; a tick that
// finds a maintenance of the repository going is skipped.
func ScheduledMaintenance(ctx workflow.Context, in ScheduledMaintenanceInput) (ScheduledResult, error) {
	if !jobName.MatchString(in.Job) || in.Storage == "" || in.Path == "" {
		return ScheduledResult{}, temporal.NewNonRetryableApplicationError(fmt.Sprintf(`bad maintenance schedule input %+v: want {"job": "NAME", "storage": "S", "path": "P"}`, in), "BadInput", nil)
	}
	id := MaintenanceID(in.Storage, in.Path)
	// Runs recorded before the escaped IDs started their child under the old one.
	if !changed(ctx, "maintenance-id-escaped") {
		id = LegacyMaintenanceID(in.Storage, in.Path)
	}
	cctx := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
		WorkflowID:               id,
		WorkflowIDReusePolicy:    enums.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		ParentClosePolicy:        enums.PARENT_CLOSE_POLICY_ABANDON,
		WorkflowTaskTimeout:      WorkflowTaskTimeout,
		WorkflowExecutionTimeout: 24 * time.Hour,
	})
	child := workflow.ExecuteChildWorkflow(cctx, MaintenanceWorkflowName, MaintenanceInput{Job: in.Job, Full: in.Full})
	var exec workflow.Execution
	if err := child.GetChildWorkflowExecution().Get(ctx, &exec); err != nil {
		if temporal.IsWorkflowExecutionAlreadyStartedError(err) {
			return ScheduledResult{Reason: "a maintenance of repository " + in.Storage + ":" + in.Path + " is in progress: tick skipped"}, nil
		}
		return ScheduledResult{}, err
	}
	var res MaintenanceResult
	err := child.Get(ctx, &res)
	return ScheduledResult{Started: true, RunID: exec.RunID, Phase: res.Status.Phase}, err
}
