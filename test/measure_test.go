package test

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/converter"

	"github.com/replctl/replctl/activities"
)

// TestMeasurePushResumeWindow measures how much a taker re-reads after the pushing agent is
// killed past its first checkpoint. Run with REPLCTL_MEASURE=1 (it writes ~1 GiB); it
// prints figures and asserts only that checkpointed work was reused.
func TestMeasurePushResumeWindow(t *testing.T) {
	if os.Getenv("REPLCTL_MEASURE") == "" {
		t.Skip("measurement: set REPLCTL_MEASURE=1")
	}
	const files, size = 8000, 256 << 10
	e := newEnvWith(t, envOptions{heartbeat: "2s", scheduleToStart: "3s"})
	writeDataset(t, e.sourceDir(), files, size, 10)
	e.startAgents("a1", "a2", "b1")
	run := e.start("orders")
	e.waitPushing(run)
	// Kill a1 once its heartbeats say it has read 60 % of the data (several checkpoints in).
	dc := converter.GetDefaultDataConverter()
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		d, err := e.c.DescribeWorkflowExecution(t.Context(), run.GetID(), run.GetRunID())
		require.NoError(t, err)
		var p activities.Progress
		for _, pa := range d.GetPendingActivities() {
			if pa.GetActivityType().GetName() == "Push" && pa.GetHeartbeatDetails() != nil {
				_ = dc.FromPayloads(pa.GetHeartbeatDetails(), &p)
			}
		}
		if p.BytesDone >= files*size*6/10 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	killedAt := time.Now()
	e.kill("a1")
	st, err := e.wait(run)
	require.NoError(t, err)
	require.NotEmpty(t, st.Takeovers)

	// The killed attempt's last heartbeat and the taker's result, from the history.
	var last activities.Progress
	var taker activities.PushResult
	iter := e.c.GetWorkflowHistory(t.Context(), run.GetID(), run.GetRunID(), false, 0)
	for iter.HasNext() {
		ev, err := iter.Next()
		require.NoError(t, err)
		if a := ev.GetActivityTaskTimedOutEventAttributes(); a != nil {
			if d := a.GetFailure().GetTimeoutFailureInfo().GetLastHeartbeatDetails(); d != nil {
				require.NoError(t, dc.FromPayloads(d, &last))
			}
		}
		if a := ev.GetActivityTaskCompletedEventAttributes(); a != nil {
			var r activities.PushResult
			if dc.FromPayloads(a.GetResult(), &r) == nil && r.ImageID != "" {
				taker = r
			}
		}
	}
	reusedBytes := taker.Reused * int64(size) // files are about size bytes on average
	t.Logf("killed %s into the push: the lost attempt had read %d files / %d MiB (last heartbeat, %s)",
		killedAt.Sub(st.StartedAt).Round(time.Millisecond), last.FilesDone, last.BytesDone>>20, last.Phase)
	t.Logf("taker %s: %d files of %d reused from the checkpoint (~%d MiB), re-read %d files (~%d MiB) that the lost attempt had read",
		taker.Agent, taker.Reused, taker.Files, reusedBytes>>20, max(0, last.FilesDone-taker.Reused), max(0, last.BytesDone-reusedBytes)>>20)
	require.Positive(t, taker.Reused, "the taker reused the lost attempt's checkpointed files")
}
