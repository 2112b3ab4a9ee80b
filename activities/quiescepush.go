package activities

import (
	"context"
	"errors"
	"fmt"

	"go.temporal.io/sdk/temporal"
)

// quiesceAndPush is a Push whose input carries the application's quiesce script: the
// workflow sends one when a single agent is both the application's and the source's current
// agent, the usual layout (issue 16: one activity and one server round trip fewer, both
// inside the freeze window).
//
// The workflow must tell which part an error belongs to, because the takeover rules differ:
// every error of the quiesce part, and of the checks made before anything ran, carries the
// quiesce's ScriptResult as its details (QuiescePart); errors of the push part are the
// push's own. Heartbeats say step quiesce until the script has succeeded, then push (sent
// at once), then, with a Thaw, resume once the push succeeded (thawinpush.go), so a lost
// agent's last heartbeat tells the same.
func (a *Agent) quiesceAndPush(ctx context.Context, in PushInput) (PushResult, error) {
	q := *in.Quiesce
	res := ScriptResult{Step: StepQuiesce, Host: q.Host.Name, Agent: a.Host, Script: q.Script}
	// Before the script starts, nothing is quiesced: with a Before part the workflow is told
	// so (NotQuiesced); without one, errors are the quiesce part's, as they always were.
	early := func(err error, part Step) error {
		if in.Before != nil {
			return NotQuiescedError(err, part)
		}
		return QuiescePartError(err, res)
	}
	if q.Step != StepQuiesce || q.Job != in.Job || q.RunID != in.RunID || q.Agent != in.Agent || in.Resume != nil || in.FollowLink {
		return PushResult{}, early(badInput(fmt.Errorf(
			"push of job %s (run %s, agent %s) carries a %q script step of job %q (run %q, agent %q)%s: refused; only a first push (no resume, no failback) carries the quiesce of the same job, run and agent",
			in.Job, in.RunID, in.Agent, q.Step, q.Job, q.RunID, q.Agent, resumeNote(in))), StepQuiesce)
	}
	if in.Thaw != nil {
		if err := checkThaw(in); err != nil {
			return PushResult{}, early(err, StepQuiesce)
		}
	}
	first := Progress{Step: StepQuiesce, Phase: "script " + q.Script}
	if in.Before != nil {
		if err := checkBefore(in); err != nil {
			return PushResult{}, early(err, StepPreflight)
		}
		first = Progress{Step: StepPreflight, Phase: "check"}
	}
	ctx, hb, err := a.begin(ctx, in.Agent, first)
	if err != nil {
		return PushResult{}, early(err, first.Step)
	}
	defer hb.stop()
	// The preflight's checks of the storage and the dataset come first: they name what is
	// wrong on disk better than the authority checks, which they include.
	var checked *PreflightResult
	var look func(context.Context) error
	if in.Before != nil {
		pf, scan, err := a.preflightCheck(ctx, in.Before.Preflight)
		if err != nil {
			return PushResult{}, early(err, StepPreflight)
		}
		checked, look = &pf, scan
	}
	// Every part, the thaw too, is checked against this agent's own config before the
	// script runs: a push that would be refused must not leave the application frozen.
	if q.Host, q.SourcePath, err = a.authorizeScript(ctx, q); err != nil {
		return PushResult{}, early(err, StepQuiesce)
	}
	var thaw *ScriptInput
	if in.Thaw != nil {
		t := *in.Thaw
		if t.Host, t.SourcePath, err = a.authorizeScript(ctx, t); err != nil {
			return PushResult{}, early(err, StepQuiesce)
		}
		thaw = &t
	}
	if _, err := a.authorizePush(ctx, StepPush, in); err != nil {
		return PushResult{}, early(err, StepQuiesce)
	}
	var pre *PrecopyResult
	if in.Before != nil {
		pre, err = a.precopyAndLook(ctx, hb, in, look)
		if err != nil {
			return PushResult{}, NotQuiescedError(err, hb.progress().Step)
		}
		// Said at once: from here on a lost agent may have quiesced, and its preflight is done.
		_ = hb.updateNow(Progress{Step: StepQuiesce, Phase: "script " + q.Script, Agent: a.Host})
	}
	res, err = a.runScript(ctx, q, func() {})
	if err != nil {
		return PushResult{}, QuiescePartError(err, res)
	}
	// Said at once, not at the next tick: if this agent is lost from here on, the workflow
	// knows the application is quiesced and takes over only the push, from its cursor.
	_ = hb.updateNow(Progress{Step: StepPush, Phase: "open", Agent: a.Host})
	pushed, err := a.pushLeased(ctx, hb, in, StepPush, pushHow{})
	if err != nil {
		return PushResult{}, err
	}
	out := pushed.PushResult
	out.Quiesce = &res
	out.Preflight, out.Precopy = checked, pre
	if thaw != nil {
		a.thaw(ctx, hb, *thaw, &out)
	}
	return out, nil
}

func resumeNote(in PushInput) string {
	switch {
	case in.Resume != nil:
		return " with a resume cursor"
	case in.FollowLink:
		return " in a failback"
	}
	return ""
}

// QuiescePartError marks err as an error of the quiesce part of a push that carries a
// quiesce script, with res as what the script did: its details become res (a ScriptFailed
// already has them), its type and retryability stay. The agent marks its own errors so;
// an agent that refuses or cuts short such a push (a stopping one) marks its refusal too.
func QuiescePartError(err error, res ScriptResult) error {
	if _, ok := QuiescePart(err); ok {
		return err
	}
	res.Step = StepQuiesce
	return markedWith(err, StepQuiesce, res)
}

// markedWith is err with d as its details: an application error keeps its message, type
// and retryability; any other (a lost lease, a cancelled context) becomes a retryable
// StepFailed naming step, as RunScript's are.
func markedWith(err error, step Step, d any) error {
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		return temporal.NewApplicationErrorWithOptions(appErr.Message(), appErr.Type(), temporal.ApplicationErrorOptions{
			NonRetryable: appErr.NonRetryable(), Cause: appErr.Unwrap(), Details: []any{d},
		})
	}
	return temporal.NewApplicationErrorWithCause(fmt.Sprintf("%s: %v", step, err), "StepFailed", err, d)
}

// QuiescePart tells whether err is an error of a fused push's quiesce part (or of a
// RunScript quiesce), and returns the script's result it carries.
func QuiescePart(err error) (ScriptResult, bool) {
	var res ScriptResult
	if ErrorDetails(err, &res) && res.Step == StepQuiesce {
		return res, true
	}
	return ScriptResult{}, false
}

// ErrorDetails decodes the first details value of err's application error into v and tells
// whether it could. In a workflow the details are payloads and decode leniently (JSON); in
// the activity that made the error they are Go values, which the SDK assigns by reflection
// and panics on when v's type differs: that is a "no" here.
func ErrorDetails(err error, v any) (ok bool) {
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) || !appErr.HasDetails() {
		return false
	}
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	return appErr.Details(v) == nil
}
