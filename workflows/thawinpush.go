package workflows

import (
	"go.temporal.io/sdk/workflow"

	"github.com/replctl/replctl/activities"
)

// The resume in the push that quiesced (issue 16, `resume-in-push`). Where the quiesce
// travels in the push (quiescepush.go), the resume script does too: the agent thaws the
// application as soon as its push made the image (activities/thawinpush.go), so the freeze
// holds no server round trip and an empty run has one activity and one workflow task fewer.
// What stays:
//   - The resume runs whenever quiesce ran. The push's thaw counts only when the agent says
//     it succeeded (PushResult.Thawed); a thaw that failed, or a push that failed, leaves
//     the resume to its own step, as before.
//   - An agent lost while it thawed had made the image (its last heartbeat carries the
//     push's result): the push is not made again, and the resume is taken over by the next
//     application agent, after the lost host's takeover script.

// lostThaw is the agent lost in the thaw part of a fused push, and why.
type lostThaw struct{ agent, reason string }

// thawInPush tells whether the fused push also carries the resume script. Runs recorded
// before it resumed in a step of its own.
func (w *replication) thawInPush(ctx workflow.Context) bool {
	if w.failback != nil || w.plan.Application.Resume == "" {
		return false
	}
	return changed(ctx, "resume-in-push")
}

// lostThawing returns, for a fused push whose agent was lost once its heartbeat said
// resume, the push's result that heartbeat carried and why the agent was lost; nil else.
func lostThawing(err error) (*activities.PushResult, string) {
	reason, lost, p := lostAgent(err)
	if !lost || p == nil || p.Step != activities.StepResume || p.Pushed == nil {
		return nil, ""
	}
	return p.Pushed, reason
}

// thawedInPush records what a fused push's thaw did.
func (w *replication) thawedInPush(res activities.PushResult) {
	switch {
	case res.Thawed != nil:
		w.thawed = true
		w.status.Scripts = append(w.status.Scripts, *res.Thawed)
	case res.ThawFailed != "":
		w.note("the resume in the push failed, so it runs as a step of its own: " + res.ThawFailed)
	}
}

// resumeTakenOver moves the application role past an agent lost while it thawed in its
// push, as a lost resume attempt would, unless every later agent was lost too (skipLost).
func (w *replication) resumeTakenOver(ctx workflow.Context) {
	l, app := w.thawLost, w.roles.application
	if l == nil || app.current() != l.agent || !w.skipLost(ctx, app) {
		return
	}
	w.takeover(ctx, app, activities.StepResume, l.agent, l.reason)
}
