package activities

import (
	"context"
	"errors"
	"fmt"

	"go.temporal.io/sdk/temporal"
)

// The resume in the push that quiesced (issue 16, `resume-in-push`). The image is complete
// when the push ends, so the agent that ran the quiesce script and the push runs the resume
// script (the thaw) right after, in the same activity: the application is frozen for the
// push and not also for a server round trip, and a run has one activity and one workflow
// task fewer. What stays:
//   - The thaw runs only after a push that succeeded. A failed push leaves the application
//     quiesced for the push's retry or takeover, as before.
//   - Once started, the thaw runs to its end (its own timeout) even if the activity is
//     cancelled or its lease lost: a resume always runs once quiesce ran.
//   - A thaw that fails does not fail the push: the result says why (ThawFailed), and the
//     workflow resumes the application in a step of its own.
//   - The heartbeat says step resume, with the push's result, and the server acknowledged
//     it, before the script starts: an agent lost from there on had made the image, and
//     only the resume is taken over. Without that acknowledgement the thaw is left to the
//     workflow's resume step: a lost agent's last heartbeat would still say push, and the
//     push would be made again from a thawed application.

// checkThaw refuses a Thaw that is not the resume of the push's own quiesce: same job, run,
// agent and host. The agent's own config decides the script (authorizeScript).
func checkThaw(in PushInput) error {
	t, q := in.Thaw, in.Quiesce
	if t.Step != StepResume || t.Job != in.Job || t.RunID != in.RunID || t.Agent != in.Agent || t.Host.Name != q.Host.Name {
		return badInput(fmt.Errorf(
			"push of job %s (run %s, agent %s) quiescing host %s carries a %q script step of job %q (run %q, agent %q) for host %q as its thaw: refused; it must be the resume of the same job, run, agent and host",
			in.Job, in.RunID, in.Agent, q.Host.Name, t.Step, t.Job, t.RunID, t.Agent, t.Host.Name))
	}
	return nil
}

// thaw runs t, a resume script already checked against this agent's config, once the push
// made out: the heartbeat says resume and carries out first. Its outcome goes into out.
func (a *Agent) thaw(ctx context.Context, hb *lease, t ScriptInput, out *PushResult) {
	pushed := *out
	if err := hb.updateNow(Progress{Step: StepResume, Phase: "script " + t.Script, Agent: a.Host, Pushed: &pushed}); err != nil {
		// Unless the server holds it, a lost agent's last heartbeat would say push, and
		// the push would be made again from a thawed application.
		out.ThawFailed = "not run: the server did not acknowledge the heartbeat that says resume: " + err.Error()
		return
	}
	// Not cancelled with the activity: a thaw cut short could leave the application half
	// frozen, and the workflow would have to run it again anyway.
	res, err := a.runScript(context.WithoutCancel(ctx), t, func() {})
	if err != nil {
		out.ThawFailed = err.Error()
		var appErr *temporal.ApplicationError
		if errors.As(err, &appErr) {
			out.ThawFailed = appErr.Message()
		}
		return
	}
	out.Thawed = &res
}
