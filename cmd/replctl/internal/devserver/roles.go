package devserver

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"

	"github.com/replctl/replctl/internal/ids"
	commandpb "go.temporal.io/api/command/v1"
	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/server/common/authorization"
	"go.temporal.io/server/common/log"
	"go.temporal.io/server/common/log/tag"
)

// Role names in the Subject common name (CN) of a client certificate. With mutual TLS the
// frontend maps every client certificate to one of them; any other CN gets nothing.
const (
	RoleHostPrefix = "host:"    // host:<name>: the agent of host <name>
	RoleOperator   = "operator" // starts, signals, cancels and queries replctl workflows; manages schedules
	RoleReader     = "reader"   // reads only
)

// Access says what the role authorizer (on with mutual TLS) lets hosts and operators use.
type Access struct {
	// WorkflowTaskQueue is the shared queue: hosts poll workflow tasks (and shared
	// activities) there, operators start workflows there. Default "replctl".
	WorkflowTaskQueue string
	// HostQueuePrefix + <name> is host <name>'s own activity queue. Default ids.HostQueue("").
	HostQueuePrefix string
	// WorkflowTypes are the workflow types operators may start (directly or by schedule) and
	// hosts' workflow tasks may start as children or continue as.
	WorkflowTypes []string
	// ActivityTypes are the activity types a host's workflow task may schedule.
	ActivityTypes []string
	// HostSignals are the signals a host's agent may send to a run (a stopping agent tells
	// the run it thawed the application).
	HostSignals []string
}

func (a Access) withDefaults() Access {
	if a.WorkflowTaskQueue == "" {
		a.WorkflowTaskQueue = "replctl"
	}
	if a.HostQueuePrefix == "" {
		a.HostQueuePrefix = ids.HostQueue("")
	}
	return a
}

// principalKind is what a certificate's holder is.
type principalKind int

const (
	kindInternal principalKind = iota + 1 // the server's own clients (system workers, Start's admin connection)
	kindHost
	kindOperator
	kindReader
)

// principal is the claims' Extensions: the caller's role.
type principal struct {
	kind principalKind
	host string // kindHost: the host name
	name string // as shown in logs and refusals: "host:a1", "operator", "reader", "internal", "ui:reader"
}

// parseRole maps a certificate common name to a role; ok is false for anything else.
func parseRole(cn string) (principal, bool) {
	switch {
	case cn == RoleOperator:
		return principal{kind: kindOperator, name: cn}, true
	case cn == RoleReader:
		return principal{kind: kindReader, name: cn}, true
	case strings.HasPrefix(cn, RoleHostPrefix):
		h := strings.TrimPrefix(cn, RoleHostPrefix)
		if h == "" || strings.ContainsAny(h, " \t/:") {
			return principal{}, false
		}
		return principal{kind: kindHost, host: h, name: cn}, true
	}
	return principal{}, false
}

// roleClaimMapper turns the verified client certificate into claims. A certificate of the
// server's internal CA (its key lives only in this process's memory) is either the internal
// client (full access) or the Web UI's (reader or operator); a certificate of the user's CA
// gets the role its CN names. No certificate, or an unknown CN: no claims, so the
// authorizer refuses every call.
type roleClaimMapper struct {
	internalCA []byte // DER of the internal CA
}

// AuthInfoRequired is false so that a caller without any certificate or token is mapped
// too (to no claims) instead of skipping the mapper.
func (m *roleClaimMapper) AuthInfoRequired() bool { return false }

func (m *roleClaimMapper) GetClaims(info *authorization.AuthInfo) (*authorization.Claims, error) {
	if info == nil || info.TLSConnection == nil {
		return &authorization.Claims{}, nil
	}
	chains := info.TLSConnection.State.VerifiedChains
	if len(chains) == 0 || len(chains[0]) == 0 {
		return &authorization.Claims{}, nil
	}
	leaf, root := chains[0][0], chains[0][len(chains[0])-1]
	cn := leaf.Subject.CommonName
	if m.fromInternalCA(root) {
		switch cn {
		case internalClientCN:
			return &authorization.Claims{Subject: "internal", System: authorization.RoleAdmin,
				Extensions: principal{kind: kindInternal, name: "internal"}}, nil
		case RoleReader, RoleOperator:
			p, _ := parseRole(cn)
			p.name = "ui:" + cn
			return &authorization.Claims{Subject: p.name, Extensions: p}, nil
		}
		return &authorization.Claims{Subject: cn}, nil
	}
	p, ok := parseRole(cn)
	if !ok {
		return &authorization.Claims{Subject: cn}, nil
	}
	return &authorization.Claims{Subject: cn, Extensions: p}, nil
}

