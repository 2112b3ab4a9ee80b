package test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/api/enums/v1"
	"golang.org/x/sys/unix"

	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/internal/testworld"
	"github.com/replctl/replctl/workflows"
)

// A storage fault (the target or the repository full, read-only or failing) says nothing
// about the agent: every agent of that storage would meet it. These tests put the storage
// on a real small tmpfs and check that the step fails at once with the storage named, no
// takeover and no takeover script, and that the failed step leaves the filesystem as it
// found it.

// smallFS mounts a tmpfs of size bytes at dir (empty) for the rest of the test.
func smallFS(t *testing.T, dir string, size int64) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	unmount, err := testworld.MountTmpfs(dir, size)
	require.NoError(t, err)
	t.Cleanup(unmount)
}

// newSmallStorageEnv is the test world with the job's repository at repository and a tmpfs
// of size bytes at dir (relative to the test dir), which it returns.
func newSmallStorageEnv(t *testing.T, repository config.Repository, dir string, size int64) (*env, string) {
	t.Helper()
	e := newEnvWith(t, envOptions{edit: func(c *config.Config) { c.Jobs[0].Repository = repository }})
	dir = filepath.Join(e.dir, dir)
	smallFS(t, dir, size)
	return e, dir
}

// resizeFS remounts the tmpfs at dir with extra options (size=..., ro, rw).
func resizeFS(t *testing.T, dir, opts string) {
	t.Helper()
	out, err := exec.Command("mount", "-o", "remount,"+opts, dir).CombinedOutput()
	require.NoError(t, err, "remount %s %s: %s", dir, opts, out)
}

// usedBytes is what df shows as used on the filesystem of dir.
func usedBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var s unix.Statfs_t
	require.NoError(t, unix.Statfs(dir, &s))
	return int64(s.Blocks-s.Bfree) * s.Bsize
}

