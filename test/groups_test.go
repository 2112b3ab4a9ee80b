package test

import (
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/replctl/replctl/workflows"
)

// groupConfig is the test world with the orders job as a consistency group of two datasets.
var groupConfig = strings.Replace(envConfig,
	"    source: {storage: array-a, dataset: orders}\n    target: {storage: array-b, dataset: orders}\n",
	"    source: {storage: array-a, datasets: [orders/db, orders/logs]}\n    target: {storage: array-b, datasets: [dr/db, dr/logs]}\n", 1)

// fanOutConfig adds storage array-c with its own host c1 and fans orders out to array-b
// (order b1, b2) and array-c (order c1). The repository stays on array-b.
const fanOutConfig = `
temporal: {address: 127.0.0.1:7233, namespace: default}
storage:
  - {name: array-a, path: %[1]s/storage/array-a}
  - {name: array-b, path: %[1]s/storage/array-b}
  - {name: array-c, path: %[1]s/storage/array-c}
hosts:
  - {name: a1, attach: {array-a: %[1]s/storage/array-a, array-b: %[1]s/storage/array-b}, scripts: %[1]s/scripts, state: %[1]s/hosts/a1%[4]s}
  - {name: b1, attach: {array-b: %[1]s/storage/array-b}, scripts: %[1]s/scripts, state: %[1]s/hosts/b1}
  - {name: b2, attach: {array-b: %[1]s/storage/array-b}, scripts: %[1]s/scripts, state: %[1]s/hosts/b2}
  - {name: c1, attach: {array-c: %[1]s/storage/array-c, array-b: %[1]s/storage/array-b}, scripts: %[1]s/scripts, state: %[1]s/hosts/c1}
jobs:
  - name: orders
    source: {storage: array-a, dataset: orders}
    targets:
      - {storage: array-b, dataset: orders, order: [b1, b2]}
      - {storage: array-c, dataset: copies/orders, order: [c1]}
    application: {host: a1, quiesce: freeze.sh, resume: thaw.sh, timeout: 30s}
    order:
      source: [a1]
    timeouts: {heartbeat: %[2]s, schedule_to_start: %[3]s, start_to_close: 5m}
    repository: {storage: array-b}
`

// A consistency group: both datasets are imaged while quiesced once, and both replicas
// become visible with one switch; each equals its source, in the first run and after
// changes to both.
func TestGroupPublishesEveryDatasetTogether(t *testing.T) {
	e := newEnvWith(t, envOptions{config: groupConfig})
	src := func(ds string) string { return filepath.Join(e.dir, "storage/array-a/orders", ds) }
	dst := func(ds string) string { return filepath.Join(e.dir, "storage/array-b/dr", ds) }
	writeDataset(t, src("db"), 60, 16<<10, 11)
	writeDataset(t, src("logs"), 40, 8<<10, 12)
	e.startAgents("a1", "a2", "b1", "b2")

	var replicas []string
	for round := 0; round < 2; round++ {
		st, err := e.wait(e.start("orders"))
		require.NoError(t, err)
		assert.Equal(t, workflows.PhaseCompleted, st.Phase)
		require.Len(t, st.Images, 2, "one image per dataset")
		require.Len(t, st.Targets, 1)
		tg := st.Targets[0]
		assert.Equal(t, workflows.TargetCompleted, tg.Phase)
		require.Len(t, tg.Replicas, 2)
		current := filepath.Join(e.dir, "storage/array-b/.replctl/groups/orders/current")
		assert.Equal(t, current, tg.Group)
		name, err := os.Readlink(current)
		require.NoError(t, err)
		for _, ds := range []string{"db", "logs"} {
			assert.Equal(t, treeDigest(t, src(ds)), treeDigest(t, dst(ds)), "dataset %s", ds)
			real, err := filepath.EvalSymlinks(dst(ds))
			require.NoError(t, err)
			assert.Equal(t, name, filepath.Base(real), "every dataset shows the group's current replica")
		}
		// One quiesce and one resume for the whole group.
		m := e.markers("a1")
		require.Len(t, m, 2*(round+1), "markers: %v", m)
		replicas = append(replicas, name)
		if round == 0 {
			require.NoError(t, os.WriteFile(filepath.Join(src("db"), "d00/s0/f00000.bin"), []byte("changed db"), 0o644))
			require.NoError(t, os.WriteFile(filepath.Join(src("logs"), "new.log"), []byte("new log"), 0o644))
		} else {
			recordHistory(t, e, workflows.WorkflowID("orders"), st.RunID, "group")
		}
	}
	assert.NotEqual(t, replicas[0], replicas[1])
	// The first group replica is still complete for readers who resolved it earlier.
	old := filepath.Join(e.dir, "storage/array-b/.replctl/groups/orders", replicas[0], "dr%2Fdb")
	b, err := os.ReadFile(filepath.Join(old, "d00/s0/f00000.bin"))
	require.NoError(t, err)
	assert.NotEqual(t, "changed db", string(b))
}

