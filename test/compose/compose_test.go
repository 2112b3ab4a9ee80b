package compose_test

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/workflows"
)

// A normal run started with the CLI from this machine, as a user would: the replica equals,
// byte for byte, the source as it was while the application was quiesced (the digest
// freeze.sh took on a1), although the application went on writing after the thaw.
func TestReplicationEqualsQuiescedSource(t *testing.T) {
	d := up(t)
	d.seed("orders")

	// replctl check on the fresh deployment: every agent checks its own host (storage, scripts,
	// SSH to the hosts it may take over, repositories, space, clock, config fingerprint).
	out, err := d.cli("check")
	t.Logf("replctl check:\n%s", out)
	require.NoError(t, err, "replctl check on a fresh deployment")
	assert.Contains(t, out, "checked 4 host(s): all checks passed")
	// One host broken on purpose: a2's resume script no longer executable.
	d.sh("a2", "chmod -x /etc/replctl/scripts/thaw.sh")
	out, err = d.cli("check", "orders")
	t.Logf("replctl check orders with a2's thaw.sh not executable:\n%s", out)
	var xe *exec.ExitError
	require.ErrorAs(t, err, &xe, "a broken host fails the check")
	assert.Equal(t, 7, xe.ExitCode())
	assert.Contains(t, out, "HOST a2")
	assert.Contains(t, out, "thaw.sh is not executable")
	d.sh("a2", "chmod +x /etc/replctl/scripts/thaw.sh")

	outb, err := exec.Command(replctlBin, append([]string{"start", "orders", "--wait", "-o", "json",
		"--config", repoRoot + "/config/examples/compose.yaml", "--address", fmt.Sprintf("127.0.0.1:%d", d.port)}, operatorArgs()...)...).Output()
	require.NoError(t, err, "replctl start orders --wait: %s", outb)
	var st workflows.Status
	require.NoError(t, json.Unmarshal(outb, &st), "%s", outb)
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

	// Job orders keeps its repository on the vault, which only site B mounts: a1 pushed
	// over SFTP through b1 and created the repository there, with the password from its own
	// secrets dir (deploy/keys.sh): no password file lies beside the repository.
	assert.Equal(t, "a1", st.Agents.Source)
	assert.Equal(t, "absent", strings.TrimSpace(d.sh("a1", "test -e /srv/vault && echo mounted || echo absent")))
	vault := d.sh("b1", "ls -A /srv/vault/.replctl/ /srv/vault/.replctl/repository/")
	assert.NotContains(t, vault, "repository.password")
	assert.Contains(t, vault, "kopia.repository.f")

	// The application was thawed and went on writing past the replica's last transaction.
	replicaSeq := seqOf(t, d.sh("b1", "cat /srv/array-b/orders/seq"))
	deadline := time.Now().Add(10 * time.Second)
	for {
		state, seq := appStatus(t, d, "a1", "/srv/array-a/orders")
		if state == "running" && seq > replicaSeq {
			break
		}
		require.True(t, time.Now().Before(deadline), "sample application not writing after the thaw: %s at %d, replica at %d", state, seq, replicaSeq)
		time.Sleep(200 * time.Millisecond)
	}
}

// appStatus is `sample-app status DIR` on host: running|frozen|stopped and the last
// transaction's sequence number.
func appStatus(t *testing.T, d *deployment, host, dir string) (string, int) {
	t.Helper()
	f := strings.Fields(d.sh(host, "sample-app status "+dir))
	require.Len(t, f, 2)
	return f[0], seqOf(t, f[1])
}

func seqOf(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimSpace(s))
	require.NoError(t, err, "sequence number %q", s)
	return n
}

// kill -9 of the agent inside a1 while it pushes; a1's sshd stays up. a2 takes over: it runs
// a1's takeover and resume scripts ON a1 over SSH, pushes, and the run completes with the
// quiesced image.
func TestKilledAgentHostScriptsRunOverSSH(t *testing.T) {
	d := up(t)
	d.seed("orders")
	run := d.start("orders")
	require.Equal(t, "a1", d.waitPushing(run))
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
	state, _ := appStatus(t, d, "a1", "/srv/array-a/orders")
	assert.Equal(t, "running", state, "application thawed")
}