func (m *roleClaimMapper) fromInternalCA(root *x509.Certificate) bool {
	return len(m.internalCA) > 0 && bytes.Equal(root.Raw, m.internalCA)
}

// roleAuthorizer allows each role its calls (see allow) in the served namespace and
// refuses everything else with PermissionDenied and a reason naming the role and the call.
type roleAuthorizer struct {
	namespace string
	access    Access
	logger    log.Logger
}

const (
	wfPrefix = "/temporal.api.workflowservice.v1.WorkflowService/"
	opPrefix = "/temporal.api.operatorservice.v1.OperatorService/"
	// healthCheck is gRPC's health check: harmless, and load balancers call it.
	healthCheck = "/grpc.health.v1.Health/Check"
)

// readCalls are the WorkflowService calls a reader (and an operator) may make.
var readCalls = []string{
	"GetSystemInfo", "GetClusterInfo", "DescribeNamespace", "ListNamespaces", "GetSearchAttributes",
	"DescribeWorkflowExecution", "ListWorkflowExecutions", "ListOpenWorkflowExecutions",
	"ListClosedWorkflowExecutions", "ScanWorkflowExecutions", "CountWorkflowExecutions",
	"GetWorkflowExecutionHistory", "GetWorkflowExecutionHistoryReverse", "QueryWorkflow",
	"DescribeSchedule", "ListSchedules", "CountSchedules", "ListScheduleMatchingTimes",
	"DescribeTaskQueue",
}

// operatorCalls are the calls an operator may make besides readCalls; starts and schedule
// changes are further checked for workflow type and task queue.
var operatorCalls = []string{
	"StartWorkflowExecution", "SignalWithStartWorkflowExecution", "SignalWorkflowExecution",
	"RequestCancelWorkflowExecution", "CreateSchedule", "UpdateSchedule", "PatchSchedule", "DeleteSchedule",
}

// hostCalls are the calls a host's agent (its two workers) makes, found by running real
// agents against the authorizer (roles_test.go); polls are checked for the queue and a
// completed workflow task for the commands it carries.
var hostCalls = []string{
	"GetSystemInfo", "DescribeNamespace",
	"PollWorkflowTaskQueue", "RespondWorkflowTaskCompleted", "RespondWorkflowTaskFailed",
	"RespondQueryTaskCompleted", "GetWorkflowExecutionHistory",
	"PollActivityTaskQueue", "RecordActivityTaskHeartbeat", "RespondActivityTaskCompleted",
	"RespondActivityTaskFailed", "RespondActivityTaskCanceled",
	"ShutdownWorker", "RecordWorkerHeartbeat",
	// A stopping agent asks the runs it quiesced for whether they resumed the host, and
	// tells them when it resumed it itself (HostSignals only).
	"QueryWorkflow", "DescribeWorkflowExecution", "SignalWorkflowExecution",
}

// operatorServiceReads are the OperatorService calls readers and operators may make (the
// Web UI lists search attributes).
var operatorServiceReads = []string{"ListSearchAttributes"}

func (a *roleAuthorizer) Authorize(_ context.Context, claims *authorization.Claims, target *authorization.CallTarget) (authorization.Result, error) {
	p := principalOf(claims)
	reason := a.check(p, target)
	if reason == "" {
		a.logger.Debug("replctl role allowed a call", tag.NewStringTag("role", p.name), tag.NewStringTag("api", target.APIName))
		return authorization.Result{Decision: authorization.DecisionAllow,
			Principal: &commonpb.Principal{Type: "mtls", Name: p.name}}, nil
	}
	a.logger.Warn("replctl role refused a call", tag.NewStringTag("role", p.name),
		tag.NewStringTag("api", target.APIName), tag.NewStringTag("reason", reason))
	// Returned as an error, which the frontend passes on (frontend.exposeAuthorizerErrors):
	// a denied Result reaches the client only as "Request unauthorized.", without the reason.
	return authorization.Result{Decision: authorization.DecisionDeny, Reason: reason},
		serviceerror.NewPermissionDenied("replctl roles: "+reason, "")
}

func principalOf(c *authorization.Claims) principal {
	if c == nil {
		return principal{name: "no certificate"}
	}
	if p, ok := c.Extensions.(principal); ok {
		return p
	}
	if c.Subject != "" {
		return principal{name: fmt.Sprintf("CN %q (not a replctl role)", c.Subject)}
	}
	return principal{name: "no certificate"}
}

