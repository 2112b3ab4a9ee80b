package workflows

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"
)

// A run sends its search attribute updates as one command each time its coroutines block
// (before: one command per update), and each command still goes out before the activity
// that the updates describe starts: the UI shows the phase and the quiesced host while the
// step runs, and the final phase when the run ends.
func TestSearchAttributesCoalesced(t *testing.T) {
	before, beforeUpserts := searchAttributeLog(t, workflow.DefaultVersion)
	log, upserts := searchAttributeLog(t, 1)
	t.Logf("before: %d commands %v", beforeUpserts, before)
	t.Logf("now: %d commands %v", upserts, log)
	// (How many depends on whether the resume and the pull end in one workflow task.)
	assert.Less(t, upserts, beforeUpserts*2/3, "the updates are coalesced")

	lastBefore := func(activity string) string {
		last := ""
		for _, e := range log {
			if e == "start "+activity {
				return last
			}
			if strings.HasPrefix(e, "upsert") && strings.Contains(e, "phase=") {
				last = e
			}
		}
		return "activity " + activity + " never started"
	}
	assert.Contains(t, lastBefore("Push"), "phase="+PhasePushing)
	assert.Contains(t, lastBefore("Pull"), "phase="+PhasePulling)
	quiesced := ""
	for _, e := range log {
		if e == "start RunScript" {
			break
		}
		if i := strings.Index(e, "quiesced="); i >= 0 {
			quiesced = e[i:]
		}
	}
	assert.Equal(t, "quiesced=a1", quiesced, "the quiesced host is set before the quiesce script starts")
	last := ""
	for _, e := range log {
		if strings.HasPrefix(e, "upsert") {
			last = e
		}
	}
	assert.Equal(t, "upsert phase="+PhaseCompleted, last, "the final phase is sent when the run ends")
}

// searchAttributeLog runs a replication with coalesce-search-attributes at version and
// returns what happened in order ("upsert phase=… quiesced=…", "start Name", "done Name")
// and how many search attribute commands the run sent.
func searchAttributeLog(t *testing.T, version workflow.Version) ([]string, int) {
	f := &fakeAgents{fail: func(string, string) error { return nil }}
	var mu sync.Mutex
	var log []string
	upserts := 0
	add := func(s string) { mu.Lock(); log = append(log, s); mu.Unlock() }
	st, err := runWorkflowWith(t, f, ReplicationInput{Job: "orders"}, func(env *testsuite.TestWorkflowEnvironment) {
		recordedBefore(env)
		env.OnGetVersion("coalesce-search-attributes", workflow.DefaultVersion, 1).Return(version)
		// The phase of a push of its own (a fused one runs in the quiesce's phase).
		quiesceApart(env)
		env.OnUpsertTypedSearchAttributes(mock.Anything).Return(nil).Run(func(args mock.Arguments) {
			sa := args.Get(0).(temporal.SearchAttributes)
			var parts []string
			if v, ok := sa.GetKeyword(AttrPhase); ok {
				parts = append(parts, "phase="+v)
			}
			if v, ok := sa.GetKeyword(AttrQuiescedHost); ok {
				parts = append(parts, "quiesced="+v)
			}
			mu.Lock()
			upserts++
			mu.Unlock()
			add("upsert " + strings.Join(parts, " "))
		})
		env.SetOnActivityStartedListener(func(info *activity.Info, _ context.Context, _ converter.EncodedValues) {
			add("start " + info.ActivityType.Name)
		})
		env.SetOnActivityCompletedListener(func(info *activity.Info, _ converter.EncodedValue, _ error) {
			add("done " + info.ActivityType.Name)
		})
	})
	require.NoError(t, err)
	require.Equal(t, PhaseCompleted, st.Phase)
	mu.Lock()
	defer mu.Unlock()
	return log, upserts
}