// docker kill of the whole a1 container (the application host) while it pushes, job with
// on_unreachable_host: fail. a1's takeover script cannot run anywhere, nor can its resume
// script: the run fails, says which host was unreachable, and that a1 may be left quiesced.
func TestKilledAppHostFailPolicy(t *testing.T) {
	d := up(t)
	d.seed("orders")
	run := d.start("orders")
	require.Equal(t, "a1", d.waitPushing(run))
	d.docker("kill", d.ids["a1"])

	st, err := d.wait(run)
	require.Error(t, err)
	t.Logf("status: phase=%s quiesced_host=%q error=%q", st.Phase, st.QuiescedHost, st.Error)
	assert.Equal(t, workflows.PhaseFailed, st.Phase)
	assert.Regexp(t, `host "?a1"?.*unreachable`, err.Error(), "the error names the unreachable host")
	assert.Contains(t, err.Error(), "a1 LEFT QUIESCED")
	assert.Equal(t, "a1", st.QuiescedHost, "the status keeps the host that may still be frozen")
	assert.False(t, st.CrashConsistent)
	assert.Nil(t, st.Replica)
	assert.NotContains(t, d.sh("b1", "ls -A /srv/array-b"), "orders", "nothing published")
}

// killTargetHost kills the whole b1 container while it pulls job's replica: b2 takes over,
// but b1's takeover script cannot run.
func killTargetHost(t *testing.T, job string) (*deployment, workflows.Status, error) {
	d := up(t)
	d.seed(job)
	run := d.start(job)
	require.Equal(t, "b1", d.waitStarted(run, "Pull"))
	d.docker("kill", d.ids["b1"])
	st, err := d.wait(run)
	return d, st, err
}

// on_unreachable_host: fail (job orders): the run stops before b2 pulls, with an error that
// names b1; the application was already thawed, nothing is published.
func TestKilledTargetHostFailPolicy(t *testing.T) {
	d, st, err := killTargetHost(t, "orders")
	require.Error(t, err)
	assert.Equal(t, workflows.PhaseFailed, st.Phase)
	assert.Regexp(t, `host "?b1"?.*unreachable`, err.Error())
	assert.Empty(t, st.QuiescedHost, "the application was thawed before the pull")
	assert.False(t, st.CrashConsistent)
	assert.Nil(t, st.Replica)
	assert.NotContains(t, d.sh("b2", "ls -A /srv/array-b"), "orders", "nothing published")
	state, _ := appStatus(t, d, "a1", "/srv/array-a/orders")
	assert.Equal(t, "running", state, "application thawed before the pull")
}

// on_unreachable_host: continue (job ledger): b2 goes on without b1's takeover script,
// publishes, and a note names b1. The image was taken while the application was quiesced, so
// the run is NOT crash-consistent (only an unreachable application host makes it so), and
// the replica equals the quiesced source.
func TestKilledTargetHostContinuePolicy(t *testing.T) {
	d, st, err := killTargetHost(t, "ledger")
	require.NoError(t, err)
	t.Logf("notes: %q", st.Notes)
	assert.Equal(t, workflows.PhaseCompleted, st.Phase)
	assert.False(t, st.CrashConsistent, "an unreachable target host does not make the image crash-consistent")
	assert.Contains(t, strings.Join(st.Notes, "\n"), "b1")
	require.NotNil(t, st.Replica)
	assert.Equal(t, "b2", st.Replica.Agent)
	assert.Equal(t, d.freezeDigest("a1", "ledger", st.RunID), d.digest("b2", "/srv/array-b/ledger"))
}

