// Package test holds replctl's integration tests: a real Temporal server (temporaltest, in
// process), agents as real `replctl agent` processes, real files, real kills.
package test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
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
	"go.temporal.io/server/temporaltest"

	"github.com/replctl/replctl/activities/hostexec/sshtest"
	"github.com/replctl/replctl/config"
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
	agents map[string]*exec.Cmd
	// addr and namespace are the Temporal frontend's (temporaltest's, or
	// envOptions.frontend).
	addr, namespace string
}

// envConfig is the test world's config as the YAML text the tests used before worldConfig;
// TestWorldConfigEqualsEnvConfig keeps worldConfig equal to it. %[1]s is the test dir,
// %[2]s and %[3]s the heartbeat and schedule_to_start, %[4]s a1's connect (a1ConnectText).
const envConfig = `
temporal: {address: 127.0.0.1:7233, namespace: default}
storage:
  - {name: array-a, path: %[1]s/storage/array-a}
  - {name: array-b, path: %[1]s/storage/array-b}
hosts:
  - {name: a1, attach: {array-a: %[1]s/storage/array-a, array-b: %[1]s/storage/array-b}, scripts: %[1]s/scripts, state: %[1]s/hosts/a1%[4]s}
  - {name: a2, attach: {array-a: %[1]s/storage/array-a, array-b: %[1]s/storage/array-b}, scripts: %[1]s/scripts, state: %[1]s/hosts/a2}
  - {name: b1, attach: {array-b: %[1]s/storage/array-b, array-a: %[1]s/storage/array-a}, scripts: %[1]s/scripts, state: %[1]s/hosts/b1}
  - {name: b2, attach: {array-b: %[1]s/storage/array-b, array-a: %[1]s/storage/array-a}, scripts: %[1]s/scripts, state: %[1]s/hosts/b2}
jobs:
  - name: orders
    source: {storage: array-a, dataset: orders}
    target: {storage: array-b, dataset: orders}
    application: {host: a1, quiesce: freeze.sh, resume: thaw.sh, takeover: takeover.sh, timeout: 30s}
    order:
      application: [a1, a2]
      source: [a1, a2, b2]
      target: [b1, b2, a2]
    timeouts: {heartbeat: %[2]s, schedule_to_start: %[3]s, start_to_close: 5m}
    retention: {replicas: 3, images: 10}
    repository: {storage: array-b}
    precopy: always   # every run copies ahead of quiesce, so every test exercises the precopy
`

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

// a1ConnectText is the connect of host a1 in envConfig text (its %[4]s): over s, or none.
func a1ConnectText(s *sshtest.Server) string {
	if s == nil {
		return ""
	}
	return fmt.Sprintf(", connect: {ssh: {address: %q, user: %s, key: %s, known_hosts: %s}}", s.Addr, s.User, s.KeyFile, s.KnownHostsFile)
}

func newEnv(t *testing.T) *env { return newEnvWith(t, envOptions{}) }

func newEnvWith(t *testing.T, o envOptions) *env {
	t.Helper()
	if o.heartbeat == "" {
		o.heartbeat, o.scheduleToStart = "1s", "2s"
	}
	dir := t.TempDir()
	e := &env{t: t, dir: dir, agents: map[string]*exec.Cmd{}}
	for _, d := range []string{"storage/array-a", "storage/array-b", "storage/array-c", "scripts"} {
		require.NoError(t, os.MkdirAll(filepath.Join(dir, d), 0o755))
	}
	for _, s := range []string{"freeze.sh", "thaw.sh", "takeover.sh"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, "scripts", s), []byte(testScript), 0o755))
	}
	e.cfgFile = filepath.Join(dir, "replctl.yaml")
	hb, err := time.ParseDuration(o.heartbeat)
	require.NoError(t, err)
	sts, err := time.ParseDuration(o.scheduleToStart)
	require.NoError(t, err)
	e.cfg = worldConfig(dir, hb, sts)
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
	logf, err := os.OpenFile(filepath.Join(e.dir, "agent-"+host+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	require.NoError(e.t, err)
	cmd := exec.Command(replctlBin, "agent", "--host", host, "--config", cfgFile,
		"--address", e.addr, "--namespace", e.namespace, "--log-level", "warn")
	cmd.Args = append(cmd.Args, flags...)
	cmd.Stdout, cmd.Stderr = logf, logf
	require.NoError(e.t, cmd.Start())
	e.agents[host] = cmd
	e.t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
		if e.t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			e.t.Logf("agent %s log:\n%s", host, tail(string(b), 4000))
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
	cmd := e.agents[host]
	require.NotNil(e.t, cmd, "agent %s not started", host)
	require.NoError(e.t, cmd.Process.Kill())
	_ = cmd.Wait()
}

// freeze stops an agent process (SIGSTOP): it neither heartbeats nor writes.
func (e *env) freeze(host string) {
	e.t.Helper()
	require.NoError(e.t, e.agents[host].Process.Signal(syscall.SIGSTOP))
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
	err := run.Get(ctx, &st)
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
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		d, err := e.c.DescribeWorkflowExecution(context.Background(), run.GetID(), run.GetRunID())
		require.NoError(e.t, err)
		for _, pa := range d.GetPendingActivities() {
			if pa.GetActivityType().GetName() == activity && pa.GetState() == enums.PENDING_ACTIVITY_STATE_STARTED {
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

// treeDigest maps each path under root to its type, mode, size, content hash and link
// target: two trees are identical when their digests are equal.
func treeDigest(t *testing.T, root string) map[string]string {
	t.Helper()
	real, err := filepath.EvalSymlinks(root)
	require.NoError(t, err)
	out := map[string]string{}
	err = filepath.WalkDir(real, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(real, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out[rel] = "link " + target
		case d.IsDir():
			out[rel] = fmt.Sprintf("dir %o", info.Mode().Perm())
		default:
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
			out[rel] = fmt.Sprintf("file %o %d %s", info.Mode().Perm(), info.Size(), hex.EncodeToString(h.Sum(nil)))
		}
		return nil
	})
	require.NoError(t, err)
	return out
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
