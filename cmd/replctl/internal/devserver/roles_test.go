package devserver

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/api/serviceerror"
	taskqueuepb "go.temporal.io/api/taskqueue/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
)

// waitWorkflow runs until it is signalled ("go") or cancelled: something to signal, query
// and cancel.
func waitWorkflow(ctx workflow.Context) (string, error) {
	if err := workflow.SetQueryHandler(ctx, "state", func() (string, error) { return "waiting", nil }); err != nil {
		return "", err
	}
	var v string
	sel := workflow.NewSelector(ctx)
	sel.AddReceive(workflow.GetSignalChannel(ctx, "go"), func(c workflow.ReceiveChannel, _ bool) { c.Receive(ctx, &v) })
	sel.AddReceive(ctx.Done(), func(workflow.ReceiveChannel, bool) {})
	sel.Select(ctx)
	return v, ctx.Err()
}

// roleAccess is the test's stand-in for replctl's types and queues.
var roleAccess = Access{
	WorkflowTaskQueue: taskQueue,
	HostQueuePrefix:   "devserver-host-",
	WorkflowTypes:     []string{"greetWorkflow", "waitWorkflow"},
	ActivityTypes:     []string{"greet"},
	HostSignals:       []string{"host-thawed"},
}

// roleRow is one call of the role table and whether the role may make it.
type roleRow struct {
	role, call string
	want       string // "allowed", "refused", or "passes roles" (the authorizer lets it through; the server then rejects the made-up task token)
	do         func(ctx context.Context, c client.Client) error
}

