package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	commonpb "go.temporal.io/api/common/v1"
	workflowpb "go.temporal.io/api/workflow/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/replctl/replctl/workflows"
)

func TestExitCodeAndKind(t *testing.T) {
	for _, c := range []struct {
		err  error
		code int
		kind string
	}{
		{errors.New("dial failed"), ExitFailure, KindFailure},
		{usageError("--limit 0: want at least 1"), ExitUsage, KindUsage},
		{runEndError("run of job orders", errors.New("pull failed")), ExitRunFailed, KindRunFailed},
		{runEndError("run of job orders", temporal.NewCanceledError()), ExitRunFailed, KindRunFailed},
		{&ExitError{Code: ExitLeftQuiesce, Err: errors.New("HOST a1 WAS LEFT QUIESCED")}, ExitLeftQuiesce, KindLeftQuiesced},
		{&ExitError{Code: ExitRunning, Err: errors.New("a run is going")}, ExitRunning, KindRunning},
		{notFoundError("job %s has no runs yet", "orders"), ExitFailure, KindNotFound},
		{fmt.Errorf("wrapped: %w", usageError("bad")), ExitUsage, KindUsage},
	} {
		assert.Equal(t, c.code, exitCode(c.err), "%v", c.err)
		e := errorObject(c.err)
		assert.Equal(t, c.code, e.Code, "%v", c.err)
		assert.Equal(t, c.kind, e.Kind, "%v", c.err)
		assert.Equal(t, c.err.Error(), e.Message)
	}
	assert.Equal(t, ExitOK, exitCode(nil))
}

// jsonRoot is a root command with start and status whose runs are fakes.
func jsonRoot(f *Factory, start func(*StartOptions) error, status func(*StatusOptions) error) *cobra.Command {
	root := &cobra.Command{Use: "replctl", SilenceUsage: true, SilenceErrors: true}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError("%v", err) })
	root.AddCommand(NewCmdStart(f, start), NewCmdStatus(f, status))
	return root
}

// executeJSON runs args through execute and returns stdout, stderr and the error.
func executeJSON(t *testing.T, start func(*StartOptions) error, status func(*StatusOptions) error, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	f := NewFactory(&out, &errOut)
	root := jsonRoot(f, start, status)
	root.SetOut(&errOut)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := execute(context.Background(), f, root)
	return out.String(), errOut.String(), err
}

// decodeOne decodes out as exactly one JSON object.
func decodeOne(t *testing.T, out string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader([]byte(out)))
	var v map[string]any
	require.NoError(t, dec.Decode(&v), "stdout %q", out)
	require.False(t, dec.More(), "one JSON object, got %q", out)
	return v
}

func TestExecuteRendersFailuresAsJSON(t *testing.T) {
	started := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	refuse := func(*StartOptions) error {
		return &ExitError{Code: ExitRunning, Run: &runRef{Job: "orders", WorkflowID: "replctl-orders", RunID: "r1", Phase: "pushing", StartedAt: started},
			Err: errors.New("a run of job orders is already going")}
	}
	noStatus := func(*StatusOptions) error { t.Fatal("status must not run"); return nil }

	out, _, err := executeJSON(t, refuse, noStatus, "start", "orders", "-o", "json")
	assert.Equal(t, ExitRunning, exitCode(err))
	assert.Equal(t, map[string]any{"error": map[string]any{
		"code": 5.0, "kind": "running", "message": "a run of job orders is already going",
		"job": "orders", "workflow_id": "replctl-orders", "run_id": "r1", "phase": "pushing", "started_at": "2026-01-02T03:04:05Z",
	}}, decodeOne(t, out))

	out, _, err = executeJSON(t, refuse, noStatus, "start", "orders")
	assert.Equal(t, ExitRunning, exitCode(err))
	assert.Empty(t, out, "table output: the error goes to stderr only (main)")

	// Refused before the command runs: arguments and flags.
	for _, args := range [][]string{{"start", "a", "b", "-o", "json"}, {"status", "-o", "json", "--bogus"}} {
		out, _, err = executeJSON(t, refuse, noStatus, args...)
		assert.Equal(t, ExitUsage, exitCode(err), "%v", args)
		e := decodeOne(t, out)["error"].(map[string]any)
		assert.Equal(t, "usage", e["kind"], "%v", args)
		assert.Equal(t, err.Error(), e["message"], "%v", args)
	}
	// -o yaml is itself the usage error: no JSON.
	out, _, err = executeJSON(t, refuse, noStatus, "start", "orders", "-o", "yaml")
	assert.Equal(t, ExitUsage, exitCode(err))
	assert.Empty(t, out)

	// A plain error is a failure; not_found refines it.
	out, _, err = executeJSON(t, refuse, func(*StatusOptions) error { return notFoundError("job nosuchjob has no runs yet") }, "status", "nosuchjob", "-o", "json")
	assert.Equal(t, ExitFailure, exitCode(err))
	assert.Equal(t, map[string]any{"error": map[string]any{"code": 1.0, "kind": "not_found", "message": "job nosuchjob has no runs yet"}}, decodeOne(t, out))
}

