package test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"golang.org/x/sys/unix"

	"github.com/replctl/replctl/activities/hostexec/sshtest"
	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/internal/testworld"
	"github.com/replctl/replctl/workflows"
)

// Host a1 is reached over SSH (a real OpenSSH sshd on loopback). When a1's agent dies
// mid-push, a2 runs a1's takeover script ON a1 over SSH, and a1's resume script too.
func TestTakeoverRunsFailedHostScriptsOverSSH(t *testing.T) {
	sshd := sshtest.Start(t)
	e := newEnvWith(t, envOptions{a1SSH: sshd})
	writeDataset(t, e.sourceDir(), 300, 512<<10, 6)
	e.startAgents("a1", "a2", "b1", "b2")
	run := e.start("orders")
	require.Equal(t, "replctl-agent-a1", e.waitPushing(run))
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
			remote = append(remote, string(s.Step)+"@"+s.Agent)
		}
	}
	assert.Equal(t, []string{"takeover@a2", "resume@a2"}, remote, "script results record the SSH runs; a1's takeover script runs once though a1 was lost for two roles")
	assert.Equal(t, treeDigest(t, e.sourceDir()), treeDigest(t, e.targetLink()))
	recordHistory(t, e, run.GetID(), run.GetRunID(), "ssh-takeover-baseline")
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

	require.NoError(t, e.agents["b1"].Signal(syscall.SIGCONT))
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
	t.Logf("zombie b1 log tail:\n%s", testworld.Tail(string(log), 1500))
}

// failbackConfig is the test world with failback allowed, the primary's check script
// (check.sh) and a failback application on the target side.
func failbackConfig(c *config.Config) {
	c.Jobs[0].Application.Check = "check.sh"
	c.Jobs[0].Failback = &config.Failback{Allow: true, Application: &config.Application{Host: "b1", Quiesce: "freeze.sh", Resume: "thaw.sh"}}
}

// checkScript is the primary's check script: it logs its call and exits 3 (running) while
// the file <test dir>/primary-running exists, 0 (stopped) otherwise. %[1]s is the test dir.
const checkScript = `#!/bin/sh
set -eu
mkdir -p "$REPLCTL_STATE_DIR"
echo "$REPLCTL_STEP host=$REPLCTL_HOST agent=$REPLCTL_AGENT source=$REPLCTL_SOURCE_PATH" >> "$REPLCTL_STATE_DIR/markers.log"
if [ -f %[1]s/primary-running ]; then echo "application runs (pid file %[1]s/primary-running)"; exit 3; fi
echo "application stopped"
`

// newFailbackEnv is the failback test world with the check script.
func newFailbackEnv(t *testing.T) *env {
	return newFailbackEnvWith(t, envOptions{edit: failbackConfig})
}

func newFailbackEnvWith(t *testing.T, o envOptions) *env {
	t.Helper()
	e := newEnvWith(t, o)
	require.NoError(t, os.WriteFile(filepath.Join(e.dir, "scripts/check.sh"), []byte(fmt.Sprintf(checkScript, e.dir)), 0o755))
	return e
}

