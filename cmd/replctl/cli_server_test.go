package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.uber.org/zap"

	"github.com/replctl/replctl/cmd/replctl/internal/devserver"
	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/internal/testworld"
	"github.com/replctl/replctl/workers"
	"github.com/replctl/replctl/workflows"
)

// cliEnv is an embedded Temporal server with the four agents of cliConfig in this process
// (newCLIEnv), or the world without them (newCLIWorld).
type cliEnv struct {
	t       *testing.T
	dir     string
	cfgFile string
	addr    string
	c       client.Client
	cfg     *config.Config
	agents  map[string]*workers.Agent
}

func newCLIEnv(t *testing.T) *cliEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a Temporal server")
	}
	began := time.Now()
	e := newCLIWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, err := devserver.Start(ctx, devserver.Options{Port: 0, UIPort: -1, SearchAttributes: workflows.SearchAttributes(), Logger: zap.NewNop(), LogLevel: "error"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = srv.Stop() })
	e.addr = srv.FrontendAddress()
	e.c, err = client.DialContext(ctx, client.Options{HostPort: e.addr, Namespace: "default", Logger: newSDKLogger(zap.NewNop())})
	require.NoError(t, err)
	t.Cleanup(e.c.Close)
	for _, h := range testworld.Hosts {
		e.startAgent(h)
	}
	t.Logf("server and agents up in %s", time.Since(began).Round(time.Millisecond))
	return e
}

func (e *cliEnv) startAgent(host string) {
	e.t.Helper()
	a, err := startAgent(e.c, e.cfg, host, nil, agentJournal{})
	require.NoError(e.t, err)
	e.agents[host] = a
	e.t.Cleanup(func() {
		if e.agents[host] == a {
			a.Stop()
		}
	})
}

func (e *cliEnv) stopAgent(host string) {
	e.agents[host].Stop()
	delete(e.agents, host)
}

// cli runs replctl with args against the test server as main does (execute) and returns
// stdout, stderr and the error (exitCode tells the process exit code it stands for).
func (e *cliEnv) cli(args ...string) (string, string, error) {
	e.t.Helper()
	var out, errOut bytes.Buffer
	f := NewFactory(&out, &errOut)
	root := NewCmdRoot(f)
	root.SetOut(&out)
	root.SetErr(&errOut)
	flags := []string{"--config", e.cfgFile, "--log-level", "error"}
	if e.addr != "" {
		flags = append(flags, "--address", e.addr)
	}
	root.SetArgs(append(flags, args...))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	err := execute(ctx, f, root)
	return out.String(), errOut.String(), err
}

// cliJSON runs replctl with args (which include -o json) and decodes its output into v.
func (e *cliEnv) cliJSON(v any, args ...string) {
	e.t.Helper()
	out, errOut, err := e.cli(args...)
	require.NoError(e.t, err, "replctl %s: %s", strings.Join(args, " "), errOut)
	require.NoError(e.t, json.Unmarshal([]byte(out), v), "replctl %s printed: %s", strings.Join(args, " "), out)
}

// eventually retries check (which returns nil when satisfied) until timeout.
func eventually(t *testing.T, timeout time.Duration, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(150 * time.Millisecond)
	}
}

func (e *cliEnv) markers(host string) string {
	b, _ := os.ReadFile(filepath.Join(e.dir, "hosts", host, "markers.log"))
	return string(b)
}

func (e *cliEnv) setSlow(d string) {
	p := filepath.Join(e.dir, "slow")
	if d == "" {
		require.NoError(e.t, os.Remove(p))
		return
	}
	require.NoError(e.t, os.WriteFile(p, []byte(d), 0o644))
}

// syncSchedules creates the config's schedules on the server (schedule sync).
func (e *cliEnv) syncSchedules() {
	e.t.Helper()
	_, errOut, err := e.cli("schedule", "sync")
	require.NoError(e.t, err, errOut)
}

