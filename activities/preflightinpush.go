package activities

import (
	"context"
	"fmt"
)

// The preflight in a push that quiesces nothing (issue 16, `preflight-in-push`). A job
// without a quiesce script has no fused push to carry its preflight, so each attempt of
// its push step carries the preflight of its own agent (PushInput.Before, no precopy:
// such a job has none): the run has one step, one activity and one server round trip
// fewer. The preflight's checks on disk and its look for unsupported entries come first,
// so nothing is written to the repository before they pass, as when it was a step of its
// own; its errors are the push step's (a refusal or bad input ends the run, a lost agent
// is taken over, and the next agent's attempt carries its own preflight).

// preflightAndPush is a Push carrying Before without a quiesce script.
func (a *Agent) preflightAndPush(ctx context.Context, in PushInput) (PushResult, error) {
	if in.Before.Precopy || in.Before.PrecopyFirst || in.FollowLink {
		return PushResult{}, badInput(fmt.Errorf(
			"push of job %s (run %s, agent %s) carries a preflight with a precopy or in a failback: refused; only a push that quiesces carries a precopy, and a failback has no preflight",
			in.Job, in.RunID, in.Agent))
	}
	if err := checkBefore(in); err != nil {
		return PushResult{}, err
	}
	ctx, hb, err := a.begin(ctx, in.Agent, Progress{Step: StepPreflight, Phase: "check"})
	if err != nil {
		return PushResult{}, err
	}
	defer hb.stop()
	pf, look, err := a.preflightCheck(ctx, in.Before.Preflight)
	if err != nil {
		return PushResult{}, err
	}
	if _, err := a.authorizePush(ctx, StepPush, in); err != nil {
		return PushResult{}, err
	}
	if look != nil {
		if err := look(ctx); err != nil {
			return PushResult{}, err
		}
	}
	hb.update(Progress{Step: StepPush, Phase: "open", Agent: a.Host})
	pushed, err := a.pushLeased(ctx, hb, in, StepPush, pushHow{})
	if err != nil {
		return PushResult{}, err
	}
	out := pushed.PushResult
	out.Preflight = &pf
	return out, nil
}