// Fan-out: one push, a pull per target on its own order, both replicas equal to the source.
// Then with target c's only agent down, target b still publishes and the run fails naming c.
func TestFanOutToTwoTargets(t *testing.T) {
	e := newEnvWith(t, envOptions{config: fanOutConfig})
	writeDataset(t, e.sourceDir(), 80, 16<<10, 21)
	e.startAgents("a1", "b1", "b2", "c1")

	st, err := e.wait(e.start("orders"))
	require.NoError(t, err)
	require.Len(t, st.Targets, 2)
	for i, want := range []struct{ storage, agent, link string }{
		{"array-b", "b1", "storage/array-b/orders"},
		{"array-c", "c1", "storage/array-c/copies/orders"},
	} {
		tg := st.Targets[i]
		assert.Equal(t, want.storage, tg.Storage)
		assert.Equal(t, workflows.TargetCompleted, tg.Phase)
		assert.Equal(t, want.agent, tg.Agent)
		assert.Equal(t, treeDigest(t, e.sourceDir()), treeDigest(t, filepath.Join(e.dir, want.link)), "target %s", want.storage)
	}
	recordHistory(t, e, workflows.WorkflowID("orders"), st.RunID, "fan-out")

	e.kill("c1")
	require.NoError(t, os.WriteFile(filepath.Join(e.sourceDir(), "added.txt"), []byte("added"), 0o644))
	st, err = e.wait(e.start("orders"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "1 of 2 targets failed (1 published): target array-c: pull failed on every target agent in order [c1]")
	var appErr *temporal.ApplicationError
	require.ErrorAs(t, err, &appErr)
	assert.Equal(t, "TargetsFailed", appErr.Type())
	b, err := os.ReadFile(filepath.Join(e.targetLink(), "added.txt"))
	require.NoError(t, err, "target array-b published although array-c failed")
	assert.Equal(t, "added", string(b))
	_, err = os.Stat(filepath.Join(e.dir, "storage/array-c/copies/orders/added.txt"))
	assert.ErrorIs(t, err, fs.ErrNotExist, "array-c keeps its previous replica")
}

// failbackConfig is the test world with a failback application on the target side.
var failbackConfig = envConfig + "    failback: {application: {host: b1, quiesce: freeze.sh, resume: thaw.sh}}\n"

// Failback: refused without a replica; after a run and changes on the DR side, `replctl
// failback` puts the target's replica back into the source dataset (a plain directory
// again; the old one kept aside), writing only the changed data to the repository; the
// next forward run works as before.
func TestFailbackAfterRun(t *testing.T) {
	e := newEnvWith(t, envOptions{config: failbackConfig})
	writeDataset(t, e.sourceDir(), 150, 64<<10, 31)
	e.startAgents("a1", "a2", "b1", "b2")

	out, err := e.cli("failback", "orders", "--wait")
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
		out, err := e.cli("failback", "orders", "--wait")
		require.NoError(t, err, out)
		after := dirBytes(t, repo)
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

		if i == 0 {
			// The job's latest run is the failback.
			d, err := e.c.DescribeWorkflowExecution(context.Background(), workflows.WorkflowID("orders"), "")
			require.NoError(t, err)
			recordHistory(t, e, workflows.WorkflowID("orders"), d.GetWorkflowExecutionInfo().GetExecution().GetRunId(), "failback")
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

// cli runs the replctl binary against the test server.
func (e *env) cli(args ...string) (string, error) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	args = append(args, "--config", e.cfgFile, "--address", e.ts.GetFrontendHostPort(), "--namespace", e.ts.GetDefaultNamespace())
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