// check returns "" when p may make the call, else why not.
func (a *roleAuthorizer) check(p principal, t *authorization.CallTarget) string {
	if p.kind == kindInternal {
		return ""
	}
	if p.kind == 0 {
		return fmt.Sprintf("%s: no replctl role (client certificate CN must be host:<name>, operator or reader)", p.name)
	}
	if t.APIName == healthCheck {
		return ""
	}
	method, isWF := strings.CutPrefix(t.APIName, wfPrefix)
	opMethod, isOp := strings.CutPrefix(t.APIName, opPrefix)
	if t.Namespace != "" && t.Namespace != a.namespace {
		return fmt.Sprintf("%s may not use namespace %q (only %q)", p.name, t.Namespace, a.namespace)
	}
	denied := fmt.Sprintf("%s may not call %s", p.name, shortAPI(t.APIName))
	switch {
	case isOp:
		if p.kind != kindHost && slices.Contains(operatorServiceReads, opMethod) {
			return ""
		}
		return denied
	case !isWF:
		return denied
	}
	switch p.kind {
	case kindReader:
		if slices.Contains(readCalls, method) {
			return ""
		}
	case kindOperator:
		if slices.Contains(readCalls, method) {
			return ""
		}
		if slices.Contains(operatorCalls, method) {
			return a.checkOperatorRequest(p, t.Request)
		}
	case kindHost:
		if slices.Contains(hostCalls, method) {
			return a.checkHostRequest(p, t.Request)
		}
	}
	return denied
}

func shortAPI(full string) string {
	if i := strings.LastIndex(full, "/"); i >= 0 {
		return full[i+1:]
	}
	return full
}

// checkOperatorRequest checks the workflow type and task queue of what an operator starts,
// directly or through a schedule.
func (a *roleAuthorizer) checkOperatorRequest(p principal, req any) string {
	switch r := req.(type) {
	case *workflowservice.StartWorkflowExecutionRequest:
		return a.checkStart(p, r.GetWorkflowType().GetName(), r.GetTaskQueue().GetName())
	case *workflowservice.SignalWithStartWorkflowExecutionRequest:
		return a.checkStart(p, r.GetWorkflowType().GetName(), r.GetTaskQueue().GetName())
	case *workflowservice.CreateScheduleRequest:
		if sw := r.GetSchedule().GetAction().GetStartWorkflow(); sw != nil {
			return a.checkStart(p, sw.GetWorkflowType().GetName(), sw.GetTaskQueue().GetName())
		}
		return fmt.Sprintf("%s may only create schedules that start a replctl workflow", p.name)
	case *workflowservice.UpdateScheduleRequest:
		if sw := r.GetSchedule().GetAction().GetStartWorkflow(); sw != nil {
			return a.checkStart(p, sw.GetWorkflowType().GetName(), sw.GetTaskQueue().GetName())
		}
		return fmt.Sprintf("%s may only update schedules to start a replctl workflow", p.name)
	}
	return ""
}

func (a *roleAuthorizer) checkStart(p principal, wfType, queue string) string {
	if !slices.Contains(a.access.WorkflowTypes, wfType) {
		return fmt.Sprintf("%s may not start workflow type %q (replctl's types: %s)", p.name, wfType, strings.Join(a.access.WorkflowTypes, ", "))
	}
	if queue != a.access.WorkflowTaskQueue {
		return fmt.Sprintf("%s may start workflows only on task queue %q, not %q", p.name, a.access.WorkflowTaskQueue, queue)
	}
	return ""
}

