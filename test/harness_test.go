// Package test holds replctl's integration tests: a real Temporal server (temporaltest, in
// process), agents as real `replctl agent` processes, real files, real kills.
package test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/server/temporaltest"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/activities/hostexec/sshtest"
	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/internal/runwait"
	"github.com/replctl/replctl/internal/testworld"
	"github.com/replctl/replctl/workflows"
)

// replctlBin is the replctl binary built once for all tests.
var replctlBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "replctl-bin-")
	if err != nil {
		panic(err)
	}
	replctlBin = filepath.Join(dir, "replctl")
	build := exec.Command("go", "build", "-o", replctlBin, "../cmd/replctl")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building replctl for the integration tests:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is one test's world: a Temporal server, a config with four hosts on two storage
// systems, and agent processes.
type env struct {
	t       *testing.T
	ts      *temporaltest.TestServer
	c       client.Client
	dir     string
	cfgFile string
	// cfg is the config written to cfgFile (env.writeConfigAs keeps it so).
	cfg    config.Config
	agents map[string]*testworld.Proc
	// addr and namespace are the Temporal frontend's (temporaltest's, or
	// envOptions.frontend).
	addr, namespace string
}

// testScript logs every call to the marker log of the host it is for, so tests can see
// which agent ran which script for which host.
const testScript = `#!/bin/sh
set -eu
mkdir -p "$REPLCTL_STATE_DIR"
echo "$REPLCTL_STEP host=$REPLCTL_HOST agent=$REPLCTL_AGENT failed=${REPLCTL_FAILED_HOST:-} via=${SSH_CONNECTION:+ssh}${SSH_CONNECTION:-local} run=$REPLCTL_RUN_ID" >> "$REPLCTL_STATE_DIR/markers.log"
`

// envOptions vary the test world.
type envOptions struct {
	heartbeat, scheduleToStart string
	// a1SSH, when set, makes other agents reach host a1 over SSH.
	a1SSH *sshtest.Server
	// edit, when set, changes the world's config (worldConfig) before it is written.
	edit func(c *config.Config)
	// frontend, when set, is a running Temporal frontend (namespace default, replctl's
	// search attributes) to use instead of a temporaltest server.
	frontend string
}

func newEnv(t *testing.T) *env { return newEnvWith(t, envOptions{}) }

func newEnvWith(t *testing.T, o envOptions) *env {
	t.Helper()
	if o.heartbeat == "" {
		o.heartbeat, o.scheduleToStart = "1s", "2s"
	}
	dir := t.TempDir()
	e := &env{t: t, dir: dir, agents: map[string]*testworld.Proc{}}
	require.NoError(t, testworld.Layout(dir, testScript, "array-a", "array-b", "array-c"))
	e.cfgFile = filepath.Join(dir, "replctl.yaml")
	hb, err := time.ParseDuration(o.heartbeat)
	require.NoError(t, err)
	sts, err := time.ParseDuration(o.scheduleToStart)
	require.NoError(t, err)
	e.cfg = testworld.Config(dir, hb, sts)
	if o.a1SSH != nil {
		e.cfg.Hosts[0].Connect = sshConnectTo(o.a1SSH)
	}
	if o.edit != nil {
		o.edit(&e.cfg)
	}
	writeConfig(t, e.cfgFile, e.cfg)

	if o.frontend != "" {
		e.addr, e.namespace = o.frontend, "default"
		e.c, err = client.Dial(client.Options{HostPort: e.addr, Namespace: e.namespace})
		require.NoError(t, err)
		t.Cleanup(e.c.Close)
		return e
	}
	e.ts = temporaltest.NewServer(temporaltest.WithT(t))
	e.c = e.ts.GetDefaultClient()
	e.addr, e.namespace = e.ts.GetFrontendHostPort(), e.ts.GetDefaultNamespace()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err = e.c.OperatorService().AddSearchAttributes(ctx, &operatorservice.AddSearchAttributesRequest{
		Namespace: e.namespace, SearchAttributes: workflows.SearchAttributes(),
	})
	require.NoError(t, err)
	return e
}

// startAgent starts `replctl agent --host host` as its own process.
func (e *env) startAgent(host string) { e.startAgentConfig(host, e.cfgFile) }

// startAgentConfig starts host's agent with its own config file and extra flags.
func (e *env) startAgentConfig(host, cfgFile string, flags ...string) {
	e.t.Helper()
	p, err := testworld.StartProc("agent "+host, filepath.Join(e.dir, "agent-"+host+".log"), replctlBin, append([]string{
		"agent", "--host", host, "--config", cfgFile,
		"--address", e.addr, "--namespace", e.namespace, "--log-level", "warn",
	}, flags...)...)
	require.NoError(e.t, err)
	e.agents[host] = p
	e.t.Cleanup(func() {
		p.Kill()
		if e.t.Failed() {
			b, _ := os.ReadFile(p.LogPath)
			e.t.Logf("agent %s log:\n%s", host, testworld.Tail(string(b), 4000))
		}
	})
}

func (e *env) startAgents(hosts ...string) {
	for _, h := range hosts {
		e.startAgent(h)
	}
}

