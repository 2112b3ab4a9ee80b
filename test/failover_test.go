package test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/replctl/replctl/activities/hostexec/sshtest"
)

// Host a1 is reached over SSH (a real OpenSSH sshd on loopback). When a1's agent dies
// mid-push, a2 runs a1's takeover script ON a1 over SSH, and a1's resume script too.
func TestTakeoverRunsFailedHostScriptsOverSSH(t *testing.T) {
	sshd := sshtest.Start(t)
	e := newEnvWith(t, envOptions{a1SSH: sshd})
	writeDataset(t, e.sourceDir(), 300, 512<<10, 6)
	e.startAgents("a1", "a2", "b1", "b2")
	run := e.start("orders")
	require.Equal(t, "replctl-agent-a1", e.waitStarted(run, "Push"))
	e.freeze("a1")
	e.kill("a1")

	st, err := e.wait(run)
	require.NoError(t, err)
	require.NotEmpty(t, st.Takeovers)
	assert.Equal(t, "a1", st.Takeovers[0].From)
	m := strings.Join(e.markers("a1"), "\n")
	assert.Contains(t, m, "quiesce host=a1 agent=a1 failed= via=local", "a1's own agent runs its scripts locally")
	assert.Contains(t, m, "takeover host=a1 agent=a2 failed=a1 via=ssh", "the taker runs the failed host's takeover script over SSH")
	assert.Contains(t, m, "resume host=a1 agent=a2 failed= via=ssh")
	var remote []string
	for _, s := range st.Scripts {
		if s.Remote {
			remote = append(remote, s.Step+"@"+s.Agent)
		}
	}
	assert.Equal(t, []string{"takeover@a2", "resume@a2"}, remote, "script results record the SSH runs; a1's takeover script runs once though a1 was lost for two roles")
	assert.Equal(t, treeDigest(t, e.sourceDir()), treeDigest(t, e.targetLink()))
	recordHistory(t, e, run.GetID(), run.GetRunID(), "ssh-takeover-once-per-host")
}

// A pulling agent frozen mid-pull (SIGSTOP) is taken over; when it wakes up after the
// replica was published by the taker, it must not publish or change anything: its write
// lease has expired and the target's fence holds a newer epoch.
func TestFrozenPullAgentCannotPublishAfterTakeover(t *testing.T) {
	e := newEnv(t)
	writeDataset(t, e.sourceDir(), 300, 512<<10, 7)
	e.startAgents("a1", "a2", "b1", "b2")
	run := e.start("orders")
	require.Equal(t, "replctl-agent-b1", e.waitStarted(run, "Pull"))
	e.freeze("b1")
	st, err := e.wait(run)
	require.NoError(t, err)
	require.Equal(t, "b2", st.Replica.Agent)
	before := treeDigest(t, e.targetLink())

	require.NoError(t, e.agents["b1"].Process.Signal(syscall.SIGCONT))
	time.Sleep(3 * time.Second) // give the zombie time to try
	link, err := filepath.EvalSymlinks(e.targetLink())
	require.NoError(t, err)
	assert.Equal(t, st.Replica.Path, link, "the zombie did not publish")
	assert.Equal(t, before, treeDigest(t, e.targetLink()), "nor change the published replica")
	assert.Equal(t, treeDigest(t, e.sourceDir()), before)
	var fence struct {
		Epoch int64 `json:"epoch"`
	}
	b, err := os.ReadFile(filepath.Join(e.dir, "storage/array-b/.replctl/fence/orders.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &fence))
	assert.Equal(t, st.Replica.Epoch, fence.Epoch, "the fence holds the taker's epoch")
	log, err := os.ReadFile(filepath.Join(e.dir, "agent-b1.log"))
	require.NoError(t, err)
	t.Logf("zombie b1 log tail:\n%s", tail(string(log), 1500))
}