// Failback: refused without a replica; after a run and changes on the DR side, `replctl
// failback` puts the target's replica back into the source dataset (a plain directory
// again; the old one kept aside), writing only the changed data to the repository; the
// next forward run works as before.
func TestFailbackAfterRun(t *testing.T) {
	e := newFailbackEnv(t)
	writeDataset(t, e.sourceDir(), 150, 64<<10, 31)
	e.startAgents("a1", "a2", "b1", "b2")

	out, err := e.cli("failback", "orders", "--wait", "--yes")
	require.Error(t, err, out)
	assert.Contains(t, out, "the target has no replica to fail back")
	t.Logf("failback without a replica:\n%s", out)

	st, err := e.wait(e.start("orders"))
	require.NoError(t, err)
	require.NotNil(t, st.Replica)

	repo := filepath.Join(e.dir, "storage/array-b/.replctl/repository")
	var written []int64
	for i, change := range []int{256 << 10, 2560 << 10} {
		// The application ran on the DR side after a failover: it wrote a new file and
		// replaced another one (new inodes: the replica's other files stay untouched).
		replica, err := filepath.EvalSymlinks(e.targetLink())
		require.NoError(t, err)
		writeRandom(t, filepath.Join(replica, "dr-written.bin"), change, uint64(40+i))
		tmp := filepath.Join(replica, "d03/s0/.tmp")
		require.NoError(t, os.WriteFile(tmp, []byte("replaced on DR"), 0o644))
		require.NoError(t, os.Rename(tmp, filepath.Join(replica, "d03/s0/f00003.bin")))
		want := treeDigest(t, replica)

		before := dirBytes(t, repo)
		var r *datasetReader
		if i == 0 {
			r = startDatasetReader(t, e.sourceDir())
		}
		out, err := e.cli("failback", "orders", "--wait", "--yes")
		require.NoError(t, err, out)
		after := dirBytes(t, repo)
		if r != nil {
			r.check(t)
		}
		written = append(written, after-before)
		t.Logf("failback %d: %d KiB changed on DR; repository grew by %d KiB (dataset %d KiB)", i+1, change>>10, (after-before)>>10, dirBytes(t, e.sourceDir())>>10)
		assert.Contains(t, out, "direction")
		if i == 0 {
			t.Logf("replctl failback orders --wait:\n%s", out)
		}

		assert.Equal(t, want, treeDigest(t, e.sourceDir()), "the source holds the DR side's data")
		fi, err := os.Lstat(e.sourceDir())
		require.NoError(t, err)
		assert.True(t, fi.IsDir(), "the source dataset is a plain directory again")
		kept, err := filepath.Glob(filepath.Join(e.dir, "storage/array-a/.replctl/failback/orders/*.before"))
		require.NoError(t, err)
		assert.Len(t, kept, i+1, "the replaced source directory is kept")
		m := strings.Join(e.markers("b1"), "\n")
		assert.Contains(t, m, "quiesce host=b1 agent=b1", "the DR side's application is quiesced")
		assert.Contains(t, strings.Join(e.markers("a1"), "\n"), "check host=a1 agent=a1 source="+e.sourceDir(), "the primary's check ran on a1")

		if i == 0 {
			// The job's latest run is the failback.
			d, err := e.c.DescribeWorkflowExecution(context.Background(), workflows.WorkflowID("orders"), "")
			require.NoError(t, err)
			recordHistory(t, e, workflows.WorkflowID("orders"), d.GetWorkflowExecutionInfo().GetExecution().GetRunId(), "failback-guarded-baseline")
		}

		// Forward again: the next replication starts from the failed-back source.
		_, err = e.wait(e.start("orders"))
		require.NoError(t, err)
		assert.Equal(t, treeDigest(t, e.sourceDir()), treeDigest(t, e.targetLink()))
	}
	// Only changes move: the repository grows by about the changed bytes, not the dataset.
	dataset := dirBytes(t, e.sourceDir())
	assert.Less(t, written[0], dataset/4, "a small change writes far less than the dataset")
	assert.Greater(t, written[1], written[0]*5, "ten times the change writes several times the bytes")
	assert.Less(t, written[1], int64(2560<<10)*2)
}

// datasetReader stats a dataset path in a loop during a failback and reads, through one
// directory fd, the two files the DR side changed: the path must never be missing and each
// read must see one whole tree, the old one (no dr-written.bin, f00003 as written) or the
// new one, and never old again after new.
type datasetReader struct {
	stop                  atomic.Bool
	done                  chan struct{}
	reads, missing, mixed int
	sawOld, wentBack      bool
	sawNew                atomic.Bool
}

// startDatasetReader returns once the reader has read the tree at dir once.
func startDatasetReader(t *testing.T, dir string) *datasetReader {
	r := &datasetReader{done: make(chan struct{})}
	first := make(chan struct{})
	go func() {
		defer close(r.done)
		for i := 0; !r.stop.Load(); i++ {
			if i == 1 {
				close(first)
			}
			fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
			if err != nil {
				r.missing++
				continue
			}
			var st unix.Stat_t
			isNew := unix.Fstatat(fd, "dr-written.bin", &st, unix.AT_SYMLINK_NOFOLLOW) == nil
			b := make([]byte, 64)
			n := -1
			if f, err := unix.Openat(fd, "d03/s0/f00003.bin", unix.O_RDONLY, 0); err == nil {
				n, _ = unix.Read(f, b)
				unix.Close(f)
			}
			unix.Close(fd)
			r.reads++
			replaced := n >= 0 && string(b[:n]) == "replaced on DR"
			switch {
			case n < 0 || isNew != replaced:
				r.mixed++
			case isNew:
				r.sawNew.Store(true)
			default:
				r.wentBack = r.wentBack || r.sawNew.Load()
				r.sawOld = true
			}
		}
	}()
	t.Cleanup(func() { r.stop.Store(true); <-r.done })
	<-first // it has read the old tree once before the failback starts
	return r
}

