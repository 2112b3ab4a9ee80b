package compose_test

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/replctl/replctl/workflows"
)

// A normal run started with the CLI from this machine, as a user would: the replica equals,
// byte for byte, the source as it was while the application was quiesced (the digest
// freeze.sh took on a1), although the application went on writing after the thaw.
func TestReplicationEqualsQuiescedSource(t *testing.T) {
	d := up(t)
	d.seed()
	out, err := exec.Command(replctlBin, "start", "orders", "--wait", "-o", "json",
		"--config", repoRoot+"/config/examples/compose.yaml", "--address", fmt.Sprintf("127.0.0.1:%d", d.port)).Output()
	require.NoError(t, err, "replctl start orders --wait: %s", out)
	var st workflows.Status
	require.NoError(t, json.Unmarshal(out, &st), "%s", out)
	require.Equal(t, workflows.PhaseCompleted, st.Phase)
	require.NotNil(t, st.Replica)
	assert.Equal(t, "b1", st.Replica.Agent)
	assert.True(t, st.Replica.Verified)
	assert.Empty(t, st.Takeovers)

	frozen := d.freezeDigest("a1", "orders", st.RunID)
	assert.Equal(t, frozen, d.digest("b1", "/srv/array-b/orders"), "replica on b1 = source at quiesce time")
	assert.Equal(t, frozen, d.digest("a2", "/mnt/array-b/orders"), "the same replica seen from site A")
	m := d.markers("a1")
	assert.Contains(t, m, "step=quiesce job=orders host=a1 agent=a1 failed= via=local")
	assert.Contains(t, m, "step=resume job=orders host=a1 agent=a1 failed= via=local")

	// The application was thawed and went on writing: the source moved on.
	assert.Eventually(t, func() bool { return d.digest("a1", "/srv/array-a/orders") != frozen }, 10*time.Second, 200*time.Millisecond,
		"the sample application writes again after the thaw")
	assert.True(t, strings.HasPrefix(d.sh("a1", "sample-app status /srv/array-a/orders"), "running"))
}

// kill -9 of the agent inside a1 while it pushes; a1's sshd stays up. a2 takes over: it runs
// a1's takeover and resume scripts ON a1 over SSH, pushes, and the run completes with the
// quiesced image.
func TestKilledAgentHostScriptsRunOverSSH(t *testing.T) {
	d := up(t)
	d.seed()
	run := d.start("orders")
	require.Equal(t, "a1", d.waitStarted(run, "Push"))
	d.killAgent("a1")

	st, err := d.wait(run)
	require.NoError(t, err)
	require.NotEmpty(t, st.Takeovers)
	assert.Equal(t, "a1", st.Takeovers[0].From)
	assert.Equal(t, "a2", st.Takeovers[0].To)
	assert.Equal(t, "a2", st.Agents.Source)
	assert.Contains(t, st.Takeovers[0].Reason, "heartbeat timeout")
	assert.False(t, st.CrashConsistent)

	m := d.markers("a1")
	t.Logf("markers on a1:\n%s", m)
	assert.Contains(t, m, "step=quiesce job=orders host=a1 agent=a1 failed= via=local")
	assert.Contains(t, m, "step=takeover job=orders host=a1 agent=a2 failed=a1 via=ssh", "a2 ran a1's takeover script on a1 over SSH")
	assert.Contains(t, m, "step=resume job=orders host=a1 agent=a2 failed= via=ssh", "a2 thawed a1's application over SSH")
	assert.Equal(t, d.freezeDigest("a1", "orders", st.RunID), d.digest("b1", "/srv/array-b/orders"))
	assert.True(t, strings.HasPrefix(d.sh("a1", "sample-app status /srv/array-a/orders"), "running"), "application thawed")
}

// docker kill of the whole a1 container while it pushes, job with on_unreachable_host: fail.
// a1's takeover script cannot run anywhere: the run fails and says why; nothing is published.
func TestKilledHostFailPolicy(t *testing.T) {
	d := up(t)
	d.seed()
	run := d.start("orders")
	require.Equal(t, "a1", d.waitStarted(run, "Push"))
	d.docker("kill", d.ids["a1"])

	st, err := d.wait(run)
	require.Error(t, err)
	t.Logf("run error: %v", err)
	t.Logf("status: phase=%s quiesced_host=%q error=%q notes=%q", st.Phase, st.QuiescedHost, st.Error, st.Notes)
	assert.Equal(t, workflows.PhaseFailed, st.Phase)
	msg := strings.ToLower(err.Error() + " " + st.Error)
	assert.Contains(t, msg, "a1")
	assert.Contains(t, msg, "unreachable", "the error says a host could not be reached")
	assert.False(t, st.CrashConsistent)
	assert.Nil(t, st.Replica)
	assert.Equal(t, "a1", st.QuiescedHost, "a1 could not be thawed: the status says it was left quiesced")
	assert.Contains(t, d.sh("b1", "ls -A /srv/array-b"), ".replctl")
	assert.NotContains(t, d.sh("b1", "ls -A /srv/array-b"), "orders", "nothing published")
}

