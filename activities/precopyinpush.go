package activities

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
)

// The preflight and the precopy in the push that carries the quiesce (issue 16). When one
// agent is both the application's and the source's, the workflow sends the run's preflight
// and precopy with the quiesce and the push: one activity instead of two, and the server
// round trip between them (the longest gap of an empty run). The parts run in order:
// preflight, precopy, quiesce script, push. Every error met before the script started is
// marked NotQuiesced, so the workflow knows nothing needs a resume; heartbeats say step
// preflight, then precopy (the copy's own), then quiesce (sent at once when the script
// starts), so a lost agent's last heartbeat tells the workflow whether the preflight was
// done: only quiesce and push say so, because the precopy's listing is also the
// preflight's look for unsupported entries.

// NotQuiesced is the details of an error a push carrying the quiesce met before its script
// started: nothing was quiesced, and Part (preflight, precopy or quiesce, for the checks
// before the script) names where it stopped.
type NotQuiesced struct {
	Part Step
}

// NotQuiescedError marks err as met before the quiesce script of its push started. Its type
// and retryability stay.
func NotQuiescedError(err error, part Step) error {
	if _, ok := NotQuiescedPart(err); ok {
		return err
	}
	return markedWith(err, part, NotQuiesced{Part: part})
}

// NotQuiescedPart tells whether err is marked NotQuiesced, and in which part it stopped.
func NotQuiescedPart(err error) (Step, bool) {
	var d NotQuiesced
	if ErrorDetails(err, &d) && d.Part != "" {
		return d.Part, true
	}
	return "", false
}

// checkBefore refuses a Before that is not the preflight of the push's own dataset.
func checkBefore(in PushInput) error {
	pf := in.Before.Preflight
	if pf.Job != in.Job || pf.RunID != in.RunID || pf.Agent != in.Agent ||
		!slices.Equal(pf.Datasets, []string{in.Dataset}) || !slices.Equal(pf.SourceDirs, []string{in.SourceDir}) {
		return badInput(fmt.Errorf("push of job %s (run %s, agent %s, dataset %s at %s) carries the preflight of job %q (run %q, agent %q, datasets %q at %q): refused; it must be the push's own",
			in.Job, in.RunID, in.Agent, in.Dataset, in.SourceDir, pf.Job, pf.RunID, pf.Agent, pf.Datasets, pf.SourceDirs))
	}
	return nil
}

// precopyAndLook does the rest of a push's Before, once the preflight's checks passed: the
// precopy (when Before has one), whose listing is the preflight's look for unsupported
// entries, or else that look (scan, nil when the job skips such entries), bounded. A copy
// that fails for another reason than the storage, a refusal or the end of the lease only
// costs time: it is noted in the result, the look runs, and the run goes on, as after a
// precopy step's failure.
func (a *Agent) precopyAndLook(ctx context.Context, hb *lease, in PushInput, scan func(context.Context) error) (*PrecopyResult, error) {
	b := in.Before
	look := func() error {
		if scan == nil {
			return nil
		}
		return scan(ctx)
	}
	if !b.Precopy {
		return nil, look()
	}
	pin := PrecopyInput{Job: in.Job, RunID: in.RunID, Agent: in.Agent, SourceDir: in.SourceDir, Dataset: in.Dataset, Repo: in.Repo, First: b.PrecopyFirst}
	res, copyErr, err := a.precopyLooking(ctx, hb, pin, scan)
	switch {
	case err != nil:
		return nil, err
	case copyErr == nil:
		out := precopyResult(res)
		out.Agent = a.Host
		return &out, nil
	case ctx.Err() != nil || endsTheRun(copyErr):
		return nil, copyErr
	}
	out := PrecopyResult{Agent: a.Host, Failed: copyErr.Error()}
	if activity.IsActivity(ctx) {
		activity.GetLogger(ctx).Warn("precopy failed; the push reads everything while quiesced", "job", in.Job, "error", copyErr)
	}
	return &out, look()
}

// endsTheRun tells whether a precopy's error must stop the run before quiesce: the storage
// or the agent's config refused, or the input was bad.
func endsTheRun(err error) bool {
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) {
		return false
	}
	switch appErr.Type() {
	case ErrTypeStorageFault, ErrTypeBadInput, ErrTypeRefused, ErrTypeUnsupported:
		return true
	}
	return false
}