// checkHostRequest checks what a host polls and what its completed workflow tasks command.
// Task tokens (respond, heartbeat) are not checked: see design.md, "Control plane roles".
func (a *roleAuthorizer) checkHostRequest(p principal, req any) string {
	own := a.access.HostQueuePrefix + p.host
	switch r := req.(type) {
	case *workflowservice.PollWorkflowTaskQueueRequest:
		// A worker's sticky queue only ever holds workflow tasks of the shared queue's
		// workflows, which every host may take anyway.
		if r.GetTaskQueue().GetKind() == enums.TASK_QUEUE_KIND_STICKY {
			return ""
		}
		// The SDK (v1.50) polls workflow tasks on the agent's activity-only worker too.
		// Nobody may put a workflow on a host's queue (operators and workflow tasks start
		// workflows only on the shared queue), so that poll finds nothing.
		if q := r.GetTaskQueue().GetName(); q != a.access.WorkflowTaskQueue && q != own {
			return fmt.Sprintf("%s may poll workflow tasks only on %q and %q, not %q", p.name, a.access.WorkflowTaskQueue, own, q)
		}
	case *workflowservice.PollActivityTaskQueueRequest:
		if q := r.GetTaskQueue().GetName(); q != own && q != a.access.WorkflowTaskQueue {
			return fmt.Sprintf("%s may poll activity tasks only on %q and %q, not %q", p.name, own, a.access.WorkflowTaskQueue, q)
		}
	case *workflowservice.SignalWorkflowExecutionRequest:
		if !slices.Contains(a.access.HostSignals, r.GetSignalName()) {
			return fmt.Sprintf("%s may send only the signals %v, not %q", p.name, a.access.HostSignals, r.GetSignalName())
		}
	case *workflowservice.RespondWorkflowTaskCompletedRequest:
		for _, c := range r.GetCommands() {
			if why := a.checkCommand(p, c); why != "" {
				return why
			}
		}
	}
	return ""
}

// checkCommand limits a host's workflow task to replctl's own activity and workflow types
// on replctl's queues in this namespace. What an activity's input says is for the agent
// that runs it to check.
func (a *roleAuthorizer) checkCommand(p principal, c *commandpb.Command) string {
	switch c.GetCommandType() {
	case enums.COMMAND_TYPE_SCHEDULE_ACTIVITY_TASK:
		at := c.GetScheduleActivityTaskCommandAttributes()
		name, q := at.GetActivityType().GetName(), at.GetTaskQueue().GetName()
		if !slices.Contains(a.access.ActivityTypes, name) {
			return fmt.Sprintf("%s: workflow task schedules activity type %q, not one of replctl's", p.name, name)
		}
		if q != "" && q != a.access.WorkflowTaskQueue && !strings.HasPrefix(q, a.access.HostQueuePrefix) {
			return fmt.Sprintf("%s: workflow task schedules an activity on task queue %q, not a replctl queue", p.name, q)
		}
	case enums.COMMAND_TYPE_START_CHILD_WORKFLOW_EXECUTION:
		at := c.GetStartChildWorkflowExecutionCommandAttributes()
		//lint:ignore SA1019 deprecated, but a server with cross-namespace commands on still honours it
		if ns := at.GetNamespace(); ns != "" && ns != a.namespace {
			return fmt.Sprintf("%s: workflow task starts a child in namespace %q", p.name, ns)
		}
		return a.checkChild(p, at.GetWorkflowType().GetName(), at.GetTaskQueue().GetName())
	case enums.COMMAND_TYPE_CONTINUE_AS_NEW_WORKFLOW_EXECUTION:
		at := c.GetContinueAsNewWorkflowExecutionCommandAttributes()
		if t := at.GetWorkflowType().GetName(); t != "" {
			return a.checkChild(p, t, at.GetTaskQueue().GetName())
		}
	case enums.COMMAND_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION:
		//lint:ignore SA1019 deprecated, but a server with cross-namespace commands on still honours it
		if ns := c.GetSignalExternalWorkflowExecutionCommandAttributes().GetNamespace(); ns != "" && ns != a.namespace {
			return fmt.Sprintf("%s: workflow task signals a workflow in namespace %q", p.name, ns)
		}
	case enums.COMMAND_TYPE_REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION:
		//lint:ignore SA1019 deprecated, but a server with cross-namespace commands on still honours it
		if ns := c.GetRequestCancelExternalWorkflowExecutionCommandAttributes().GetNamespace(); ns != "" && ns != a.namespace {
			return fmt.Sprintf("%s: workflow task cancels a workflow in namespace %q", p.name, ns)
		}
	case enums.COMMAND_TYPE_SCHEDULE_NEXUS_OPERATION:
		return fmt.Sprintf("%s: workflow task schedules a Nexus operation (replctl uses none)", p.name)
	}
	return ""
}

// checkChild checks a workflow a host's workflow task starts (child, continue-as-new).
func (a *roleAuthorizer) checkChild(p principal, wfType, queue string) string {
	if !slices.Contains(a.access.WorkflowTypes, wfType) {
		return fmt.Sprintf("%s: workflow task starts workflow type %q, not one of replctl's", p.name, wfType)
	}
	if queue != "" && queue != a.access.WorkflowTaskQueue {
		return fmt.Sprintf("%s: workflow task starts a workflow on task queue %q, not %q", p.name, queue, a.access.WorkflowTaskQueue)
	}
	return ""
}
