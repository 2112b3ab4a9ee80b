package test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// slowFreeze is the test quiesce script plus a touch of every source file: the push that
// follows must re-read the whole dataset (the precopy stored it already), so it is still
// running when the test signals the agent.
const slowFreeze = testScript + `find "$REPLCTL_SOURCE_PATH/" -type f -exec touch {} +
`

// signalAndWait sends sig to host's agent process and waits up to limit for it to exit. It
// returns how long the exit took and the marker log of hostOfMarkers as it was when the
// process had exited.
func (e *env) signalAndWait(host string, sig syscall.Signal, limit time.Duration) (time.Duration, []string) {
	e.t.Helper()
	cmd := e.agents[host]
	require.NotNil(e.t, cmd, "agent %s not started", host)
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	sent := time.Now()
	require.NoError(e.t, cmd.Process.Signal(sig))
	select {
	case <-exited:
	case <-time.After(limit):
		e.t.Fatalf("agent %s still running %s after %s", host, limit, sig)
	}
	return time.Since(sent), e.markers(host)
}

// thawedAfterQuiesce tells whether a thaw (a resume, or a takeover script for the host)
// follows the last quiesce in a marker log.
func thawedAfterQuiesce(markers []string) bool {
	last := -1
	for i, m := range markers {
		if strings.HasPrefix(m, "quiesce ") {
			last = i
		}
	}
	if last < 0 {
		return false
	}
	for _, m := range markers[last+1:] {
		if strings.HasPrefix(m, "resume ") || strings.HasPrefix(m, "takeover ") {
			return true
		}
	}
	return false
}

// SIGTERM reaches the agent of the application host a1 while it pushes, with a1 quiesced
// by that agent. The agent hands the push over (it fails it as shutting down, so the next
// source agent takes it), keeps polling until the run has thawed a1, and only then exits:
// the thaw is in a1's marker log before the process is gone, and the run completes.
func TestSIGTERMDuringPushThawsBeforeExit(t *testing.T) {
	e := newEnv(t)
	writeDataset(t, e.sourceDir(), 300, 512<<10, 21)
	require.NoError(t, os.WriteFile(filepath.Join(e.dir, "scripts", "freeze.sh"), []byte(slowFreeze), 0o755))
	e.startAgents("a1", "a2", "b1", "b2")
	run := e.start("orders")
	require.Equal(t, "replctl-agent-a1", e.waitStarted(run, "Push"))

	took, markers := e.signalAndWait("a1", syscall.SIGTERM, 70*time.Second)
	t.Logf("a1 exited %s after SIGTERM; its markers then: %q", took.Round(time.Millisecond), markers)
	assert.True(t, thawedAfterQuiesce(markers), "a1 was still quiesced when its agent exited: %q", markers)

	st, err := e.wait(run)
	require.NoError(t, err)
	assert.Empty(t, st.QuiescedHost)
	require.NotEmpty(t, st.Takeovers)
	tk := st.Takeovers[0]
	assert.Equal(t, []string{"source", "push", "a1", "a2"}, []string{tk.Role, tk.Step, tk.From, tk.To})
	assert.Contains(t, tk.Reason, "shutting down", "the push was handed over because a1 was stopping")
	assert.Equal(t, treeDigest(t, e.sourceDir()), treeDigest(t, e.targetLink()))
}
