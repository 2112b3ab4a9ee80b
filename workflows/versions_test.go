package workflows

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"
)

// recordedBefore makes the run one recorded before the baseline (versions.go), so that
// the GetVersion mocks of single changes that follow it take effect.
func recordedBefore(env *testsuite.TestWorkflowEnvironment) {
	env.OnGetVersion(baselineChange, workflow.DefaultVersion, baselineVersion).Return(workflow.DefaultVersion)
}

// A new run asks GetVersion once, for the baseline, on any path (a lost agent's takeover
// included); a run recorded before the baseline asks for each change it reaches, and both
// do the same: every change in the baseline is one a run before it asked for and got. A
// run recorded with baseline 1 asks nothing more either, and does the same steps without
// the changes of baseline 2 (it reads no target ahead of the pull).
func TestNewRunAsksOnlyForTheBaseline(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail func(kind, agent string) error
	}{
		{"normal", func(string, string) error { return nil }},
		{"push takeover", func(kind, agent string) error {
			if agent == "a1" && kind == "push" {
				return temporal.NewTimeoutError(enums.TIMEOUT_TYPE_HEARTBEAT, nil)
			}
			return nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			serial := map[workflow.Version][]string{}
			for _, baseline := range []workflow.Version{baselineVersion, 1, workflow.DefaultVersion} {
				var asked []string
				f := &fakeAgents{fail: tc.fail, plan: readAhead(nil)}
				st, err := runWorkflowWith(t, f, ReplicationInput{Job: "orders"}, func(env *testsuite.TestWorkflowEnvironment) {
					answer := func(id string, _, maxSupported workflow.Version) workflow.Version {
						asked = append(asked, id)
						if id == baselineChange {
							return baseline
						}
						return maxSupported
					}
					env.OnGetVersion(baselineChange, workflow.DefaultVersion, baselineVersion).Return(answer)
					env.OnGetVersion(mock.Anything, workflow.DefaultVersion, 1).Return(answer)
				})
				require.NoError(t, err)
				assert.Equal(t, PhaseCompleted, st.Phase)
				if baseline != workflow.DefaultVersion {
					assert.Equal(t, []string{baselineChange}, asked)
				} else {
					assert.Greater(t, len(asked), 5, "a run recorded before the baseline asks for each change")
					assert.Contains(t, asked, warmChange)
					for _, id := range asked[1:] {
						assert.Contains(t, baselineChanges, id, "change %q is asked for by the run but not in the baseline", id)
					}
				}
				serial[baseline] = f.serial()
			}
			assert.Equal(t, serial[workflow.DefaultVersion], serial[1])
			assert.Equal(t, serial[workflow.DefaultVersion], serial[baselineVersion])
			// The warm runs beside the steps (not in serial): warm_test.go checks who asks for it.
		})
	}
}
