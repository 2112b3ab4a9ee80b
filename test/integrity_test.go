package test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/workflows"
)

// A write into the published replica (mtime put back) is not carried into the next
// replica: the next run writes that file anew from the image, and status says how many
// files it found changed on the target.
func TestTamperedReplicaIsNotCarriedAndShown(t *testing.T) {
	e := newEnv(t)
	writeDataset(t, e.sourceDir(), 20, 4<<10, 3)
	e.startAgents("a1", "b1")
	_, err := e.wait(e.start("orders"))
	require.NoError(t, err)

	rel := "d00/s0/f00000.bin"
	damage(t, filepath.Join(e.targetLink(), rel))

	st, err := e.wait(e.start("orders"))
	require.NoError(t, err)
	require.NotNil(t, st.Replica)
	assert.Equal(t, int64(1), st.Replica.Distrusted, "one file was changed on the target")
	want, err := os.ReadFile(filepath.Join(e.sourceDir(), rel))
	require.NoError(t, err)
	got, err := os.ReadFile(filepath.Join(e.targetLink(), rel))
	require.NoError(t, err)
	assert.True(t, bytes.Equal(want, got), "the new replica has the image's content")
	out, err := e.cli("status", "orders")
	require.NoError(t, err, out)
	assert.Contains(t, out, "DAMAGE SEEN")
	assert.Contains(t, out, "1 files of the replica before had been changed on the target")
	t.Logf("replctl status orders:\n%s", out)
}

// replctl verify checks the current replica (and with --all every retained one) against its
// image through an agent of the target order: exit 0 when it matches; after a write into the
// replica (mtime put back) and a file added, exit 6 naming both, in table and JSON.
func TestVerifyCommandListsDamage(t *testing.T) {
	e := newEnv(t)
	writeDataset(t, e.sourceDir(), 20, 4<<10, 5)
	e.startAgents("a1", "b1")
	_, err := e.wait(e.start("orders"))
	require.NoError(t, err)
	_, err = e.wait(e.start("orders"))
	require.NoError(t, err)

	out, err := e.cli("verify", "orders", "--all")
	require.NoError(t, err, out)
	assert.Contains(t, out, "ok")
	assert.NotContains(t, out, "DAMAGED")
	t.Logf("replctl verify orders --all:\n%s", out)

	rel := "d00/s0/f00000.bin"
	damage(t, filepath.Join(e.targetLink(), rel))
	require.NoError(t, os.WriteFile(filepath.Join(e.targetLink(), "planted"), []byte("x"), 0o644))

	out, err = e.cli("verify", "orders")
	t.Logf("replctl verify orders after damage:\n%s", out)
	var xe *exec.ExitError
	require.ErrorAs(t, err, &xe)
	assert.Equal(t, 6, xe.ExitCode())
	assert.Contains(t, out, "DAMAGED: 3 differences") // the content, the planted file and the mtime it gave its dir
	assert.Contains(t, out, rel+": content differs from the image")
	assert.Contains(t, out, "planted: unexpected entry not in the image")

	recordLatest(t, e, workflows.VerifyID("orders"), "verify-damaged")

	out, err = e.cli("verify", "orders", "-o", "json")
	require.ErrorAs(t, err, &xe)
	assert.Equal(t, 6, xe.ExitCode())
	var v struct {
		Error struct {
			Code int    `json:"code"`
			Kind string `json:"kind"`
		} `json:"error"`
		Result struct {
			Replicas []struct {
				Name        string `json:"Name"`
				Damaged     bool   `json:"Damaged"`
				Differences struct {
					Count int `json:"count"`
				} `json:"Differences"`
			} `json:"Replicas"`
		} `json:"result"`
	}
	require.NoError(t, json.Unmarshal([]byte(firstJSON(out)), &v), out)
	assert.Equal(t, 6, v.Error.Code)
	assert.Equal(t, "damaged", v.Error.Kind)
	require.Len(t, v.Result.Replicas, 1)
	assert.True(t, v.Result.Replicas[0].Damaged)
	assert.Equal(t, 3, v.Result.Replicas[0].Differences.Count)

	out, err = e.cli("images", "orders")
	require.NoError(t, err, out)
	t.Logf("replctl images orders:\n%s", out)
	assert.Contains(t, out, "2 images of dataset orders, read by agent b1")
	out, err = e.cli("images", "orders", "-o", "json")
	require.NoError(t, err, out)
	var imgs activities.ImagesResult
	require.NoError(t, json.Unmarshal([]byte(out), &imgs), out)
	require.Len(t, imgs.Images, 2)
	assert.GreaterOrEqual(t, imgs.Images[0].Files, int64(20), "the 20 files written and what else the source holds")

	out, err = e.cli("verify", "orders", "no-such-replica")
	assert.Error(t, err)
	assert.Contains(t, out, `no replica "no-such-replica"`)

	// A repair writes replicas: started under the verification's ID instead of the job's,
	// the workflow refuses before any activity.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	run, err := e.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: workflows.VerifyID("orders"), TaskQueue: "replctl"},
		workflows.VerifyWorkflowName, workflows.VerifyInput{Job: "orders", Repair: true})
	require.NoError(t, err)
	err = run.Get(ctx, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `must hold the job's workflow ID "replctl-orders"`)

	// --repair: both replicas share the damaged inode; each is rebuilt from its image in its
	// place, and a new verification finds nothing. The untouched files are reused.
	before := e.replicaNames()
	out, err = e.cli("verify", "orders", "--all", "--repair")
	t.Logf("replctl verify orders --all --repair:\n%s", out)
	require.NoError(t, err, out)
	assert.Equal(t, 2, strings.Count(out, "REPAIRED:"), out)
	assert.Contains(t, out, "(2 entries written from the repository, 20 files reused after reading)", "the damaged file and the symlink are written")
	recordLatest(t, e, workflows.WorkflowID("orders"), "verify-repair")
	after := e.replicaNames()
	assert.Len(t, after, len(before))
	for _, b := range before {
		assert.NotContains(t, after, b, "the damaged replica %s is gone", b)
	}
	out, err = e.cli("verify", "orders", "--all")
	t.Logf("replctl verify orders --all after the repair:\n%s", out)
	require.NoError(t, err, out)
	assert.NotContains(t, out, "DAMAGED")
	assert.Equal(t, treeDigest(t, e.sourceDir()), treeDigest(t, e.targetLink()))
}