// A command's result is printed alone on success and beside the error on failure (a run
// that ended failed): one JSON object on stdout either way.
func TestExecuteHoldsTheResult(t *testing.T) {
	var f *Factory
	noStatus := func(*StatusOptions) error { return nil }
	grab := func(o *StartOptions) error {
		return f.PrintJSON(runHandle{Job: o.Job, WorkflowID: "replctl-" + o.Job, RunID: "r2"})
	}
	var out, errOut bytes.Buffer
	f = NewFactory(&out, &errOut)
	root := jsonRoot(f, grab, noStatus)
	root.SetArgs([]string{"start", "orders", "-o", "json"})
	require.NoError(t, execute(context.Background(), f, root))
	assert.Equal(t, map[string]any{"job": "orders", "workflow_id": "replctl-orders", "run_id": "r2"}, decodeOne(t, out.String()))

	out.Reset()
	f = NewFactory(&out, &errOut)
	root = jsonRoot(f, func(o *StartOptions) error {
		require.NoError(t, f.PrintJSON(map[string]string{"phase": workflows.PhaseFailed}))
		return runEndError("run of job orders", errors.New("pull failed"))
	}, noStatus)
	root.SetArgs([]string{"start", "orders", "--wait", "-o", "json"})
	err := execute(context.Background(), f, root)
	assert.Equal(t, ExitRunFailed, exitCode(err))
	v := decodeOne(t, out.String())
	assert.Equal(t, map[string]any{"phase": "failed"}, v["result"])
	assert.Equal(t, "run_failed", v["error"].(map[string]any)["kind"])
	assert.Equal(t, "run of job orders failed: pull failed", v["error"].(map[string]any)["message"])

	// Outside execute (a command run on its own) the result is printed at once.
	out.Reset()
	f = NewFactory(&out, &errOut)
	require.NoError(t, f.PrintJSON([]int{1}))
	assert.JSONEq(t, "[1]", out.String())
}

// runningClient fakes what alreadyRunning asks the server: the run's description and its
// status query (phase "" fails the query; block makes it hang until the deadline).
type runningClient struct {
	client.Client
	desc  *workflowservice.DescribeWorkflowExecutionResponse
	phase string
	block bool
}

func (c runningClient) DescribeWorkflowExecution(context.Context, string, string) (*workflowservice.DescribeWorkflowExecutionResponse, error) {
	if c.desc == nil {
		return nil, errors.New("describe: unavailable")
	}
	return c.desc, nil
}

func (c runningClient) QueryWorkflow(ctx context.Context, _, _, _ string, _ ...any) (converter.EncodedValue, error) {
	if c.block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if c.phase == "" {
		return nil, errors.New("query: no worker")
	}
	return statusValue{workflows.Status{Phase: c.phase}}, nil
}

type statusValue struct{ st workflows.Status }

func (v statusValue) HasValue() bool { return true }
func (v statusValue) Get(p any) error {
	*p.(*workflows.Status) = v.st
	return nil
}

func TestAlreadyRunningNamesTheRun(t *testing.T) {
	started := time.Now().Add(-90 * time.Second)
	sa, err := converter.GetDefaultDataConverter().ToPayload("quiescing")
	require.NoError(t, err)
	desc := &workflowservice.DescribeWorkflowExecutionResponse{WorkflowExecutionInfo: &workflowpb.WorkflowExecutionInfo{
		Execution: &commonpb.WorkflowExecution{WorkflowId: "replctl-orders", RunId: "r1"},
		StartTime: timestamppb.New(started),
		SearchAttributes: &commonpb.SearchAttributes{IndexedFields: map[string]*commonpb.Payload{
			workflows.AttrPhase.GetName(): sa,
		}},
	}}
	check := func(c runningClient, phase string, wantIn ...string) {
		t.Helper()
		err := alreadyRunning(context.Background(), c, "orders", "r1", time.Now())
		var ee *ExitError
		require.ErrorAs(t, err, &ee)
		assert.Equal(t, ExitRunning, ee.Code)
		assert.Equal(t, phase, ee.Run.Phase)
		assert.Equal(t, "r1", ee.Run.RunID)
		for _, w := range append(wantIn, "workflow replctl-orders run r1", "replctl status orders --watch") {
			assert.Contains(t, err.Error(), w)
		}
	}
	check(runningClient{desc: desc, phase: workflows.PhasePushing}, workflows.PhasePushing, "phase pushing", "(1m30s ago)")
	check(runningClient{desc: desc}, "quiescing", "phase quiescing", "started "+started.UTC().Format(time.DateTime))
	check(runningClient{}, "", "phase unknown, start time unknown")

	began := time.Now()
	check(runningClient{desc: desc, block: true}, "quiescing", "phase quiescing")
	assert.Less(t, time.Since(began), runningLookup+2*time.Second, "a hanging status query is given up after runningLookup")
}
