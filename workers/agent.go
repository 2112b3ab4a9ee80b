// Package workers assembles an agent: the Temporal worker on its host's own task queue (the
// host's activities) plus the workflow worker on the shared queue, which every agent runs so
// that no single host is needed for the orchestration.
package workers

import (
	"errors"
	"fmt"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/workflows"
)

// Options configure one agent.
type Options struct {
	// Client is connected to the Temporal namespace of the config.
	Client client.Client
	// Host is the host this agent runs on; it polls workflows.HostQueue(Host).
	Host string
	// ConfigFile is what the Plan activity reads at the start of each run.
	ConfigFile string
	// StateDir is the agent's private state dir ("" = default under the user cache dir).
	StateDir string
	// SharedQueue is the workflow task queue (default workflows.DefaultTaskQueue).
	SharedQueue string
	// Identity shown in the Temporal UI (default workflows.AgentIdentity(Host)).
	Identity string
	// Logger receives the data plane's lines (activities.Agent.Logger); nil drops them.
	Logger log.Logger
	// ChangeJournal: what follows a change journal (activities.Agent.ChangeJournal).
	ChangeJournal activities.JournalUse
	// JournalRescan: activities.Agent.JournalRescan.
	JournalRescan time.Duration
}

// Agent is one host's workers.
type Agent struct {
	Host       string
	Activities *activities.Agent
	host       worker.Worker
	shared     worker.Worker
	client     client.Client
	// drain hands the data steps over when Shutdown begins (shutdown.go).
	drain *drain
}

// NewAgent builds an agent's two workers; Start runs them.
func NewAgent(o Options) (*Agent, error) {
	if o.Client == nil || o.Host == "" || o.ConfigFile == "" {
		return nil, errors.New("workers.NewAgent: Client, Host and ConfigFile are required")
	}
	if o.SharedQueue == "" {
		o.SharedQueue = workflows.DefaultTaskQueue
	}
	if o.Identity == "" {
		o.Identity = workflows.AgentIdentity(o.Host)
	}
	// No sticky workflow cache: with it, the next workflow task of a run whose agent was
	// just killed waits on the dead agent's sticky queue for the sticky schedule-to-start
	// timeout (5 s) before any other agent gets it, which adds 5 s to every takeover.
	// Replication histories are short, so replaying them on every task costs little.
	worker.SetStickyWorkflowCacheSize(0)
	acts, err := activities.NewAgent(o.Host, o.ConfigFile, o.StateDir)
	if err != nil {
		return nil, err
	}
	acts.Logger = o.Logger
	acts.ChangeJournal = o.ChangeJournal
	acts.JournalRescan = o.JournalRescan
	d := &drain{host: o.Host}
	hostW := worker.New(o.Client, workflows.HostQueue(o.Host), worker.Options{
		Identity:     o.Identity,
		Interceptors: []interceptor.WorkerInterceptor{&drainInterceptor{d: d}},
		// No workflow runs on a host queue, but the SDK starts workflow-task pollers on
		// every worker that does not disable them: two long polls per agent for nothing,
		// which the fleet simulator saw hit the frontend's per-namespace poll limit.
		DisableWorkflowWorker: true,
	})
	for _, a := range hostActivities(acts) {
		hostW.RegisterActivityWithOptions(a.fn, activity.RegisterOptions{Name: a.name})
	}

	sharedW := worker.New(o.Client, o.SharedQueue, worker.Options{Identity: o.Identity})
	Register(sharedW)
	for _, a := range sharedActivities(acts) {
		sharedW.RegisterActivityWithOptions(a.fn, activity.RegisterOptions{Name: a.name})
	}
	return &Agent{Host: o.Host, Activities: acts, host: hostW, shared: sharedW, client: o.Client, drain: d}, nil
}

// named is a workflow or activity function under its stable registered name.
type named struct {
	name string
	fn   any
}

// hostActivities are the activities of a host's own queue. One table for the registration and
// for the server's roles (ActivityNames), so a new activity cannot be left out of either.
func hostActivities(a *activities.Agent) []named {
	return []named{
		{activities.RunScriptName, a.RunScript}, {activities.PushName, a.Push}, {activities.PrecopyName, a.Precopy},
		{activities.PullName, a.Pull}, {activities.MaintainName, a.Maintain}, {activities.TestCopyName, a.TestCopy},
		{activities.VerifyName, a.VerifyReplicas}, {activities.ImagesName, a.ListImages}, {activities.RestoreName, a.RestoreImage},
		{activities.PublishGroupName, a.PublishGroup}, {activities.PreflightName, a.Preflight}, {activities.CheckHostName, a.CheckHost},
		{activities.WarmName, a.WarmReplica},
	}
}

// sharedActivities are the activities of the shared workflow queue (any agent may run them).
func sharedActivities(a *activities.Agent) []named {
	return []named{{activities.PlanName, a.Plan}}
}

// workflowTypes are replctl's workflows: every one may be started by an operator (directly,
// by schedule or as a child), which is what the server's roles allow (WorkflowNames).
func workflowTypes() []named {
	return []named{
		{workflows.ReplicationWorkflowName, workflows.Replication}, {workflows.ScheduledWorkflowName, workflows.Scheduled},
		{workflows.MaintenanceWorkflowName, workflows.Maintenance}, {workflows.ScheduledMaintenanceWorkflowName, workflows.ScheduledMaintenance},
		{workflows.TestFailoverWorkflowName, workflows.TestFailover}, {workflows.VerifyWorkflowName, workflows.Verify},
		{workflows.ImagesWorkflowName, workflows.Images}, {workflows.RestoreWorkflowName, workflows.Restore},
		{workflows.CheckWorkflowName, workflows.Check},
	}
}

func names(ns []named) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.name
	}
	return out
}

// ActivityNames are the registered names of every activity an agent runs.
func ActivityNames() []string {
	return append(names(sharedActivities(nil)), names(hostActivities(nil))...)
}

// WorkflowNames are the registered names of every workflow.
func WorkflowNames() []string { return names(workflowTypes()) }

// Register registers the workflows on w under their stable names (also used by replayers).
func Register(w worker.WorkflowRegistry) {
	for _, wf := range workflowTypes() {
		w.RegisterWorkflowWithOptions(wf.fn, workflow.RegisterOptions{Name: wf.name})
	}
}

// Start starts both workers.
func (a *Agent) Start() error {
	if err := a.host.Start(); err != nil {
		return fmt.Errorf("agent %s: host worker: %w", a.Host, err)
	}
	if err := a.shared.Start(); err != nil {
		a.host.Stop()
		return fmt.Errorf("agent %s: workflow worker: %w", a.Host, err)
	}
	return nil
}

// Stop stops both workers and closes the agent's repositories. It does not wait for what the
// agent quiesced to be thawed: Shutdown does.
func (a *Agent) Stop() {
	a.shared.Stop()
	a.host.Stop()
	_ = a.Activities.Close()
}
