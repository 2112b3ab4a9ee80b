package workflows

import (
	"fmt"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/replctl/replctl/activities"
)

// The resume: it runs whenever quiesce ran, even when the run fails or is cancelled.

// leftQuiesced is the error of a run whose resume failed: leaving the application frozen
// outranks whatever else failed (other, said after what), so it names the type.
func leftQuiesced(rerr error, what string, other error) error {
	msg := rootMessage(rerr)
	if other != nil {
		msg += "; " + what + ": " + rootMessage(other)
	}
	return temporal.NewNonRetryableApplicationError(msg, ErrTypeLeftQuiesced, rerr)
}

// resumeBesidePull tells whether the pull may start while the application is resumed: the
// image is complete once the push ends, so the thaw need not wait for the pull nor the pull
// for the thaw (one server round trip less per run). Runs recorded before it resumed, then
// pulled.
func (w *replication) resumeBesidePull(ctx workflow.Context) bool {
	if w.failback != nil || w.plan.Application.Resume == "" {
		return false
	}
	return changed(ctx, "resume-beside-pull")
}

// resumeAndPull resumes the application and pulls at the same time. The resume runs even
// when the run is cancelled, and the run waits for both.
func (w *replication) resumeAndPull(ctx workflow.Context) error {
	var pullErr error
	pulled := false
	workflow.Go(ctx, func(ctx workflow.Context) {
		pullErr = w.pullAll(ctx)
		pulled = true
	})
	rerr := w.resume(workflowDisconnected(ctx))
	// A cancelled pull ends on its own (its activity is cancelled): wait for its result.
	_ = workflow.Await(workflowDisconnected(ctx), func() bool { return pulled })
	if rerr != nil {
		return leftQuiesced(rerr, "the pull meanwhile", pullErr)
	}
	return pullErr
}

// resume runs the job's resume script on the application role, taking over along its
// order; nothing is left to do when the push already thawed the host (thawinpush.go).
func (w *replication) resume(ctx workflow.Context) error {
	app := w.plan.Application
	if w.thawed {
		// The push resumed it (thawinpush.go).
		w.clearQuiesced(ctx)
		return nil
	}
	if app.Resume == "" {
		w.note("job has no resume script")
		w.clearQuiesced(ctx)
		return nil
	}
	host, err := w.plan.Host(app.Host)
	if err != nil {
		return err
	}
	w.setPhase(ctx, PhaseResuming)
	w.resumeTakenOver(ctx)
	err = w.onRole(ctx, w.roles.application, activities.StepResume, func(ctx workflow.Context, agent string, _ *activities.Progress) error {
		return w.script(ctx, activities.StepResume, agent, host, app.Resume, "")
	})
	if err != nil {
		return fmt.Errorf("host %s LEFT QUIESCED: resume failed: %s", app.Host, rootMessage(err))
	}
	w.clearQuiesced(ctx)
	return nil
}
