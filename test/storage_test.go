package test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/internal/runhistory"
)

// A source dataset that is a symlink (here to a directory outside the storage) is refused by
// the run's preflight on the source agent, before the precopy and the quiesce: the run fails
// naming the dataset path, and no script ran (the freeze script never logged a call). Once
// the link is gone and nothing is at the path, a run is refused the same way, saying so.
func TestSymlinkedSourceDatasetRefusedBeforeQuiesce(t *testing.T) {
	e := newEnv(t)
	elsewhere := filepath.Join(e.dir, "elsewhere", "orders")
	writeDataset(t, elsewhere, 20, 1024, 14)
	require.NoError(t, os.Symlink(elsewhere, e.sourceDir()))
	e.startAgents("a1", "a2", "b1", "b2")

	_, err := e.wait(e.start("orders"))
	require.Error(t, err)
	var appErr *temporal.ApplicationError
	require.True(t, errors.As(err, &appErr), "want an application error, got %v", err)
	assert.Equal(t, activities.ErrTypeBadInput, appErr.Type(), "not retried by another agent: %v", err)
	assert.Contains(t, err.Error(), e.sourceDir(), "the dataset path is named")
	assert.Contains(t, err.Error(), "symlink")
	t.Logf("refused: %s", appErr.Message())
	assert.Empty(t, e.markers("a1"), "no script ran: the application was never quiesced")
	for _, h := range []string{"a2", "b1", "b2"} {
		assert.Empty(t, e.markers(h), "no script ran on %s", h)
	}
	_, err = os.Lstat(e.targetLink())
	assert.True(t, os.IsNotExist(err), "nothing was published")

	require.NoError(t, os.Remove(e.sourceDir()))
	_, err = e.wait(e.start("orders"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), e.sourceDir())
	assert.Contains(t, err.Error(), "does not exist")
	assert.Empty(t, e.markers("a1"), "no script ran for a missing dataset either")
}

// An agent whose host attaches a storage that is a symlink to another storage refuses to
// start: exit code 2 (bad config) within seconds, naming both storages and both paths; the
// same agent starts with the config fixed.
func TestAgentRefusesBadStorageAtStart(t *testing.T) {
	e := newEnv(t)
	a, alias := filepath.Join(e.dir, "storage/array-a"), filepath.Join(e.dir, "storage/array-b-alias")
	require.NoError(t, os.Symlink(a, alias))
	bad := filepath.Join(e.dir, "bad.yaml")
	e.writeConfigAs(bad, func(c *config.Config) {
		require.Equal(t, "a1", c.Hosts[0].Name)
		c.Hosts[0].Attach["array-b"] = alias
	})

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, replctlBin, "agent", "--host", "a1", "--config", bad,
		"--address", e.addr, "--namespace", e.namespace, "--log-level", "warn")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	require.NoError(t, ctx.Err(), "the agent must exit by itself; output:\n%s", out.String())
	var exitErr *exec.ExitError
	require.True(t, errors.As(err, &exitErr), "want an exit code, got %v; output:\n%s", err, out.String())
	assert.Equal(t, 2, exitErr.ExitCode(), "bad config: exit code 2; output:\n%s", out.String())
	assert.Contains(t, out.String(), "host a1")
	assert.Contains(t, out.String(), "storage array-b at "+alias+" is a symlink to "+a)
	assert.Contains(t, out.String(), "storage array-b at "+alias+" is the same directory as storage array-a at "+a)
	assert.NotContains(t, out.String(), "polling", "it never polled")
	t.Logf("agent output:\n%s", out.String())

	// The good config: the agent starts and polls.
	e.startAgent("a1")
	log := filepath.Join(e.dir, "agent-a1.log")
	require.Eventually(t, func() bool {
		b, _ := os.ReadFile(log)
		return strings.Contains(string(b), "agent a1 polling")
	}, 20*time.Second, 50*time.Millisecond, "the agent with the good config starts")
}

// A job without scripts has no quiesce to carry its preflight: its push does (one activity,
// no Preflight step), and the check still comes first: a source turned into a symlink is
// refused as bad input, with no takeover, and the replica already published stays.
func TestJobWithoutScriptsChecksInItsPush(t *testing.T) {
	e := newEnvWith(t, envOptions{heartbeat: "2s", scheduleToStart: "5s", edit: func(c *config.Config) {
		c.Jobs[0].Application.Quiesce, c.Jobs[0].Application.Resume, c.Jobs[0].Application.Takeover = "", "", ""
	}})
	writeDataset(t, e.sourceDir(), 20, 4096, 15)
	e.startAgents("a1", "a2", "b1", "b2")
	run := e.start("orders")
	st, err := e.wait(run)
	require.NoError(t, err)
	assert.True(t, st.CrashConsistent)
	assert.Equal(t, treeDigest(t, e.sourceDir()), treeDigest(t, e.targetLink()))
	h, err := runhistory.Load(context.Background(), e.c, run.GetID(), run.GetRunID())
	require.NoError(t, err)
	var types []string
	for _, a := range h.Attempts {
		types = append(types, a.Type)
	}
	assert.Equal(t, []string{activities.PlanName, activities.PushName, activities.PullName}, types, "no Preflight step")
	recordHistory(t, e, run.GetID(), run.GetRunID(), "preflight-in-push-baseline")

	elsewhere := filepath.Join(e.dir, "elsewhere", "orders")
	require.NoError(t, os.MkdirAll(filepath.Dir(elsewhere), 0o755))
	require.NoError(t, os.Rename(e.sourceDir(), elsewhere))
	require.NoError(t, os.Symlink(elsewhere, e.sourceDir()))
	st, err = e.wait(e.start("orders"))
	require.Error(t, err)
	var appErr *temporal.ApplicationError
	require.True(t, errors.As(err, &appErr), "want an application error, got %v", err)
	assert.Equal(t, activities.ErrTypeBadInput, appErr.Type(), "not retried by another agent: %v", err)
	assert.Contains(t, err.Error(), "symlink")
	assert.Empty(t, st.Takeovers)
	assert.Equal(t, treeDigest(t, elsewhere), treeDigest(t, e.targetLink()), "the published replica stays")
}