// peakUsed samples the used bytes of dir until stop is closed and returns the peak.
func peakUsed(dir string, stop <-chan struct{}) *atomic.Int64 {
	var peak atomic.Int64
	go func() {
		for {
			var s unix.Statfs_t
			if unix.Statfs(dir, &s) == nil {
				if u := int64(s.Blocks-s.Bfree) * s.Bsize; u > peak.Load() {
					peak.Store(u)
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return &peak
}

// activityAttempts counts how often each activity type was scheduled in a run.
func (e *env) activityAttempts(workflowID, runID string) map[string]int {
	e.t.Helper()
	n := map[string]int{}
	iter := e.c.GetWorkflowHistory(context.Background(), workflowID, runID, false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for iter.HasNext() {
		ev, err := iter.Next()
		require.NoError(e.t, err)
		if a := ev.GetActivityTaskScheduledEventAttributes(); a != nil {
			n[a.GetActivityType().GetName()]++
		}
	}
	return n
}

// noTakeoverScripts asserts that no host ran a takeover script.
func (e *env) noTakeoverScripts(hosts ...string) {
	e.t.Helper()
	for _, h := range hosts {
		for _, m := range e.markers(h) {
			assert.False(e.t, strings.HasPrefix(m, "takeover "), "host %s ran a takeover script: %s", h, m)
		}
	}
}

// The target filesystem fills up during the pull: the pull fails once, naming the target
// storage, with no takeover and no takeover script; the published replica stays intact; the
// failed pull's staging is gone, so the filesystem is back to its usage before the run; a
// read-only target is the same kind of fault; the next run succeeds once there is room.
func TestTargetFullIsAStorageFault(t *testing.T) {
	e, target := newSmallStorageEnv(t, config.Repository{Storage: "array-a"}, "storage/array-b", 6<<20)
	writeDataset(t, e.sourceDir(), 8, 256<<10, 1)
	e.startAgents("a1", "a2", "b1", "b2")

	st, err := e.wait(e.start("orders"))
	require.NoError(t, err)
	require.Equal(t, workflows.PhaseCompleted, st.Phase)
	published := treeDigest(t, e.targetLink())

	// 6 MiB more than the 6 MiB filesystem can hold next to the first replica.
	writeDataset(t, filepath.Join(e.sourceDir(), "more"), 24, 256<<10, 2)
	before := usedBytes(t, target)
	stop := make(chan struct{})
	peak := peakUsed(target, stop)
	run := e.start("orders")
	_, err = e.wait(run)
	close(stop)
	after := usedBytes(t, target)
	t.Logf("target df used: before %d KiB, peak during the pull %d KiB (of %d KiB), after %d KiB", before>>10, peak.Load()>>10, 6<<10, after>>10)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no space left on device")
	assert.Contains(t, err.Error(), "storage array-b")
	st = e.status(run)
	assert.Empty(t, st.Takeovers, "a full target is not an agent fault")
	assert.Equal(t, 1, e.activityAttempts(run.GetID(), run.GetRunID())["Pull"], "one pull attempt: no retry, no takeover")
	e.noTakeoverScripts("a1", "a2", "b1", "b2")
	// The peak is logged, not asserted: sampled every 5 ms, it missed the fill under load (CI
	// on a1d8f71); the ENOSPC above is what shows the pull wrote until the disk was full.
	assert.InDelta(t, before, after, 64<<10, "the failed pull's staging is removed")
	assert.Equal(t, published, treeDigest(t, e.targetLink()), "the published replica is intact")

	// A read-only target: the same class of fault.
	resizeFS(t, target, "ro")
	run = e.start("orders")
	_, err = e.wait(run)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "read-only file system")
	assert.Contains(t, err.Error(), "storage array-b")
	assert.Empty(t, e.status(run).Takeovers)
	e.noTakeoverScripts("a1", "a2", "b1", "b2")

	// Room again: the next run succeeds.
	resizeFS(t, target, "rw,size=32m")
	e.replicatesSource()
}

// The repository's storage fills up: during the precopy, the run fails before anything is
// quiesced; during the push (no precopy), the push fails once, naming the repository and
// saying what it keeps and how to reclaim it, the application is thawed, and nothing is taken
// over. After the filesystem grows, the next run succeeds.
func TestRepositoryFullIsAStorageFault(t *testing.T) {
	e, repo := newSmallStorageEnv(t, config.Repository{Storage: "array-b", Path: "repo/orders"}, "storage/array-b/repo", 3<<20)
	writeDataset(t, e.sourceDir(), 24, 256<<10, 3)
	e.startAgents("a1", "a2", "b1", "b2")

	run := e.start("orders")
	_, err := e.wait(run)
	require.Error(t, err)
	t.Logf("precopy: run failed: %v", err)
	assert.Contains(t, err.Error(), "no space left on device")
	assert.Contains(t, err.Error(), "storage array-b (the job's repository")
	st := e.status(run)
	assert.Empty(t, st.Takeovers, "a full repository is not an agent fault")
	n := e.activityAttempts(run.GetID(), run.GetRunID())
	// (The precopy travels in the push that carries the quiesce: one agent for both roles.)
	assert.Equal(t, 1, n["Push"], "one attempt at the precopy: no retry, no takeover")
	assert.Zero(t, n["Precopy"])
	assert.Zero(t, n["RunScript"], "nothing quiesced: the push would meet the same storage")
	assert.Empty(t, e.markers("a1"))

	// Without a precopy the push meets the full repository while the application is frozen.
	e.writeConfigAs(e.cfgFile, func(c *config.Config) { c.Jobs[0].Precopy = config.PrecopyNever })
	run = e.start("orders")
	_, err = e.wait(run)
	require.Error(t, err)
	t.Logf("push: run failed: %v", err)
	assert.Contains(t, err.Error(), "no space left on device")
	assert.Contains(t, err.Error(), "storage array-b (the job's repository")
	assert.Contains(t, err.Error(), "replctl maintain orders --full")
	st = e.status(run)
	assert.Empty(t, st.Takeovers)
	assert.Empty(t, st.QuiescedHost, "the application was thawed")
	assert.Equal(t, 1, e.activityAttempts(run.GetID(), run.GetRunID())["Push"], "one push attempt: no retry, no takeover")
	assert.Equal(t, []string{"quiesce", "resume"}, scriptSteps(e.markers("a1")))
	e.noTakeoverScripts("a1", "a2", "b1", "b2")

	resizeFS(t, repo, "size=64m")
	e.replicatesSource()
}

// replicatesSource runs the job and checks that it completed with a replica equal to the
// source.
func (e *env) replicatesSource() {
	e.t.Helper()
	st, err := e.wait(e.start("orders"))
	require.NoError(e.t, err)
	assert.Equal(e.t, workflows.PhaseCompleted, st.Phase)
	assert.Equal(e.t, treeDigest(e.t, e.sourceDir()), treeDigest(e.t, e.targetLink()))
}

// scriptSteps are the steps of marker lines ("quiesce host=a1 ..." -> "quiesce").
func scriptSteps(markers []string) []string {
	var out []string
	for _, m := range markers {
		out = append(out, strings.Fields(m)[0])
	}
	return out
}

// What a killed pull leaves on the target (its staging dir under an older epoch, and a
// trash dir mid-deletion) is reclaimed by the next pull before it writes: here the target
// has room for the new replica only once the leftovers are gone. (The leftovers are laid
// out as a killed agent leaves them; TestTargetFullIsAStorageFault covers a failed pull.)
func TestNextPullReclaimsLeftoversFirst(t *testing.T) {
	e, target := newSmallStorageEnv(t, config.Repository{Storage: "array-a"}, "storage/array-b", 8<<20)
	writeDataset(t, e.sourceDir(), 4, 256<<10, 4)
	e.startAgents("a1", "b1")
	st, err := e.wait(e.start("orders"))
	require.NoError(t, err)
	require.Equal(t, workflows.PhaseCompleted, st.Phase)

	left := []string{
		filepath.Join(target, ".replctl/staging/orders/20261202T000000Z-deadbeef.e1"),
		filepath.Join(target, ".replctl/trash/orders/20261201T000000Z-cafebabe.17"),
	}
	for i, d := range left {
		require.NoError(t, os.MkdirAll(filepath.Join(d, "sub"), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(d, "sub", "partial"), make([]byte, (2-i)<<20), 0o644))
	}
	writeDataset(t, filepath.Join(e.sourceDir(), "more"), 16, 256<<10, 5)
	before := usedBytes(t, target)
	t.Logf("target df used with the leftovers: %d KiB of %d KiB", before>>10, 8<<10)

	e.replicatesSource() // fits only once the leftovers are reclaimed
	for _, d := range left {
		assert.NoDirExists(t, d)
	}
	t.Logf("target df used after: %d KiB", usedBytes(t, target)>>10)
}
