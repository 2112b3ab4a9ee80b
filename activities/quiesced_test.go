package activities

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A quiesce is held from the moment its script starts, whatever its outcome; only a
// successful resume of the same run lets it go.
func TestQuiescedTracksQuiesceUntilResume(t *testing.T) {
	a, p := sampleAgent(t, "a1")
	host, err := p.Host("a1")
	require.NoError(t, err)
	q := ScriptInput{Job: "orders", RunID: "r1", Step: "quiesce", Agent: "a1", Host: host, Script: "freeze.sh", Timeout: time.Minute}
	changed := a.Quiesced().Changed()
	a.trackScript(context.Background(), q)(false)
	select {
	case <-changed:
	default:
		t.Fatal("adding a quiesce did not signal a change")
	}
	held := a.Quiesced().List()
	require.Len(t, held, 1, "a failed quiesce may have frozen part of the application: still held")
	assert.Equal(t, "thaw.sh", held[0].Resume, "the resume script comes from the agent's own config")
	assert.Equal(t, "a1", held[0].Host.Name)

	for _, in := range []ScriptInput{
		{Job: "orders", RunID: "r1", Step: "takeover", Host: host},
		{Job: "orders", RunID: "r2", Step: "resume", Host: host},
	} {
		a.trackScript(context.Background(), in)(true)
		assert.Len(t, a.Quiesced().List(), 1, "%s of run %s does not thaw run r1", in.Step, in.RunID)
	}
	resume := ScriptInput{Job: "orders", RunID: "r1", Step: "resume", Host: host}
	a.trackScript(context.Background(), resume)(false)
	assert.Len(t, a.Quiesced().List(), 1, "a failed resume thaws nothing")
	a.trackScript(context.Background(), resume)(true)
	assert.Empty(t, a.Quiesced().List())
	assert.False(t, a.Quiesced().Forget("orders", "r1"), "nothing left to forget")
}

// ResumeLocally runs the recorded resume script with the run's environment and lets go of
// the application; a failing script keeps it held and says why.
func TestResumeLocally(t *testing.T) {
	a, p := sampleAgent(t, "a1")
	host, err := p.Host("a1")
	require.NoError(t, err)
	host.Scripts, host.State = t.TempDir(), t.TempDir()
	marker := filepath.Join(host.State, "thawed")
	require.NoError(t, os.WriteFile(filepath.Join(host.Scripts, "thaw.sh"), []byte("#!/bin/sh\necho \"$REPLCTL_STEP $REPLCTL_JOB $REPLCTL_RUN_ID $REPLCTL_AGENT\" > \"$REPLCTL_STATE_DIR/thawed\"\n"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(host.Scripts, "fail.sh"), []byte("#!/bin/sh\necho still frozen >&2\nexit 3\n"), 0o755))
	a.trackScript(context.Background(), ScriptInput{Job: "orders", RunID: "r1", Step: "quiesce", Host: host, Timeout: 10 * time.Second})(true)
	q := a.Quiesced().List()[0]

	bad := q
	bad.Resume = "fail.sh"
	_, err = a.ResumeLocally(context.Background(), bad)
	require.ErrorContains(t, err, "resume script fail.sh on host a1 exited 3: still frozen")
	bad.Resume = ""
	_, err = a.ResumeLocally(context.Background(), bad)
	require.ErrorContains(t, err, "job orders has no resume script")
	assert.Len(t, a.Quiesced().List(), 1)

	_, err = a.ResumeLocally(context.Background(), q)
	require.NoError(t, err)
	b, err := os.ReadFile(marker)
	require.NoError(t, err)
	assert.Equal(t, "resume orders r1 a1\n", string(b))
	assert.Empty(t, a.Quiesced().List())
}