// kill kills an agent process with SIGKILL, as a crash would.
func (e *env) kill(host string) {
	e.t.Helper()
	p := e.agents[host]
	require.NotNil(e.t, p, "agent %s not started", host)
	require.True(e.t, p.Alive(), "agent %s is not running", host)
	p.Kill()
}

// freeze stops an agent process (SIGSTOP): it neither heartbeats nor writes.
func (e *env) freeze(host string) {
	e.t.Helper()
	require.NoError(e.t, e.agents[host].Signal(syscall.SIGSTOP))
}

func (e *env) start(job string) client.WorkflowRun {
	e.t.Helper()
	run, err := e.c.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{
		ID: workflows.WorkflowID(job), TaskQueue: workflows.DefaultTaskQueue,
		WorkflowExecutionTimeout: 3 * time.Minute, WorkflowTaskTimeout: workflows.WorkflowTaskTimeout,
	}, workflows.ReplicationWorkflowName, workflows.ReplicationInput{Job: job})
	require.NoError(e.t, err)
	return run
}

// wait waits for a run and returns its final status.
func (e *env) wait(run client.WorkflowRun) (workflows.Status, error) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var st workflows.Status
	// Through a cluster's faults (a database restart) the server may not answer a while.
	err := runwait.GetRun(ctx, e.c, run, &st, runwait.Options{})
	return st, err
}

// status queries a run's status (also of a run that failed).
func (e *env) status(run client.WorkflowRun) workflows.Status {
	e.t.Helper()
	v, err := e.c.QueryWorkflow(context.Background(), run.GetID(), run.GetRunID(), workflows.StatusQuery)
	require.NoError(e.t, err)
	var st workflows.Status
	require.NoError(e.t, v.Get(&st))
	return st
}

// waitStarted waits until the run's activity of the given type is running and returns the
// identity of the worker running it.
func (e *env) waitStarted(run client.WorkflowRun, activity string) string {
	e.t.Helper()
	return e.waitRunning(run, activity, "")
}

// waitPushing waits until a Push runs its push part (a push that carries the quiesce runs
// the script first: its heartbeats say quiesce until then), the application quiesced, and
// returns the identity of the worker that runs it.
func (e *env) waitPushing(run client.WorkflowRun) string {
	e.t.Helper()
	return e.waitRunning(run, activities.PushName, activities.StepPush)
}

// waitRunning waits until an activity of type activity is started (and, unless step is "",
// its last heartbeat names step) and returns the identity of the worker that runs it.
func (e *env) waitRunning(run client.WorkflowRun, activity string, step activities.Step) string {
	e.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	dc := converter.GetDefaultDataConverter()
	for time.Now().Before(deadline) {
		d, err := e.c.DescribeWorkflowExecution(context.Background(), run.GetID(), run.GetRunID())
		require.NoError(e.t, err)
		for _, pa := range d.GetPendingActivities() {
			if pa.GetActivityType().GetName() != activity || pa.GetState() != enums.PENDING_ACTIVITY_STATE_STARTED {
				continue
			}
			var p activities.Progress
			if step == "" || pa.GetHeartbeatDetails() != nil && dc.FromPayloads(pa.GetHeartbeatDetails(), &p) == nil && p.Step == step {
				return pa.GetLastWorkerIdentity()
			}
		}
		if d.GetWorkflowExecutionInfo().GetStatus() != enums.WORKFLOW_EXECUTION_STATUS_RUNNING {
			e.t.Fatalf("run ended (%s) before %s started", d.GetWorkflowExecutionInfo().GetStatus(), activity)
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.t.Fatalf("%s did not start within 60s", activity)
	return ""
}

func (e *env) sourceDir() string  { return filepath.Join(e.dir, "storage/array-a/orders") }
func (e *env) targetLink() string { return filepath.Join(e.dir, "storage/array-b/orders") }

// markers returns the script calls logged for host.
func (e *env) markers(host string) []string {
	b, err := os.ReadFile(filepath.Join(e.dir, "hosts", host, "markers.log"))
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(e.t, err)
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

// writeDataset writes files random files of about size bytes each in nested dirs, plus an
// empty file, an empty dir and a symlink.
func writeDataset(t *testing.T, dir string, files, size int, seed uint64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed+1))
	for i := 0; i < files; i++ {
		p := filepath.Join(dir, fmt.Sprintf("d%02d", i%7), fmt.Sprintf("s%d", i%3), fmt.Sprintf("f%05d.bin", i))
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		buf := make([]byte, size/2+rng.IntN(size))
		for k := 0; k+8 <= len(buf); k += 8 {
			v := rng.Uint64()
			for j := 0; j < 8; j++ {
				buf[k+j] = byte(v >> (8 * j))
			}
		}
		require.NoError(t, os.WriteFile(p, buf, 0o644))
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "empty"), nil, 0o600))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "empty-dir"), 0o750))
	require.NoError(t, os.Symlink("d00/s0/f00000.bin", filepath.Join(dir, "link")))
}

// treeDigest is the digest of the tree at root (its kinds, modes, sizes, contents and link
// targets): two trees are identical when their digests are equal.
func treeDigest(t *testing.T, root string) testworld.Tree {
	t.Helper()
	d, err := testworld.Digest(root)
	require.NoError(t, err)
	return d
}
