package workflows

import (
	"errors"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/replctl/replctl/activities"
)

// Quiesce and push in one activity (issue 16). When one agent is the current agent of both
// the application and the source (an agent per application host that is also its source:
// the usual layout), the quiesce step's first attempt is a Push carrying the quiesce script:
// one activity and one server round trip fewer, both inside the freeze window. The takeover
// rules stay in one place (takeover.go): the fused activity is the quiesce step's attempt on
// that agent, and the outcome of its push part is handed to the push step's onRole as the
// result of its first attempt on the same agent.

// fusedPush is the push part's outcome of a quiesce step's fused attempt.
type fusedPush struct {
	agent  string
	source string // the dataset's path on the agent
	res    activities.PushResult
	err    error
}

// fusedInput is the push the quiesce step's first attempt also makes (its Agent is the
// application's and the source's), nil when the run quiesces and pushes in two activities:
// a failback, a consistency group (its datasets are pushed one activity each), different
// agents, a takeover already made, an agent that does not see the source. Runs recorded
// before this change always used two.
func (w *replication) fusedInput(ctx workflow.Context) *activities.PushInput {
	agent := w.fusedAgent()
	if agent == "" {
		return nil
	}
	in, err := w.fusedPushInput(agent)
	if err != nil {
		return nil
	}
	if !changed(ctx, "quiesce-in-push") {
		return nil
	}
	return &in
}

// fusedAgent is the agent that may quiesce and push in one activity, "" when none may.
func (w *replication) fusedAgent() string {
	app, src := w.roles.application, w.roles.source
	agent := app.current()
	if w.failback != nil || agent == "" || agent != src.current() || len(app.pending)+len(src.pending) > 0 ||
		w.wasTakenOver(agent) || len(w.plan.Source.List()) != 1 {
		return ""
	}
	return agent
}

// fusedPushInput is the push a fused quiesce attempt on agent makes, without its script.
func (w *replication) fusedPushInput(agent string) (activities.PushInput, error) {
	ds := w.plan.Source.List()[0]
	repo, err := w.plan.Repo(agent)
	if err != nil {
		return activities.PushInput{}, err
	}
	src, err := w.plan.DatasetDir(agent, w.plan.Source.Storage, ds)
	if err != nil {
		return activities.PushInput{}, err
	}
	return activities.PushInput{
		Job: w.plan.Job, RunID: w.status.RunID, Agent: agent, SourceDir: src, Dataset: ds,
		Repo: repo, OnUnsupported: w.plan.OnUnsupported,
	}, nil
}

// quiesceAndPush is the quiesce step's fused attempt: the push in (fusedInput's) carrying
// the quiesce script. It returns the quiesce part's outcome; the push part's waits in
// w.fused for the push step.
func (w *replication) quiesceAndPush(ctx workflow.Context, in activities.PushInput, host activities.HostPlan) error {
	app := w.plan.Application
	agent := in.Agent
	script := w.scriptInput(activities.StepQuiesce, agent, host, app.Quiesce, "")
	in.Quiesce = &script
	if w.thawInPush(ctx) {
		thaw := w.scriptInput(activities.StepResume, agent, host, app.Resume, "")
		in.Thaw = &thaw
	}
	opts := workflow.GetActivityOptions(ctx)
	opts.StartToCloseTimeout = app.Timeout + w.plan.Timeouts.StartToClose
	if in.Thaw != nil {
		opts.StartToCloseTimeout += app.Timeout
	}
	opts.Summary = "quiesce and push on " + agent
	var res activities.PushResult
	err := workflow.ExecuteActivity(workflow.WithActivityOptions(ctx, opts), activities.PushName, in).Get(ctx, &res)
	if pushed, reason := lostThawing(err); pushed != nil {
		// Lost while it thawed: the image is made; only the resume is taken over.
		res, err = *pushed, nil
		w.thawLost = &lostThaw{agent: agent, reason: reason}
	}
	if err == nil && res.Precopy != nil {
		w.precopied(*res.Precopy)
	}
	if err != nil && quiescePartFailed(err) {
		if sr, ok := activities.QuiescePart(err); ok {
			w.status.Scripts = append(w.status.Scripts, sr)
		}
		return err
	}
	// The quiesce script succeeded.
	sr := activities.ScriptResult{Step: activities.StepQuiesce, Host: host.Name, Agent: agent, Script: app.Quiesce}
	if res.Quiesce != nil {
		sr = *res.Quiesce
	}
	w.status.Scripts = append(w.status.Scripts, sr)
	w.fused = &fusedPush{agent: agent, source: in.SourceDir, res: res, err: err}
	if err == nil {
		w.thawedInPush(res)
	}
	return nil
}

// quiescePartFailed tells whether a fused attempt's error is its quiesce part's: the agent
// marks those (activities.QuiescePart); a lost agent's last heartbeat says push once the
// script succeeded. A cancelled attempt counts as the quiesce's (the run then resumes).
func quiescePartFailed(err error) bool {
	if temporal.IsCanceledError(err) {
		// The run was cancelled: whatever ran, the resume runs.
		return true
	}
	if timedOut, last := lostIn(err); timedOut {
		return last != activities.StepPush
	}
	if _, ok := activities.NotQuiescedPart(err); ok {
		return true
	}
	_, ok := activities.QuiescePart(err)
	return ok
}

// lostIn tells whether err is a timeout of a fused attempt and, when the agent had received
// it (not a schedule-to-start timeout), the step its last heartbeat named ("" otherwise).
func lostIn(err error) (timedOut bool, last activities.Step) {
	var te *temporal.TimeoutError
	if !errors.As(err, &te) {
		return false, ""
	}
	if te.TimeoutType() == enumspb.TIMEOUT_TYPE_SCHEDULE_TO_START {
		return true, ""
	}
	if _, _, p := lostAgent(err); p != nil {
		return true, p.Step
	}
	return true, ""
}

// takeFused returns, once, the fused push part's outcome if agent made it.
func (w *replication) takeFused(agent string) *fusedPush {
	f := w.fused
	w.fused = nil
	if f == nil || f.agent != agent {
		return nil
	}
	return f
}