// A client certificate of each role against the embedded server with mutual TLS: each role
// does what it may and gets PermissionDenied for the rest. The table is printed for the
// closing note.
func TestRolesTable(t *testing.T) {
	p := newPKI(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, err := Start(ctx, Options{UIPort: -1, Access: roleAccess,
		TLS: &TLSOptions{CertFile: p.serverCert, KeyFile: p.serverKey, CAFile: p.ca, RequireClientCert: true}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Stop() })
	require.True(t, s.RolesEnforced())

	lazy := func(cn string) client.Client {
		cert, key := p.client(t, cn)
		c, err := lazyTLSClient(t, p, s.FrontendAddress(), cert, key)
		require.NoError(t, err)
		t.Cleanup(c.Close)
		return c
	}
	clients := map[string]client.Client{
		"host:t1": lazy("host:t1"), "operator": lazy("operator"), "reader": lazy("reader"), "CN=bob": lazy("bob"),
	}

	// host:t1 runs the worker of the shared queue; the operator starts workflows for it.
	w := worker.New(clients["host:t1"], taskQueue, worker.Options{})
	w.RegisterWorkflow(greetWorkflow)
	w.RegisterWorkflow(waitWorkflow)
	w.RegisterActivity(greet)
	require.NoError(t, w.Start())
	run, err := clients["operator"].ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "roles-greet", TaskQueue: taskQueue}, greetWorkflow, "roles")
	require.NoError(t, err)
	var out string
	require.NoError(t, run.Get(ctx, &out), "a host worker runs what an operator started")
	require.Equal(t, "hello roles", out)
	waiting, err := clients["operator"].ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "roles-wait", TaskQueue: taskQueue}, waitWorkflow)
	require.NoError(t, err)

	start := func(id, wfType, queue string) func(context.Context, client.Client) error {
		return func(ctx context.Context, c client.Client) error {
			_, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: queue}, wfType)
			return err
		}
	}
	signal := func(ctx context.Context, c client.Client) error {
		return c.SignalWorkflow(ctx, "roles-wait", "", "nothing", "x") // an unhandled signal name: the run goes on
	}
	hostSignal := func(ctx context.Context, c client.Client) error {
		return c.SignalWorkflow(ctx, "roles-wait", "", "host-thawed", "x") // unhandled by roles-wait: the run goes on
	}
	query := func(ctx context.Context, c client.Client) error {
		_, err := c.QueryWorkflow(ctx, "roles-wait", "", "state")
		return err
	}
	describe := func(ctx context.Context, c client.Client) error {
		_, err := c.DescribeWorkflowExecution(ctx, "roles-greet", "")
		return err
	}
	list := func(ctx context.Context, c client.Client) error {
		_, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Namespace: DefaultNamespace})
		return err
	}
	count := func(ctx context.Context, c client.Client) error {
		_, err := c.CountWorkflow(ctx, &workflowservice.CountWorkflowExecutionsRequest{Namespace: DefaultNamespace})
		return err
	}
	history := func(ctx context.Context, c client.Client) error {
		it := c.GetWorkflowHistory(ctx, "roles-greet", "", false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		_, err := it.Next()
		return err
	}
	terminate := func(ctx context.Context, c client.Client) error {
		return c.TerminateWorkflow(ctx, "roles-wait", "", "test")
	}
	cancelWF := func(id string) func(context.Context, client.Client) error {
		return func(ctx context.Context, c client.Client) error { return c.CancelWorkflow(ctx, id, "") }
	}
	systemInfo := func(ctx context.Context, c client.Client) error {
		_, err := c.WorkflowService().GetSystemInfo(ctx, &workflowservice.GetSystemInfoRequest{})
		return err
	}
	describeNS := func(ctx context.Context, c client.Client) error {
		_, err := c.WorkflowService().DescribeNamespace(ctx, &workflowservice.DescribeNamespaceRequest{Namespace: DefaultNamespace})
		return err
	}
	registerNS := func(ctx context.Context, c client.Client) error {
		_, err := c.WorkflowService().RegisterNamespace(ctx, &workflowservice.RegisterNamespaceRequest{Namespace: "mine"})
		return err
	}
	addSA := func(ctx context.Context, c client.Client) error {
		_, err := c.OperatorService().AddSearchAttributes(ctx, &operatorservice.AddSearchAttributesRequest{
			Namespace: DefaultNamespace, SearchAttributes: map[string]enums.IndexedValueType{"Mine": enums.INDEXED_VALUE_TYPE_KEYWORD}})
		return err
	}
	pollActivity := func(queue string) func(context.Context, client.Client) error {
		return func(ctx context.Context, c client.Client) error {
			_, err := c.WorkflowService().PollActivityTaskQueue(ctx, &workflowservice.PollActivityTaskQueueRequest{
				Namespace: DefaultNamespace, TaskQueue: &taskqueuepb.TaskQueue{Name: queue, Kind: enums.TASK_QUEUE_KIND_NORMAL}, Identity: "roles-test"})
			return err
		}
	}
	pollWorkflow := func(queue string) func(context.Context, client.Client) error {
		return func(ctx context.Context, c client.Client) error {
			_, err := c.WorkflowService().PollWorkflowTaskQueue(ctx, &workflowservice.PollWorkflowTaskQueueRequest{
				Namespace: DefaultNamespace, TaskQueue: &taskqueuepb.TaskQueue{Name: queue, Kind: enums.TASK_QUEUE_KIND_NORMAL}, Identity: "roles-test"})
			return err
		}
	}
	respondForged := func(ctx context.Context, c client.Client) error {
		_, err := c.WorkflowService().RespondActivityTaskCompleted(ctx, &workflowservice.RespondActivityTaskCompletedRequest{
			Namespace: DefaultNamespace, TaskToken: []byte("made-up token"), Identity: "roles-test"})
		return err
	}
	schedule := func(id, wfType string) func(context.Context, client.Client) error {
		return func(ctx context.Context, c client.Client) error {
			_, err := c.ScheduleClient().Create(ctx, client.ScheduleOptions{
				ID: id, Paused: true, Spec: client.ScheduleSpec{CronExpressions: []string{"0 0 1 1 *"}},
				Action: &client.ScheduleWorkflowAction{Workflow: wfType, TaskQueue: taskQueue},
			})
			return err
		}
	}
	describeSchedule := func(ctx context.Context, c client.Client) error {
		_, err := c.ScheduleClient().GetHandle(ctx, "roles-schedule").Describe(ctx)
		return err
	}
	listSchedules := func(ctx context.Context, c client.Client) error {
		_, err := c.WorkflowService().ListSchedules(ctx, &workflowservice.ListSchedulesRequest{Namespace: DefaultNamespace})
		return err
	}
	deleteSchedule := func(ctx context.Context, c client.Client) error {
		return c.ScheduleClient().GetHandle(ctx, "roles-schedule").Delete(ctx)
	}
	startOtherNS := func(ctx context.Context, c client.Client) error {
		_, err := c.WorkflowService().StartWorkflowExecution(ctx, &workflowservice.StartWorkflowExecutionRequest{
			Namespace: "temporal-system", WorkflowId: "x", WorkflowType: &commonpb.WorkflowType{Name: "greetWorkflow"},
			TaskQueue: &taskqueuepb.TaskQueue{Name: taskQueue}, RequestId: "roles-other-ns"})
		return err
	}

	rows := []roleRow{
		{"host:t1", "GetSystemInfo", "allowed", systemInfo},
		{"host:t1", "DescribeNamespace", "allowed", describeNS},
		{"host:t1", "GetWorkflowExecutionHistory", "allowed", history},
		{"host:t1", "PollActivityTaskQueue own queue devserver-host-t1", "allowed", pollActivity("devserver-host-t1")},
		{"host:t1", "PollActivityTaskQueue another host's devserver-host-t2", "refused", pollActivity("devserver-host-t2")},
		{"host:t1", "PollWorkflowTaskQueue own host queue (nothing can be there)", "allowed", pollWorkflow("devserver-host-t1")},
		{"host:t1", "PollWorkflowTaskQueue another host's queue", "refused", pollWorkflow("devserver-host-t2")},
		{"host:t1", "PollWorkflowTaskQueue other queue", "refused", pollWorkflow("elsewhere")},
		{"host:t1", "RespondActivityTaskCompleted (made-up token)", "passes roles", respondForged},
		{"host:t1", "StartWorkflowExecution", "refused", start("roles-host-start", "greetWorkflow", taskQueue)},
		{"host:t1", "SignalWorkflowExecution of another signal", "refused", signal},
		{"host:t1", "SignalWorkflowExecution of its own signal", "allowed", hostSignal},
		{"host:t1", "RequestCancelWorkflowExecution", "refused", cancelWF("roles-wait")},
		{"host:t1", "TerminateWorkflowExecution", "refused", terminate},
		{"host:t1", "QueryWorkflow", "allowed", query},
		{"host:t1", "DescribeWorkflowExecution", "allowed", describe},
		{"host:t1", "ListWorkflowExecutions", "refused", list},
		{"host:t1", "CreateSchedule", "refused", schedule("roles-host-schedule", "greetWorkflow")},
		{"operator", "StartWorkflowExecution greetWorkflow on the shared queue", "allowed", start("roles-op-start", "greetWorkflow", taskQueue)},
		{"operator", "StartWorkflowExecution of a foreign type", "refused", start("roles-op-evil", "evilWorkflow", taskQueue)},
		{"operator", "StartWorkflowExecution on a host's queue", "refused", start("roles-op-hostq", "greetWorkflow", "devserver-host-t1")},
		{"operator", "StartWorkflowExecution in namespace temporal-system", "refused", startOtherNS},
		{"operator", "SignalWorkflowExecution", "allowed", signal},
		{"operator", "QueryWorkflow", "allowed", query},
		{"operator", "DescribeWorkflowExecution", "allowed", describe},
		{"operator", "ListWorkflowExecutions", "allowed", list},
		{"operator", "GetWorkflowExecutionHistory", "allowed", history},
		{"operator", "CreateSchedule of greetWorkflow", "allowed", schedule("roles-schedule", "greetWorkflow")},
		{"operator", "CreateSchedule of a foreign type", "refused", schedule("roles-evil-schedule", "evilWorkflow")},
		{"operator", "TerminateWorkflowExecution", "refused", terminate},
		{"operator", "PollActivityTaskQueue", "refused", pollActivity("devserver-host-t1")},
		{"operator", "PollWorkflowTaskQueue", "refused", pollWorkflow(taskQueue)},
		{"operator", "RegisterNamespace", "refused", registerNS},
		{"operator", "AddSearchAttributes", "refused", addSA},
		{"reader", "GetSystemInfo", "allowed", systemInfo},
		{"reader", "DescribeWorkflowExecution", "allowed", describe},
		{"reader", "ListWorkflowExecutions", "allowed", list},
		{"reader", "CountWorkflowExecutions", "allowed", count},
		{"reader", "GetWorkflowExecutionHistory", "allowed", history},
		{"reader", "QueryWorkflow", "allowed", query},
		{"reader", "DescribeSchedule", "allowed", describeSchedule},
		{"reader", "ListSchedules", "allowed", listSchedules},
		{"reader", "StartWorkflowExecution", "refused", start("roles-reader-start", "greetWorkflow", taskQueue)},
		{"reader", "SignalWorkflowExecution", "refused", signal},
		{"reader", "RequestCancelWorkflowExecution", "refused", cancelWF("roles-wait")},
		{"reader", "CreateSchedule", "refused", schedule("roles-reader-schedule", "greetWorkflow")},
		{"reader", "DeleteSchedule", "refused", deleteSchedule},
		{"reader", "PollWorkflowTaskQueue", "refused", pollWorkflow(taskQueue)},
		{"CN=bob", "GetSystemInfo", "refused", systemInfo},
		{"CN=bob", "DescribeWorkflowExecution", "refused", describe},
		{"CN=bob", "StartWorkflowExecution", "refused", start("roles-bob-start", "greetWorkflow", taskQueue)},
		{"operator", "DeleteSchedule", "allowed", deleteSchedule},
		{"operator", "RequestCancelWorkflowExecution", "allowed", cancelWF("roles-wait")},
	}

	var table strings.Builder
	fmt.Fprintf(&table, "%-9s | %-55s | %-12s | %s\n", "role", "call", "expected", "result")
	var failures []string
	for _, r := range rows {
		// Polls that are allowed wait up to this long for a task that never comes.
		cctx, ccancel := context.WithTimeout(ctx, 3*time.Second)
		err := r.do(cctx, clients[r.role])
		ccancel()
		var denied *serviceerror.PermissionDenied
		got := "allowed"
		switch {
		case errors.As(err, &denied):
			got = "refused"
		case err != nil && isPoll(r.call) && (errors.Is(err, context.DeadlineExceeded) || isDeadline(err)):
			// an allowed long poll that found nothing
		case err != nil && r.want == "passes roles":
			got = "passes roles"
		case err != nil:
			got = "error"
		}
		result := got
		if err != nil {
			result += ": " + oneLine(err)
		}
		fmt.Fprintf(&table, "%-9s | %-55s | %-12s | %s\n", r.role, r.call, r.want, result)
		if got != r.want {
			failures = append(failures, fmt.Sprintf("%s %s: want %s, got %v", r.role, r.call, r.want, err))
		}
	}
	t.Logf("role table (mutual TLS, role in the client certificate's CN):\n%s", table.String())
	require.Empty(t, failures)

	// Nothing the refused rows tried exists.
	for _, id := range []string{"roles-host-start", "roles-op-evil", "roles-op-hostq", "roles-reader-start", "roles-bob-start"} {
		_, err := clients["operator"].DescribeWorkflowExecution(ctx, id, "")
		var nf *serviceerror.NotFound
		require.ErrorAs(t, err, &nf, "workflow %s must not exist", id)
	}
	var st string
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	err = waiting.Get(wctx, &st)
	var canceled *temporal.CanceledError
	require.ErrorAs(t, err, &canceled, "the operator's cancel ended the waiting run")
	w.Stop()
}

