// Package workers assembles an agent: the Temporal worker on its host's own task queue (the
// host's activities) plus the workflow worker on the shared queue, which every agent runs so
// that no single host is needed for the orchestration.
package workers

import (
	"errors"
	"fmt"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/interceptor"
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
	d := &drain{host: o.Host}
	hostW := worker.New(o.Client, workflows.HostQueue(o.Host), worker.Options{
		Identity:     o.Identity,
		Interceptors: []interceptor.WorkerInterceptor{&drainInterceptor{d: d}},
	})
	hostW.RegisterActivityWithOptions(acts.RunScript, activity.RegisterOptions{Name: activities.RunScriptName})
	hostW.RegisterActivityWithOptions(acts.Push, activity.RegisterOptions{Name: activities.PushName})
	hostW.RegisterActivityWithOptions(acts.Precopy, activity.RegisterOptions{Name: activities.PrecopyName})
	hostW.RegisterActivityWithOptions(acts.Pull, activity.RegisterOptions{Name: activities.PullName})
	hostW.RegisterActivityWithOptions(acts.Maintain, activity.RegisterOptions{Name: activities.MaintainName})
	hostW.RegisterActivityWithOptions(acts.TestCopy, activity.RegisterOptions{Name: activities.TestCopyName})
	hostW.RegisterActivityWithOptions(acts.VerifyReplicas, activity.RegisterOptions{Name: activities.VerifyName})
	hostW.RegisterActivityWithOptions(acts.ListImages, activity.RegisterOptions{Name: activities.ImagesName})
	hostW.RegisterActivityWithOptions(acts.RestoreImage, activity.RegisterOptions{Name: activities.RestoreName})
	hostW.RegisterActivityWithOptions(acts.PublishGroup, activity.RegisterOptions{Name: activities.PublishGroupName})
	hostW.RegisterActivityWithOptions(acts.Preflight, activity.RegisterOptions{Name: activities.PreflightName})
	hostW.RegisterActivityWithOptions(acts.CheckHost, activity.RegisterOptions{Name: activities.CheckHostName})

	sharedW := worker.New(o.Client, o.SharedQueue, worker.Options{Identity: o.Identity})
	Register(sharedW)
	sharedW.RegisterActivityWithOptions(acts.Plan, activity.RegisterOptions{Name: activities.PlanName})
	return &Agent{Host: o.Host, Activities: acts, host: hostW, shared: sharedW, client: o.Client, drain: d}, nil
}

// Register registers the workflows on w under their stable names (also used by replayers).
func Register(w worker.WorkflowRegistry) {
	w.RegisterWorkflowWithOptions(workflows.Replication, workflow.RegisterOptions{Name: workflows.ReplicationWorkflowName})
	w.RegisterWorkflowWithOptions(workflows.Scheduled, workflow.RegisterOptions{Name: workflows.ScheduledWorkflowName})
	w.RegisterWorkflowWithOptions(workflows.Maintenance, workflow.RegisterOptions{Name: workflows.MaintenanceWorkflowName})
	w.RegisterWorkflowWithOptions(workflows.ScheduledMaintenance, workflow.RegisterOptions{Name: workflows.ScheduledMaintenanceWorkflowName})
	w.RegisterWorkflowWithOptions(workflows.TestFailover, workflow.RegisterOptions{Name: workflows.TestFailoverWorkflowName})
	w.RegisterWorkflowWithOptions(workflows.Verify, workflow.RegisterOptions{Name: workflows.VerifyWorkflowName})
	w.RegisterWorkflowWithOptions(workflows.Images, workflow.RegisterOptions{Name: workflows.ImagesWorkflowName})
	w.RegisterWorkflowWithOptions(workflows.Restore, workflow.RegisterOptions{Name: workflows.RestoreWorkflowName})
	w.RegisterWorkflowWithOptions(workflows.Check, workflow.RegisterOptions{Name: workflows.CheckWorkflowName})
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
