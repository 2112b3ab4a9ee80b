package workflows

import (
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/replctl/replctl/activities"
)

// warmChange: a run asks each target's first agent to read its replicas' metadata while the
// source pushes (activities.WarmReplica), so that the pull finds it in the kernel's caches.
const warmChange = "warm-targets-beside-push"

// warmTargets starts one WarmReplica per target on the first agent of its order, beside the
// steps before the pull, when the job says read_ahead. The run never waits for them and
// nothing depends on their outcome (a failed or timed-out warm changes no step); the
// result's event costs the run one workflow task of its own, during the push. A warm still
// reading when the run ends stops at its next heartbeat, which the server then refuses.
func (w *replication) warmTargets(ctx workflow.Context) {
	if w.failback != nil || !w.plan.ReadAhead || !changed(ctx, warmChange) {
		return
	}
	t := w.plan.Timeouts
	for _, tp := range w.plan.AllTargets() {
		if len(tp.Order) == 0 {
			continue
		}
		agent := tp.Order[0]
		root, err := w.plan.RootOf(agent, tp.Storage)
		if err != nil {
			continue
		}
		actx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
			TaskQueue:              HostQueue(agent),
			ScheduleToStartTimeout: t.ScheduleToStart,
			StartToCloseTimeout:    t.StartToClose,
			HeartbeatTimeout:       t.Heartbeat,
			RetryPolicy:            &temporal.RetryPolicy{MaximumAttempts: 1},
			Summary:                "warm " + tp.Storage + " on " + agent,
		})
		workflow.ExecuteActivity(actx, activities.WarmName, activities.WarmInput{
			Job: w.plan.Job, RunID: w.status.RunID, Agent: agent, TargetRoot: root, Datasets: tp.List(),
		})
	}
}