// replicaNames lists the replica dirs of dataset orders on the target.
func (e *env) replicaNames() []string {
	e.t.Helper()
	ents, err := os.ReadDir(filepath.Join(e.dir, "storage/array-b/.replctl/replicas/orders"))
	require.NoError(e.t, err)
	var out []string
	for _, d := range ents {
		out = append(out, d.Name())
	}
	return out
}

// firstJSON is the JSON object that starts out (stderr may follow it).
func firstJSON(out string) string {
	d := json.NewDecoder(strings.NewReader(out[strings.Index(out, "{"):]))
	var raw json.RawMessage
	if d.Decode(&raw) != nil {
		return out
	}
	return string(raw)
}

// damage writes into the file at p and puts its mtime back, as a careless user might.
func damage(t *testing.T, p string) {
	t.Helper()
	fi, err := os.Stat(p)
	require.NoError(t, err)
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte("DAMAGE"), 0)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.NoError(t, os.Chtimes(p, fi.ModTime(), fi.ModTime()))
}

// replctl restore brings an older image back into a new directory on the target storage,
// equal to the source as it was then (the fidelity checker finds no difference), and
// refuses a directory that is not empty.
func TestRestoreCommandBringsBackAnOlderImage(t *testing.T) {
	e := newEnv(t)
	writeDataset(t, e.sourceDir(), 20, 4<<10, 9)
	e.startAgents("a1", "b1")
	_, err := e.wait(e.start("orders"))
	require.NoError(t, err)
	then := filepath.Join(e.dir, "source-then")
	mirror(t, e.sourceDir(), then)
	require.NoError(t, os.Remove(filepath.Join(e.sourceDir(), "d00/s0/f00000.bin")))
	require.NoError(t, os.WriteFile(filepath.Join(e.sourceDir(), "added.bin"), []byte("later"), 0o644))
	_, err = e.wait(e.start("orders"))
	require.NoError(t, err)

	out, err := e.cli("images", "orders", "-o", "json")
	require.NoError(t, err, out)
	var imgs activities.ImagesResult
	require.NoError(t, json.Unmarshal([]byte(out), &imgs), out)
	require.Len(t, imgs.Images, 2)
	older := imgs.Images[1].ID

	to := filepath.Join(e.dir, "storage/array-b/restores/then")
	out, err = e.cli("restore", "orders", older, "--to", to)
	require.NoError(t, err, out)
	t.Logf("replctl restore: %s", out)
	assert.Contains(t, out, "verified=true")
	assert.Empty(t, check(t, then, to).Diffs, "the restore is the source as it was")
	recordLatest(t, e, workflows.RestoreID("orders"), "restore")

	out, err = e.cli("restore", "orders", older, "--to", to)
	require.Error(t, err, out)
	assert.Contains(t, out, "is not empty")
	out, err = e.cli("restore", "orders", older, "--to", e.targetLink())
	require.Error(t, err, out)
	assert.Contains(t, out, "a dataset or replctl's directory")
}

// recordLatest records (with -record) the history of the latest run of workflow id.
func recordLatest(t *testing.T, e *env, id, name string) {
	t.Helper()
	d, err := e.c.DescribeWorkflowExecution(context.Background(), id, "")
	require.NoError(t, err)
	recordHistory(t, e, id, d.GetWorkflowExecutionInfo().GetExecution().GetRunId(), name)
}
