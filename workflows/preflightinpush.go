package workflows

import (
	"go.temporal.io/sdk/workflow"

	"github.com/replctl/replctl/activities"
)

// The preflight in a push that quiesces nothing (issue 16, `preflight-in-push`). A job
// without a quiesce script has no fused push (quiescepush.go) and no precopy to carry its
// preflight: each attempt of its push step carries the preflight of the agent it goes to
// (activities/preflightinpush.go), which checks before it writes anything. The push step's
// takeover rules cover both: a refusal ends the run, a lost agent is taken over and its
// successor checks its own view first. Runs recorded before it ran the preflight as a step
// of its own.

// preflightInPush tells whether the push step's attempts carry the preflight; it then
// sets w.pushPreflight. Only for one dataset, outside a failback (which has no preflight),
// and for a job without a quiesce script or precopy (those carry it already).
func (w *replication) preflightInPush(ctx workflow.Context) bool {
	if w.failback != nil || w.plan.Application.Quiesce != "" || w.precopyRuns() || len(w.plan.Source.List()) != 1 {
		return false
	}
	if !changed(ctx, preflightChange) {
		// Runs recorded before the preflight had none.
		return false
	}
	if !changed(ctx, "preflight-in-push") {
		return false
	}
	w.pushPreflight = true
	return true
}

// withPreflight adds agent's preflight to in when the push step carries it.
func (w *replication) withPreflight(in *activities.PushInput) error {
	if !w.pushPreflight {
		return nil
	}
	pf, err := w.preflightInput(in.Agent)
	if err != nil {
		return err
	}
	in.Before = &activities.BeforeQuiesce{Preflight: pf}
	return nil
}