// check stops the reader and asserts what it saw.
func (r *datasetReader) check(t *testing.T) {
	t.Helper()
	require.Eventually(t, r.sawNew.Load, 10*time.Second, time.Millisecond, "the reader reads the new tree after the failback")
	r.stop.Store(true)
	<-r.done
	t.Logf("reader during the failback: %d reads, %d missing, %d mixed", r.reads, r.missing, r.mixed)
	assert.Zero(t, r.missing, "the source dataset path never disappeared")
	assert.Zero(t, r.mixed, "every read saw one whole tree")
	assert.True(t, r.sawOld, "the reader saw the old tree before the new one")
	assert.False(t, r.wentBack)
}

// Failback is refused, with nothing run and nothing replaced: without the job's opt-in
// (CLI and workflow input), without --yes, with a workflow input that lacks the typed
// confirmation (as the Web UI would start it), and while the primary's check script says
// the application runs.
func TestFailbackGuards(t *testing.T) {
	e := newFailbackEnv(t)
	writeDataset(t, e.sourceDir(), 60, 16<<10, 33)
	e.startAgents("a1", "a2", "b1", "b2")
	_, err := e.wait(e.start("orders"))
	require.NoError(t, err)
	replica, err := filepath.EvalSymlinks(e.targetLink())
	require.NoError(t, err)
	writeRandom(t, filepath.Join(replica, "dr-written.bin"), 64<<10, 50)
	source := treeDigest(t, e.sourceDir())
	nothingReplaced := func(what string) {
		t.Helper()
		assert.Equal(t, source, treeDigest(t, e.sourceDir()), "%s: the source is untouched", what)
		kept, err := filepath.Glob(filepath.Join(e.dir, "storage/array-a/.replctl/failback/orders/*.before"))
		require.NoError(t, err)
		assert.Empty(t, kept, "%s: nothing was replaced", what)
		for _, m := range e.markers("b1") {
			assert.NotContains(t, m, "quiesce host=b1", "%s: the DR side was not quiesced", what)
		}
	}
	startFailback := func(in workflows.ReplicationInput) error {
		run, err := e.c.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{
			ID: workflows.WorkflowID(in.Job), TaskQueue: workflows.DefaultTaskQueue, WorkflowTaskTimeout: workflows.WorkflowTaskTimeout,
		}, workflows.ReplicationWorkflowName, in)
		require.NoError(t, err)
		_, err = e.wait(run)
		return err
	}

	// The job without failback.allow: the CLI refuses (exit 2), and so does the workflow.
	e.writeConfigAs(e.cfgFile, func(c *config.Config) { c.Jobs[0].Failback.Allow = false })
	out, err := e.cli("failback", "orders", "--yes", "--wait")
	assert.Equal(t, 2, exitCodeOf(err), out)
	assert.Contains(t, out, "job orders does not allow failback: set `failback: {allow: true}` on it (jobs[0].failback.allow")
	err = startFailback(workflows.ReplicationInput{Job: "orders", Direction: workflows.DirectionFailback, Confirm: "orders"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "job orders does not allow failback: set `failback: {allow: true}`")
	t.Logf("failback without opt-in: %v", err)
	assert.Zero(t, countMarkers(e.markers("a1"), "check "), "refused before the check script")
	nothingReplaced("no opt-in")
	e.writeConfigAs(e.cfgFile, func(c *config.Config) { c.Jobs[0].Failback.Allow = true })

	// Without --yes the CLI shows what it would replace and starts nothing.
	checksBefore := countMarkers(e.markers("a1"), "check ")
	out, err = e.cli("failback", "orders", "--wait")
	assert.Equal(t, 2, exitCodeOf(err), out)
	assert.Contains(t, out, "orders: "+e.sourceDir()+" on host a1")
	assert.Contains(t, out, "with array-b:orders: replica ")
	assert.Contains(t, out, "add --yes to go ahead")
	t.Logf("replctl failback orders (no --yes):\n%s", out)

	// A workflow input without the typed confirmation (the UI's start form) is bad input.
	err = startFailback(workflows.ReplicationInput{Job: "orders", Direction: workflows.DirectionFailback})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `bad workflow input: a failback replaces the source dataset of job orders with the target's replica: confirm it by typing the job's name, {"job": "orders", "direction": "failback", "confirm": "orders"}`)
	var appErr *temporal.ApplicationError
	require.ErrorAs(t, err, &appErr)
	assert.Equal(t, "BadInput", appErr.Type())
	assert.Equal(t, checksBefore, countMarkers(e.markers("a1"), "check "), "no script ran")
	nothingReplaced("no confirmation")

	// The primary's check says the application runs: refused after the check, before the push.
	require.NoError(t, os.WriteFile(filepath.Join(e.dir, "primary-running"), nil, 0o644))
	out, err = e.cli("failback", "orders", "--yes", "--wait")
	assert.Equal(t, 3, exitCodeOf(err), out)
	assert.Contains(t, out, "the primary application is running on host a1 (check script check.sh exited 3): stop it before failing back; nothing was replaced")
	t.Logf("failback while the primary runs:\n%s", out)
	assert.Equal(t, checksBefore+1, countMarkers(e.markers("a1"), "check "), "the check ran once")
	nothingReplaced("primary running")

	// Stopped: the failback goes through.
	require.NoError(t, os.Remove(filepath.Join(e.dir, "primary-running")))
	out, err = e.cli("failback", "orders", "--yes", "--wait")
	require.NoError(t, err, out)
	assert.Regexp(t, `(?m)^primary +stopped: check script check.sh on host a1 exited 0$`, out)
	assert.Equal(t, treeDigest(t, e.targetLink()), treeDigest(t, e.sourceDir()))
}

