package workers

import (
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/workflows"
)

// The server's roles allow exactly the registered names: each listed once, the check
// included (it was once missing from a hand-written list, and mutual-TLS deployments
// refused `replctl check`).
func TestRegisteredNames(t *testing.T) {
	for _, ns := range [][]string{ActivityNames(), WorkflowNames()} {
		c := slices.Clone(ns)
		slices.Sort(c)
		require.Equal(t, len(c), len(slices.Compact(c)), "a name registered twice: %v", ns)
	}
	require.Contains(t, ActivityNames(), activities.CheckHostName)
	require.Contains(t, ActivityNames(), activities.PlanName)
	require.Contains(t, WorkflowNames(), workflows.CheckWorkflowName)
	require.Contains(t, WorkflowNames(), workflows.VerifyWorkflowName)
	for _, s := range activities.Steps {
		if s.Activity != "" {
			require.Contains(t, ActivityNames(), s.Activity, "step %s", s.Step)
		}
	}
}