// scheduledRun syncs the schedules and triggers the one of orders, waiting for the run
// it starts to complete; it returns that run's ID.
func (e *cliEnv) scheduledRun() string {
	e.t.Helper()
	e.syncSchedules()
	var res struct {
		workflows.ScheduledResult
		Error string `json:"error"`
	}
	e.cliJSON(&res, "schedule", "trigger", "orders", "--wait", "-o", "json")
	require.Empty(e.t, res.Error)
	require.True(e.t, res.Started)
	require.Equal(e.t, workflows.PhaseCompleted, res.Phase)
	return res.RunID
}

// completedRun starts a run of orders and waits for it to complete.
func (e *cliEnv) completedRun() {
	e.t.Helper()
	out, errOut, err := e.cli("start", "orders", "--wait")
	require.NoError(e.t, err, "%s%s", out, errOut)
}

// startSlow starts a run of orders whose quiesce script sleeps d seconds (setSlow).
func (e *cliEnv) startSlow(d string) {
	e.t.Helper()
	e.setSlow(d)
	e.t.Cleanup(func() { e.setSlow("") })
	_, errOut, err := e.cli("start", "orders")
	require.NoError(e.t, err, errOut)
}

// waitPhase waits until the latest run of job reports phase.
func (e *cliEnv) waitPhase(job, phase string) string {
	e.t.Helper()
	var runID string
	eventually(e.t, 30*time.Second, "job "+job+" reaching phase "+phase, func() error {
		q, err := e.c.QueryWorkflow(context.Background(), workflows.WorkflowID(job), "", workflows.StatusQuery)
		if err != nil {
			return err
		}
		var st workflows.Status
		if err := q.Get(&st); err != nil {
			return err
		}
		if st.Phase != phase {
			return fmt.Errorf("phase %s", st.Phase)
		}
		runID = st.RunID
		return nil
	})
	return runID
}

// TestCLIListShowsScheduledRun: list shows the scheduled run.
func TestCLIListShowsScheduledRun(t *testing.T) {
	e := newCLIEnv(t)
	firstRun := e.scheduledRun()
	eventually(t, 10*time.Second, "visibility showing the run", func() error {
		var rows []runRow
		out, _, err := e.cli("list", "--job", "orders", "--since", "1h", "-o", "json")
		if err != nil {
			return err
		}
		if err := json.Unmarshal([]byte(out), &rows); err != nil {
			return err
		}
		if len(rows) != 1 || rows[0].RunID != firstRun || rows[0].Status != "completed" || rows[0].Phase != workflows.PhaseCompleted {
			return fmt.Errorf("rows %+v", rows)
		}
		require.Equal(t, "schedule", rows[0].Trigger)
		require.Equal(t, "orders", rows[0].Job)
		return nil
	})
	var rows []runRow
	e.cliJSON(&rows, "list", "--job", "orders", "--status", "failed", "-o", "json")
	require.Empty(t, rows)
	out, _, err := e.cli("list", "--status", "completed")
	require.NoError(t, err)
	require.Regexp(t, `orders\s+`+firstRun+`\s+completed\s+completed\s+schedule`, out)
}

// TestCLIHistoryListsSteps: history lists the steps with agents and hosts.
func TestCLIHistoryListsSteps(t *testing.T) {
	e := newCLIEnv(t)
	firstRun := e.scheduledRun()
	var h historyView
	e.cliJSON(&h, "history", "orders", "-o", "json")
	require.Equal(t, firstRun, h.RunID)
	require.Equal(t, "completed", h.Status)
	var got []string
	for _, s := range h.Steps {
		require.True(t, s.OK, "%+v", s)
		got = append(got, fmt.Sprintf("%s %s %s/%s", s.Kind, s.Step, s.Agent, s.Host))
	}
	require.Len(t, got, 3)
	require.Regexp(t, `^step plan (a1|a2|b1|b2)/`, got[0], "plan runs on any agent")
	// a1 is the application's and the source's agent: one activity does the preflight (the
	// source checked on disk), the precopy (auto: no image yet, so the first copy is made
	// while the application runs), the quiesce, the push and the resume. The pull follows.
	require.Equal(t, "step precopy+quiesce+push+resume a1/a1", got[1])
	require.Equal(t, "step pull b1/b1", got[2])
	d := h.Steps[1].Detail
	require.Regexp(t, `^on disk: storage array-a at `+regexp.QuoteMeta(e.dir)+`/storage/array-a.*; source `+regexp.QuoteMeta(e.dir)+`/storage/array-a/orders; precopy live source: 12 files, [0-9.]+ KiB, 0 unchanged; freeze\.sh: exit 0; image [0-9a-f]+: .*; thaw\.sh: exit 0$`, d)
}