// b1 is cut off from Temporal (docker network disconnect) in the middle of its pull; its host
// keeps its storage and sshd, so it is a zombie writer until its write lease expires. b2
// takes over (running b1's takeover script over SSH) with a newer epoch and publishes. The
// published replica and the fence carry b2's epoch, b1 says it stopped, and after b1 is
// reconnected nothing changes.
func TestDisconnectedPullAgentIsFenced(t *testing.T) {
	d := up(t)
	// 999 MiB (seedBig's most): with 400 MiB, b1's pull once ended 1.7 s after the push,
	// before the test saw its first heartbeat acknowledged.
	d.seedBig("orders", 999)
	run := d.start("orders")
	// Cut once the pull's first heartbeat is acknowledged (from then on b1 writes), not at
	// its first progress: heartbeats are throttled, and on a fast VM the first progress the
	// server showed came 2.4 s before the pull's end. Cut before that heartbeat, b1 stops
	// at once and is no zombie. Cut off, b1 goes on writing until its lease expires.
	require.Equal(t, "b1", d.waitPending(run, "Pull", "its first heartbeat", func(_ activities.Progress, ok bool) bool { return ok }))
	d.docker("network", "disconnect", d.network("temporal"), d.ids["b1"])

	st, err := d.wait(run)
	require.NoError(t, err)
	require.NotNil(t, st.Replica)
	assert.Equal(t, "b2", st.Replica.Agent, "the taker published")
	require.NotEmpty(t, st.Takeovers)
	assert.Equal(t, "b1", st.Takeovers[0].From)
	assert.False(t, st.CrashConsistent, "b1's takeover script ran over the hosts network")
	assert.Contains(t, d.markers("b1"), "step=takeover job=orders host=b1 agent=b2 failed=b1 via=ssh")
	assert.Equal(t, st.Replica.Epoch, d.fenceEpoch("b2", "orders"), "the fence holds the taker's epoch")
	published := strings.TrimSpace(d.sh("b2", "readlink /srv/array-b/orders"))
	frozen := d.freezeDigest("a1", "orders", st.RunID)
	assert.Equal(t, frozen, d.digest("b2", "/srv/array-b/orders"))

	d.docker("network", "connect", d.network("temporal"), d.ids["b1"])
	time.Sleep(5 * time.Second) // let the zombie try whatever it still would
	assert.Equal(t, published, strings.TrimSpace(d.sh("b2", "readlink /srv/array-b/orders")), "the zombie did not publish")
	assert.Equal(t, frozen, d.digest("b2", "/srv/array-b/orders"), "nor change the replica")
	assert.Equal(t, st.Replica.Epoch, d.fenceEpoch("b1", "orders"), "nor move the fence")
	logs := d.docker("logs", d.ids["b1"])
	assert.Regexp(t, `write lease expired|heartbeat refused|fenced`, logs, "b1 says why it stopped writing")
	t.Logf("b1 log tail:\n%s", tailLines(logs, 12))
}

// b1 is frozen (docker pause: agent and sshd) in the middle of its pull, job ledger
// (on_unreachable_host: continue, since b1's takeover script cannot run on a frozen host).
// b2 takes over and publishes; when b1 is thawed it is a zombie with a stale epoch and an
// expired lease: it must not publish or change anything.
func TestPausedPullAgentIsAZombie(t *testing.T) {
	d := up(t)
	d.seedBig("ledger", 400)
	run := d.start("ledger")
	require.Equal(t, "b1", d.waitProgress(run, "Pull"))
	d.docker("pause", d.ids["b1"])

	st, err := d.wait(run)
	require.NoError(t, err)
	require.NotNil(t, st.Replica)
	assert.Equal(t, "b2", st.Replica.Agent)
	t.Logf("notes: %q", st.Notes)
	published := strings.TrimSpace(d.sh("b2", "readlink /srv/array-b/ledger"))
	frozen := d.freezeDigest("a1", "ledger", st.RunID)
	assert.Equal(t, frozen, d.digest("b2", "/srv/array-b/ledger"))
	assert.Equal(t, st.Replica.Epoch, d.fenceEpoch("b2", "ledger"))

	d.docker("unpause", d.ids["b1"])
	time.Sleep(5 * time.Second)
	assert.Equal(t, published, strings.TrimSpace(d.sh("b2", "readlink /srv/array-b/ledger")), "the zombie did not publish")
	assert.Equal(t, frozen, d.digest("b2", "/srv/array-b/ledger"), "nor change the replica")
	assert.Equal(t, st.Replica.Epoch, d.fenceEpoch("b1", "ledger"), "nor move the fence")
	logs := d.docker("logs", d.ids["b1"])
	assert.Regexp(t, `write lease expired|heartbeat refused|fenced`, logs, "b1 says why it stopped writing")
	t.Logf("b1 log tail:\n%s", tailLines(logs, 12))
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
