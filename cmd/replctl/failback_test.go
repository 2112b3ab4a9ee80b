package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/workflows"
)

// failbackCLIConfig: job orders allows failback with a check script, job docs has no
// failback section. %[1]s is the test dir.
const failbackCLIConfig = `
storage:
  - {name: array-a, path: %[1]s/a}
  - {name: array-b, path: %[1]s/b}
hosts:
  - {name: a1, attach: {array-a: %[1]s/a, array-b: %[1]s/b}, scripts: %[1]s/scripts}
  - {name: b1, attach: {array-a: %[1]s/a, array-b: %[1]s/b}, scripts: %[1]s/scripts}
jobs:
  - name: orders
    source: {storage: array-a, dataset: orders}
    target: {storage: array-b, dataset: dr/orders}
    application: {host: a1, check: stopped.sh}
    order: {source: [a1], target: [b1]}
    failback: {allow: true}
  - name: docs
    source: {storage: array-a, dataset: docs}
    target: {storage: array-b, dataset: docs}
    application: {host: a1}
    order: {source: [a1], target: [b1]}
`

// failbackCLI is a config and a target layout of real files, and a starter that records
// what it would have started.
type failbackCLI struct {
	dir     string
	f       *Factory
	out     bytes.Buffer
	started []*StartOptions
}

func newFailbackCLI(t *testing.T) *failbackCLI {
	t.Helper()
	e := &failbackCLI{dir: t.TempDir()}
	cfgFile := filepath.Join(e.dir, "replctl.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(fmt.Sprintf(failbackCLIConfig, e.dir)), 0o644))
	// The target's layout: dr/orders links to its current replica, with its meta record.
	name := "20261202T101500Z-0a1b2c3d"
	replica := filepath.Join(e.dir, "b/.replctl/replicas/dr%2Forders", name)
	require.NoError(t, os.MkdirAll(replica, 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(e.dir, "b/.replctl/meta/dr%2Forders"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(e.dir, "b/.replctl/meta/dr%2Forders", name+".json"),
		[]byte(`{"job":"orders","image":"i1","verified":true,"published":"2026-12-02T10:15:07Z"}`), 0o644))
	require.NoError(t, os.MkdirAll(filepath.Join(e.dir, "b/dr"), 0o755))
	require.NoError(t, os.Symlink("../.replctl/replicas/dr%2Forders/"+name, filepath.Join(e.dir, "b/dr/orders")))
	e.f = NewFactory(&e.out, &e.out)
	e.f.ConfigFile = cfgFile
	return e
}

func (e *failbackCLI) run(o *FailbackOptions) error {
	return runFailback(context.Background(), e.f, o, func(_ context.Context, _ *config.Config, so *StartOptions) error {
		e.started = append(e.started, so)
		return nil
	})
}

// Without --yes, failback shows what it would replace and refuses (exit 2, naming --yes);
// with --yes it starts the run with the typed confirmation.
func TestFailbackShowsAndNeedsYes(t *testing.T) {
	e := newFailbackCLI(t)
	err := e.run(&FailbackOptions{Job: "orders", Output: "table"})
	assert.Equal(t, ExitUsage, exitCode(err))
	require.ErrorContains(t, err, "failback of job orders replaces the source data shown above: add --yes to go ahead")
	assert.Empty(t, e.started, "nothing started")
	out := e.out.String()
	t.Logf("replctl failback orders:\n%s%v", out, err)
	assert.Contains(t, out, "failback of job orders replaces, on source storage array-a, with target array-b's current replica:")
	assert.Contains(t, out, "  orders: "+filepath.Join(e.dir, "a/orders")+" on host a1\n")
	assert.Contains(t, out, "    with array-b:dr/orders: replica 20261202T101500Z-0a1b2c3d, published 2026-12-02 10:15:07 UTC")
	assert.Contains(t, out, "its check script stopped.sh runs first")

	e.out.Reset()
	require.NoError(t, e.run(&FailbackOptions{Job: "orders", Output: "json", Yes: true, PrimaryDown: true, Wait: true}))
	require.Len(t, e.started, 1)
	assert.Equal(t, &StartOptions{Job: "orders", Wait: true, Output: "json", Direction: workflows.DirectionFailback, Confirm: "orders", PrimaryDown: true}, e.started[0])
	assert.Contains(t, e.out.String(), "replica 20261202T101500Z-0a1b2c3d", "the plan is shown with --yes too")
}

// A job without failback.allow is refused before anything is shown or started, naming the
// key; an unknown --from is a usage error.
func TestFailbackRefusedWithoutOptIn(t *testing.T) {
	e := newFailbackCLI(t)
	err := e.run(&FailbackOptions{Job: "docs", Yes: true})
	assert.Equal(t, ExitUsage, exitCode(err))
	require.ErrorContains(t, err, "job docs does not allow failback: set `failback: {allow: true}` on it (jobs[1].failback.allow in "+filepath.Join(e.dir, "replctl.yaml"))
	err = e.run(&FailbackOptions{Job: "orders", From: "array-z", Yes: true})
	assert.Equal(t, ExitUsage, exitCode(err))
	require.ErrorContains(t, err, `--from "array-z": job orders has no target on that storage`)
	assert.Empty(t, e.started)
	assert.Empty(t, e.out.String())

	// A target this machine does not see: the plan says so instead of a replica name.
	require.NoError(t, os.RemoveAll(filepath.Join(e.dir, "b")))
	assert.Equal(t, ExitUsage, exitCode(e.run(&FailbackOptions{Job: "orders"})))
	assert.Contains(t, e.out.String(), "with array-b:dr/orders: replica not known here (job orders: target storage array-b is not reachable from this machine")
}