// TestCLIStatusShowsReplicaAndRPO: status shows the replica and the RPO.
func TestCLIStatusShowsReplicaAndRPO(t *testing.T) {
	e := newCLIEnv(t)
	firstRun := e.scheduledRun()
	var v statusView
	e.cliJSON(&v, "status", "orders", "-o", "json")
	require.Equal(t, workflows.PhaseCompleted, v.Phase)
	require.Equal(t, "completed", v.ExecutionStatus)
	require.NotNil(t, v.LastReplica)
	require.Equal(t, firstRun, v.LastReplica.RunID)
	require.NotNil(t, v.RPO)
	require.False(t, v.RPO.Late)
	// Daily at 03:30 Berlin time: 24 h, 23 h or 25 h around a DST change.
	require.InDelta(t, 24, v.RPO.Interval.Hours(), 1.01)

	var byRun statusView
	e.cliJSON(&byRun, "status", "--run", firstRun, "-o", "json")
	require.Equal(t, "orders", byRun.Job)
	require.Equal(t, firstRun, byRun.RunID)
	out, _, err := e.cli("status", "orders")
	require.NoError(t, err)
	require.Regexp(t, `rpo\s+ok: last replica \d+s old, schedule "30 3 \* \* \*" allows`, out)
}

// TestCLIMaintain: maintain runs on the target order and a cancel reads as cancelled.
func TestCLIMaintain(t *testing.T) {
	e := newCLIEnv(t)
	e.completedRun() // the repository has an image to maintain
	var out, errOut string
	eventually(t, 20*time.Second, "maintain starting (a scheduled one may still be going)", func() error {
		var err error
		out, errOut, err = e.cli("maintain", "orders", "--full", "--wait")
		if err != nil && strings.Contains(err.Error(), "already running") {
			return err
		}
		require.NoError(t, err, errOut)
		return nil
	})
	require.Regexp(t, `maintenance \(full=true\) done by (b1|b2|a2)`, out)
	require.Contains(t, errOut, "started maintenance of array-b:.replctl/repository")

	// No agent of the target order: the maintenance waits for one, and is cancelled.
	for _, h := range []string{"b1", "b2", "a2"} {
		e.stopAgent(h)
	}
	defer func() {
		for _, h := range []string{"b1", "b2", "a2"} {
			e.startAgent(h)
		}
	}()
	errc := make(chan error, 1)
	go func() { _, _, err := e.cli("maintain", "orders", "--wait"); errc <- err }()
	id := workflows.MaintenanceID("array-b", ".replctl/repository")
	eventually(t, 10*time.Second, "the maintenance running", func() error {
		d, err := e.c.DescribeWorkflowExecution(context.Background(), id, "")
		if err != nil {
			return err
		}
		if d.WorkflowExecutionInfo.Status != enums.WORKFLOW_EXECUTION_STATUS_RUNNING {
			return fmt.Errorf("status %s", d.WorkflowExecutionInfo.Status)
		}
		return nil
	})
	require.NoError(t, e.c.CancelWorkflow(context.Background(), id, ""))
	err := <-errc
	require.Error(t, err)
	require.Contains(t, err.Error(), "maintenance of array-b:.replctl/repository was canceled")
	require.Equal(t, ExitRunFailed, exitCode(err))
	q, err := e.c.QueryWorkflow(context.Background(), id, "", workflows.StatusQuery)
	require.NoError(t, err)
	var st workflows.Status
	require.NoError(t, q.Get(&st))
	require.Equal(t, workflows.PhaseCancelled, st.Phase)
}