func isPoll(call string) bool { return strings.HasPrefix(call, "Poll") }

func isDeadline(err error) bool {
	var d *serviceerror.DeadlineExceeded
	return errors.As(err, &d) || strings.Contains(err.Error(), "DeadlineExceeded") || strings.Contains(err.Error(), "deadline exceeded")
}

func oneLine(err error) string {
	s := strings.ReplaceAll(err.Error(), "\n", " ")
	if len(s) > 140 {
		s = s[:140] + "…"
	}
	return s
}

// A certificate of the test CA whose CN claims to be the server's internal client is only
// an unknown role: full access needs the internal CA, whose key never leaves the server.
func TestInternalNameFromUserCAIsNoRole(t *testing.T) {
	p := newPKI(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Start(ctx, Options{UIPort: -1, Access: roleAccess,
		TLS: &TLSOptions{CertFile: p.serverCert, KeyFile: p.serverKey, CAFile: p.ca, RequireClientCert: true}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Stop() })
	cert, key := p.client(t, internalClientCN)
	_, err = tlsClient(t, p, s.FrontendAddress(), cert, key)
	var denied *serviceerror.PermissionDenied
	require.ErrorAs(t, err, &denied)
	t.Logf("CN %q from the user's CA: %v", internalClientCN, err)
}