// The same fault with on_unreachable_host: continue: the run goes on without a1's scripts,
// completes on a2 and b1, and says it is crash-consistent. a1 is gone, so its application
// stopped writing: the replica equals the source as a2 sees it.
func TestKilledHostContinuePolicy(t *testing.T) {
	d := up(t)
	d.seed()
	run := d.start("orders-cc")
	require.Equal(t, "a1", d.waitStarted(run, "Push"))
	d.docker("kill", d.ids["a1"])

	st, err := d.wait(run)
	require.NoError(t, err)
	t.Logf("notes: %q", st.Notes)
	assert.Equal(t, workflows.PhaseCompleted, st.Phase)
	assert.True(t, st.CrashConsistent, "status says crash-consistent")
	assert.Contains(t, strings.Join(st.Notes, "\n"), "a1")
	assert.Equal(t, "a2", st.Agents.Source)
	require.NotNil(t, st.Replica)
	assert.Empty(t, st.QuiescedHost)
	assert.Equal(t, d.digest("a2", "/srv/array-a/orders"), d.digest("b1", "/srv/array-b/orders-cc"))
}

// b1 is cut off from Temporal (docker network disconnect) while it pulls; its host keeps its
// storage and sshd. b2 takes over with a newer epoch and publishes; b1, a zombie that may
// still write into its own staging, is refused: the published replica and the fence carry
// b2's epoch, and after b1 is reconnected nothing changes.
func TestDisconnectedPullAgentIsFenced(t *testing.T) {
	d := up(t)
	d.seed()
	run := d.start("orders")
	require.Equal(t, "b1", d.waitStarted(run, "Pull"))
	d.docker("network", "disconnect", d.network("temporal"), d.ids["b1"])

	st, err := d.wait(run)
	require.NoError(t, err)
	require.NotNil(t, st.Replica)
	assert.Equal(t, "b2", st.Replica.Agent, "the taker published")
	require.NotEmpty(t, st.Takeovers)
	assert.Equal(t, "b1", st.Takeovers[0].From)
	assert.Equal(t, st.Replica.Epoch, d.fenceEpoch("b2", "orders"), "the fence holds the taker's epoch")
	published := strings.TrimSpace(d.sh("b2", "readlink /srv/array-b/orders"))
	frozen := d.freezeDigest("a1", "orders", st.RunID)
	assert.Equal(t, frozen, d.digest("b2", "/srv/array-b/orders"))

	d.docker("network", "connect", d.network("temporal"), d.ids["b1"])
	time.Sleep(5 * time.Second) // the zombie learns it lost, at its next heartbeat
	assert.Equal(t, published, strings.TrimSpace(d.sh("b2", "readlink /srv/array-b/orders")), "the zombie did not publish")
	assert.Equal(t, frozen, d.digest("b2", "/srv/array-b/orders"), "nor change the replica")
	assert.Equal(t, st.Replica.Epoch, d.fenceEpoch("b1", "orders"), "nor move the fence")
	logs := d.docker("logs", d.ids["b1"])
	assert.Regexp(t, `write lease expired|heartbeat refused|fenced`, logs, "b1 says why it stopped")
	t.Logf("b1 log tail:\n%s", tailLines(logs, 15))
}

// b1 is frozen (docker pause: agent and sshd) while it pulls, job with on_unreachable_host:
// continue (b1's takeover script cannot run on a frozen host). b2 takes over and publishes;
// when b1 wakes up it is a zombie and must not publish or change anything.
func TestPausedPullAgentIsAZombie(t *testing.T) {
	d := up(t)
	d.seed()
	run := d.start("orders-cc")
	require.Equal(t, "b1", d.waitStarted(run, "Pull"))
	d.docker("pause", d.ids["b1"])

	st, err := d.wait(run)
	require.NoError(t, err)
	require.NotNil(t, st.Replica)
	assert.Equal(t, "b2", st.Replica.Agent)
	t.Logf("notes: %q", st.Notes)
	published := strings.TrimSpace(d.sh("b2", "readlink /srv/array-b/orders-cc"))
	frozen := d.freezeDigest("a1", "orders-cc", st.RunID)
	assert.Equal(t, frozen, d.digest("b2", "/srv/array-b/orders-cc"))

	d.docker("unpause", d.ids["b1"])
	time.Sleep(5 * time.Second)
	assert.Equal(t, published, strings.TrimSpace(d.sh("b2", "readlink /srv/array-b/orders-cc")), "the zombie did not publish")
	assert.Equal(t, frozen, d.digest("b2", "/srv/array-b/orders-cc"), "nor change the replica")
	assert.Equal(t, st.Replica.Epoch, d.fenceEpoch("b2", "orders-cc"))
	t.Logf("b1 log tail:\n%s", tailLines(d.docker("logs", d.ids["b1"]), 15))
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