// TestCLITestFailover: test-failover opens a writable copy and --cleanup removes it.
func TestCLITestFailover(t *testing.T) {
	e := newCLIEnv(t)
	e.completedRun() // a replica to open
	var res workflows.TestFailoverResult
	e.cliJSON(&res, "test-failover", "orders", "--name", "drill", "-o", "json")
	c := res.Copy
	require.Equal(t, "b1", c.Agent)
	require.EqualValues(t, 12, c.Files)
	require.DirExists(t, c.Path)
	probe := filepath.Join(c.Path, "written-by-the-test")
	require.NoError(t, os.WriteFile(probe, []byte("x"), 0o644), "the test copy is writable")
	var reps replicasView
	e.cliJSON(&reps, "replicas", "orders", "-o", "json")
	require.Equal(t, reps.Replicas[0].Name, c.Replica, "the current replica by default")
	require.NoFileExists(t, filepath.Join(reps.Replicas[0].Path, "written-by-the-test"), "the replica is untouched")
	d, err := e.c.DescribeWorkflowExecution(context.Background(), workflows.TestFailoverID("orders", "drill"), "")
	require.NoError(t, err)
	require.Contains(t, d.WorkflowExecutionInfo.Memo.Fields, "by", "who tested is recorded")

	out, errOut, err := e.cli("test-failover", "orders", "--name", "drill", "--cleanup")
	require.NoError(t, err, errOut)
	require.Contains(t, out, "test copy drill of job orders removed (by b1)")
	require.NoDirExists(t, c.Path)

	// A cancelled test failover says so (no target agent to do it).
	for _, h := range []string{"b1", "b2", "a2"} {
		e.stopAgent(h)
	}
	defer func() {
		for _, h := range []string{"b1", "b2", "a2"} {
			e.startAgent(h)
		}
	}()
	errc := make(chan error, 1)
	go func() { _, _, err := e.cli("test-failover", "orders", "--name", "drill2"); errc <- err }()
	id := workflows.TestFailoverID("orders", "drill2")
	eventually(t, 10*time.Second, "the test failover running", func() error {
		_, err := e.c.DescribeWorkflowExecution(context.Background(), id, "")
		return err
	})
	require.NoError(t, e.c.CancelWorkflow(context.Background(), id, ""))
	err = <-errc
	require.Error(t, err)
	require.Contains(t, err.Error(), "test failover of orders was canceled")
	require.Equal(t, ExitRunFailed, exitCode(err))
}

