package workflows

import (
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/config"
)

// The preflight and the precopy in the push that carries the quiesce (issue 16,
// `precopy-in-push`). Where the quiesce travels in the push (quiescepush.go), the run's
// preflight and its precopy travel there too: the quiesce step's first attempt does
// preflight, precopy, script and push in one activity, so a run has one step and one
// server round trip fewer before the freeze (the longest gap of an empty run). What stays:
//   - Nothing is quiesced without a passed preflight: an error the agent met before the
//     script is marked NotQuiesced, and a refusal, a storage fault or a bad input then
//     fails the run with no resume, as the preflight or the precopy step would. A retryable
//     one sends the whole attempt again.
//   - When the attempt ended in a way that does not prove the preflight done (a lost agent
//     whose last heartbeat does not yet say quiesce), the next attempt on another agent
//     runs the preflight as its own step first.
//   - A failed copy is noted and the run goes on, as before; the agent finishes the
//     preflight's look for unsupported entries itself.

// beforeInPush tells whether the quiesce step's first attempt also does the preflight and
// the precopy; it then sets w.fuse. Runs recorded before it ran them as steps of their own.
func (w *replication) beforeInPush(ctx workflow.Context) bool {
	if w.plan.Application.Quiesce == "" || w.fusedAgent() == "" {
		return false
	}
	if !changed(ctx, "precopy-in-push") {
		return false
	}
	fuse := w.fusedInput(ctx)
	if fuse == nil {
		return false
	}
	pf, err := w.preflightInput(fuse.Agent)
	if err != nil {
		return false
	}
	fuse.Before = &activities.BeforeQuiesce{Preflight: pf, Precopy: w.precopyRuns(), PrecopyFirst: w.plan.Precopy == config.PrecopyAlways}
	w.fuse = fuse
	return true
}

// precopied records what the precopy part of a push did.
func (w *replication) precopied(r activities.PrecopyResult) {
	if r.Failed != "" {
		w.note("precopy failed, so the push reads everything while quiesced: " + r.Failed)
		return
	}
	w.status.Precopy = &Precopy{Agent: r.Agent, Bytes: r.Bytes, Files: r.Files, Reused: r.Reused, Seconds: r.Duration.Seconds(), Skipped: r.Skipped}
	if r.Skipped {
		w.status.Precopy.SkippedDatasets = 1
	}
}

// notQuiesced tells whether err is a push's that stopped before its quiesce script started.
func notQuiesced(err error) bool {
	_, ok := activities.NotQuiescedPart(err)
	return ok
}

// preflightDone tells whether a push that carried the preflight got past it: it ended well,
// or failed in or after its script, or its agent was lost once its heartbeat said quiesce
// or push.
func preflightDone(err error) bool {
	if err == nil {
		return true
	}
	if notQuiesced(err) || temporal.IsCanceledError(err) {
		return false
	}
	if timedOut, last := lostIn(err); timedOut {
		return last == activities.StepQuiesce || last == activities.StepPush
	}
	return true
}
