package workflows

import (
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// endPhase is the phase a maintenance or test-failover run that returns err ends in: a
// cancel is "cancelled", not "failed" (versioned: runs recorded before said "failed").
func endPhase(ctx workflow.Context, err error) string {
	if temporal.IsCanceledError(err) && changed(ctx, "cancel-phase-is-cancelled") {
		return PhaseCancelled
	}
	return PhaseFailed
}
