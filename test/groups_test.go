package test

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/workflows"
)

// groupConfig makes the test world's orders job a consistency group of two datasets.
func groupConfig(c *config.Config) {
	c.Jobs[0].Source = config.Endpoint{Storage: "array-a", Datasets: []string{"orders/db", "orders/logs"}}
	c.Jobs[0].Target = config.Endpoint{Storage: "array-b", Datasets: []string{"dr/db", "dr/logs"}}
}

// fanOutConfig adds storage array-c with its own host c1 and fans orders out to array-b
// (order b1, b2) and array-c (order c1). The repository stays on array-b.
func fanOutConfig(c *config.Config) {
	c.Storage = append(c.Storage, config.Storage{Name: "array-c", Path: filepath.Join(filepath.Dir(c.Storage[0].Path), "array-c")})
	a1, b1, b2 := c.Hosts[0], c.Hosts[2], c.Hosts[3]
	c1 := b2
	c1.Name, c1.State = "c1", filepath.Join(filepath.Dir(b2.State), "c1")
	c.Hosts = []config.Host{a1, b1, b2, c1}
	for i := 1; i < 3; i++ {
		attachOnly(c, &c.Hosts[i], "array-b")
	}
	attachOnly(c, &c.Hosts[3], "array-c", "array-b")
	j := &c.Jobs[0]
	plainJob(j)
	j.Order.Source = []string{"a1"}
	j.Target = config.Endpoint{}
	j.Targets = []config.Target{
		{Storage: "array-b", Dataset: "orders", Order: []string{"b1", "b2"}},
		{Storage: "array-c", Dataset: "copies/orders", Order: []string{"c1"}},
	}
}

// A consistency group: both datasets are imaged while quiesced once, and both replicas
// become visible with one switch; each equals its source, in the first run and after
// changes to both.
func TestGroupPublishesEveryDatasetTogether(t *testing.T) {
	e := newEnvWith(t, envOptions{edit: groupConfig})
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
			recordHistory(t, e, workflows.WorkflowID("orders"), st.RunID, "group-warm")
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
	e := newEnvWith(t, envOptions{edit: fanOutConfig})
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
	recordHistory(t, e, workflows.WorkflowID("orders"), st.RunID, "fan-out-warm")

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