// The primary host cannot be reached (its agent killed, its sshd stopped): the failback is
// refused, naming --primary-down, with nothing replaced; with --primary-down it goes on and
// the run's status says it went on without the check.
func TestFailbackPrimaryDown(t *testing.T) {
	sshd := sshtest.Start(t)
	e := newFailbackEnvWith(t, envOptions{a1SSH: sshd, edit: func(c *config.Config) {
		failbackConfig(c)
		c.Jobs[0].OnUnreachableHost = config.OnUnreachableContinue
	}})
	writeDataset(t, e.sourceDir(), 40, 16<<10, 35)
	e.startAgents("a1", "a2", "b1", "b2")
	_, err := e.wait(e.start("orders"))
	require.NoError(t, err)
	replica, err := filepath.EvalSymlinks(e.targetLink())
	require.NoError(t, err)
	writeRandom(t, filepath.Join(replica, "dr-written.bin"), 32<<10, 51)
	source := treeDigest(t, e.sourceDir())

	e.kill("a1")
	sshd.Stop()
	out, err := e.cli("failback", "orders", "--yes", "--wait")
	assert.Equal(t, 3, exitCodeOf(err), out)
	assert.Contains(t, out, "the primary application host a1 cannot be reached to check that its application is stopped")
	assert.Contains(t, out, "start the failback with --primary-down")
	t.Logf("failback with the primary unreachable:\n%s", out)
	assert.Equal(t, source, treeDigest(t, e.sourceDir()), "nothing replaced")

	out, err = e.cli("failback", "orders", "--yes", "--wait", "--primary-down")
	require.NoError(t, err, out)
	assert.Regexp(t, `(?m)^primary +unreachable, going on because the input says primary_down: the check script check.sh could not run on host a1`, out)
	assert.Equal(t, treeDigest(t, e.targetLink()), treeDigest(t, e.sourceDir()))
	t.Logf("failback with --primary-down:\n%s", out)
}

func countMarkers(lines []string, prefix string) int {
	n := 0
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			n++
		}
	}
	return n
}

// exitCodeOf is the exit code of a finished command (0 for no error).
func exitCodeOf(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// cli runs the replctl binary against the test server.
func (e *env) cli(args ...string) (string, error) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	args = append(args, "--config", e.cfgFile, "--address", e.addr, "--namespace", e.namespace)
	out, err := exec.CommandContext(ctx, replctlBin, args...).CombinedOutput()
	return string(out), err
}

func writeRandom(t *testing.T, p string, n int, seed uint64) {
	t.Helper()
	dir := t.TempDir()
	writeDataset(t, dir, 1, 2*n, seed) // one file of n..3n bytes
	b, err := os.ReadFile(filepath.Join(dir, "d00/s0/f00000.bin"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(p, b[:n], 0o644))
}

// dirBytes is the size of every regular file under dir.
func dirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	}))
	return n
}