// TestCLIConfigValidate: config validate.
func TestCLIConfigValidate(t *testing.T) {
	e := newCLIWorld(t)
	out, _, err := e.cli("config", "validate")
	require.NoError(t, err)
	require.Contains(t, out, ": ok (2 storage systems, 4 hosts, 2 jobs)")
	bad := filepath.Join(e.dir, "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("jobs: []\nnope: 1\n"), 0o644))
	_, _, err = e.cli("config", "validate", bad)
	require.Error(t, err)
	require.Equal(t, ExitUsage, exitCode(err))
	require.Contains(t, err.Error(), bad+":2")
}

// TestCLITakeoverShowsInHistoryAndStatus: a takeover shows in history and status.
func TestCLITakeoverShowsInHistoryAndStatus(t *testing.T) {
	e := newCLIEnv(t)
	e.stopAgent("b1")
	out, errOut, err := e.cli("start", "orders", "--wait")
	require.NoError(t, err, "%s%s", out, errOut)
	e.startAgent("b1")
	var h historyView
	e.cliJSON(&h, "history", "orders", "-o", "json")
	var takeover *historyRow
	for i, s := range h.Steps {
		if s.Kind == "takeover" {
			takeover = &h.Steps[i]
			require.Equal(t, "step", h.Steps[i-1].Kind)
			require.Equal(t, "b1", h.Steps[i-1].Agent, "the lost attempt precedes the takeover")
			require.Equal(t, "schedule_to_start", h.Steps[i-1].TimeoutType)
			require.False(t, h.Steps[i-1].OK)
			require.Equal(t, "takeover", h.Steps[i+1].Step, "the taker first runs the failed host's takeover script")
			require.Equal(t, "b2", h.Steps[i+1].Agent)
			require.Equal(t, "b1", h.Steps[i+1].Host, "on the failed host")
		}
	}
	require.NotNil(t, takeover, "steps: %+v", h.Steps)
	require.Equal(t, "pull", takeover.Step)
	require.Equal(t, "b1", takeover.From)
	require.Equal(t, "b2", takeover.Agent)
	require.Contains(t, takeover.Result, "schedule-to-start")
	last := h.Steps[len(h.Steps)-1]
	require.Equal(t, "pull", last.Step)
	require.Equal(t, "b2", last.Agent)
	require.True(t, last.OK)
	out, _, err = e.cli("history", "orders")
	require.NoError(t, err)
	require.Regexp(t, `TAKEOVER\s+pull -> b2\s+b2\s+b1`, out)

	var v statusView
	e.cliJSON(&v, "status", "orders", "-o", "json")
	require.Len(t, v.Takeovers, 1)
	require.Equal(t, "b2", v.Agents.Target)
}

// TestCLIStatusWatch: status --watch follows a run to its end.
func TestCLIStatusWatch(t *testing.T) {
	e := newCLIEnv(t)
	e.startSlow("1.5")
	out, errOut, err := e.cli("status", "orders", "--watch", "--interval", "100ms")
	require.NoError(t, err, "%s%s", out, errOut)
	require.Contains(t, out, "watching job orders run")
	require.Regexp(t, `\d\d:\d\d:\d\d quiescing +agents application=a1`, out)
	require.Regexp(t, `(?m)^\d\d:\d\d:\d\d run ended: completed$`, out)
	require.Regexp(t, `phase\s+completed`, out)
	require.NotContains(t, out, "\x1b[", "no ANSI codes when stdout is not a terminal")
}

// TestCLIStartRefusedWhileRunning: a second start is refused while a run is going.
func TestCLIStartRefusedWhileRunning(t *testing.T) {
	e := newCLIEnv(t)
	testStartRefusedWhileRunning(t, e)
}

// TestCLICancelResumesApplication: cancel stops the run and still resumes the application.
func TestCLICancelResumesApplication(t *testing.T) {
	e := newCLIEnv(t)
	e.startSlow("5")
	runID := e.waitPhase("orders", workflows.PhaseQuiescing)
	var v statusView
	e.cliJSON(&v, "cancel", "orders", "--wait", "-o", "json")
	require.Equal(t, runID, v.RunID)
	require.Equal(t, workflows.PhaseCancelled, v.Phase)
	require.Equal(t, "cancelled", v.ExecutionStatus)
	require.Empty(t, v.QuiescedHost, "resume ran")
	require.Contains(t, e.markers("a1"), "resume host=a1 agent=a1 run="+runID)

	_, _, err := e.cli("cancel", "orders")
	require.Error(t, err)
	require.Contains(t, err.Error(), "has no running run")
	require.Equal(t, ExitFailure, exitCode(err))
}

// TestCLIReplicasTargetNotReachable: replicas says when the target is not reachable.
func TestCLIReplicasTargetNotReachable(t *testing.T) {
	e := newCLIWorld(t)
	far := filepath.Join(e.dir, "far.yaml")
	missing := filepath.Join(e.dir, "not-mounted")
	writeCLIConfig(t, far, e.dir, func(c *config.Config) {
		ordersSchedule(c)
		s, err := c.StorageByName("array-b")
		require.NoError(t, err)
		s.Path = missing // the storage's path only: the hosts still attach it where it was
	})
	_, _, err := e.cli("--config", far, "replicas", "orders")
	require.Error(t, err)
	require.Contains(t, err.Error(), "target storage array-b is not reachable from this machine at "+missing)
}

// TestCLICompletion: completion.
func TestCLICompletion(t *testing.T) {
	e := newCLIWorld(t)
	out, _, err := e.cli("completion", "bash")
	require.NoError(t, err)
	require.Contains(t, out, "bash completion")
	out, _, err = e.cli("completion", "zsh")
	require.NoError(t, err)
	require.Contains(t, out, "#compdef replctl")
	out, _, err = e.cli("completion", "fish")
	require.NoError(t, err)
	require.Contains(t, out, "complete -c replctl")
	out, _, err = e.cli("__complete", "status", "")
	require.NoError(t, err)
	require.Contains(t, out, "orders\nticker\n")
	out, _, err = e.cli("__complete", "start", "o")
	require.NoError(t, err)
	require.Contains(t, out, "orders\n")
	require.NotContains(t, out, "ticker")
}
