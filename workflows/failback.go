package workflows

// Failback: the target's replica copied back into the source dataset, guarded. A failback
// replaces live data, so it runs only when the job's config allows it (failback.allow), the
// input carries the typed confirmation ("confirm": the job's name), and the primary
// application is known to be stopped: its check script says so (before the push and again
// before the pull), or the config says the operator's confirmation stands for it
// (failback.primary_stopped: operator). An unreachable primary refuses the run unless the
// input says the primary is down ("primary_down": true).

import (
	"errors"
	"fmt"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/config"
)

// Error types of a refused failback (besides ErrTypeBadInput for the opt-in and the
// confirmation). Nothing was replaced when a run fails with one of them.
const (
	// ErrTypePrimaryRunning: the primary application's check script says it runs.
	ErrTypePrimaryRunning = "PrimaryRunning"
	// ErrTypePrimaryUnknown: the check script answered neither stopped nor running.
	ErrTypePrimaryUnknown = "PrimaryStateUnknown"
	// ErrTypePrimaryUnreachable: the check could not run on the primary application host.
	ErrTypePrimaryUnreachable = "PrimaryUnreachable"
)

// failbackGuardChange is the GetVersion change ID of the guard: failbacks recorded before it
// replay without the confirmation, the opt-in and the check.
const failbackGuardChange = "failback-guard"

// failbackGuard is a failback run's guard state.
type failbackGuard struct {
	// on: this run is guarded (every failback started since the guard exists).
	on bool
	// app is the primary application (the job's application) and role its order: the
	// plan's application is the target side's once the run is turned around.
	app  activities.Application
	role *role
}

// checkFailbackInput refuses a failback input without the typed confirmation, before
// anything runs, and the failback-only fields on a replication.
func (w *replication) checkFailbackInput(ctx workflow.Context) error {
	in := w.in
	if in.Direction != DirectionFailback {
		if in.Confirm != "" || in.PrimaryDown {
			return badWorkflowInput(fmt.Sprintf(`"confirm" and "primary_down" are only used with "direction": "failback" (got "confirm": %q, "primary_down": %t)`, in.Confirm, in.PrimaryDown))
		}
		return nil
	}
	if !changed(ctx, failbackGuardChange) {
		return nil
	}
	w.guard.on = true
	if in.Confirm != in.Job {
		return badWorkflowInput(fmt.Sprintf(`a failback replaces the source dataset of job %s with the target's replica: confirm it by typing the job's name, {"job": %q, "direction": "failback", "confirm": %q} (got "confirm": %q)`,
			in.Job, in.Job, in.Job, in.Confirm))
	}
	return nil
}

// setupFailback checks that the job allows failback and that the primary application is
// stopped, then turns the plan around: the application is the target side's
// (failback.application, if configured), the target's order pushes its current replica,
// and the source order writes it back into the source dataset.
func (w *replication) setupFailback(ctx workflow.Context) error {
	w.status.Direction = DirectionFailback
	t, err := w.plan.FindTarget(w.in.From)
	if err != nil {
		return badWorkflowInput(err.Error())
	}
	if w.guard.on {
		if g := w.plan.FailbackGuard; g == nil || !g.Allow {
			return temporal.NewNonRetryableApplicationError(fmt.Sprintf(
				"job %s does not allow failback: set `failback: {allow: true}` on the job in the config (jobs[].failback.allow) on every agent's host, then start the failback again; nothing was run",
				w.plan.Job), activities.ErrTypeBadInput, nil)
		}
		w.guard.app = w.plan.Application
		w.guard.role = newRole(RoleApplication, w.plan.Order.Application)
		if err := w.checkPrimary(ctx); err != nil {
			return err
		}
	}
	w.failback = &t
	app := activities.Application{Host: t.Order[0], Timeout: w.plan.Application.Timeout}
	if w.plan.Failback != nil {
		app = *w.plan.Failback
	} else {
		w.note("job has no failback.application: the target side's application is not quiesced; stop it before failing back")
	}
	w.plan.Application = app
	w.roles.application = newRole(RoleApplication, []string{app.Host})
	w.roles.source = newRole(RoleSource, t.Order)
	w.roles.target = newRole(RoleTarget, w.plan.Order.Source)
	w.upsert(ctx, AttrSourceStorage.ValueSet(t.Storage), AttrTargetStorage.ValueSet(w.plan.Source.Storage))
	return nil
}

// recheckPrimary runs the primary's check again right before the pull replaces its dataset.
func (w *replication) recheckPrimary(ctx workflow.Context) error {
	if !w.guard.on {
		return nil
	}
	return w.checkPrimary(ctx)
}

// checkPrimary makes sure the primary application is stopped: its check script runs on the
// primary application host, taken over along order.application as quiesce is. Exit 0 goes
// on; exit 3 (running) or anything else refuses the run; an unreachable host refuses it
// unless the input says "primary_down".
func (w *replication) checkPrimary(ctx workflow.Context) error {
	app := w.guard.app
	if app.Check == "" {
		if g := w.plan.FailbackGuard; g.PrimaryStopped == config.PrimaryStoppedOperator {
			w.primaryChecked(fmt.Sprintf("operator: no check script (failback.primary_stopped: operator); the confirmation of the failback says the application on host %s is stopped", app.Host))
			return nil
		}
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf(
			"job %s has no application.check script and failback.primary_stopped is not %q: nothing tells that the application on host %s is stopped; nothing was run",
			w.plan.Job, config.PrimaryStoppedOperator, app.Host), activities.ErrTypeBadInput, nil)
	}
	host, err := w.plan.Host(app.Host)
	if err != nil {
		return nonRetryable(err)
	}
	w.setPhase(ctx, PhaseChecking)
	// The check runs like quiesce of the primary application (its timeout, its takeover
	// script for a lost agent): the plan's application is the primary's meanwhile.
	turned := w.plan.Application
	w.plan.Application = app
	err = w.onRole(ctx, w.guard.role, activities.StepCheck, func(ctx workflow.Context, agent string, _ *activities.Progress) error {
		return w.script(ctx, activities.StepCheck, agent, host, app.Check, "")
	})
	w.plan.Application = turned
	if err == nil {
		w.primaryChecked(fmt.Sprintf("stopped: check script %s on host %s exited %d", app.Check, app.Host, config.CheckExitStopped))
		return nil
	}
	if temporal.IsCanceledError(err) {
		return err
	}
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) {
		return err
	}
	switch appErr.Type() {
	case activities.ErrTypeScriptFailed:
		var res activities.ScriptResult
		if appErr.HasDetails() {
			_ = appErr.Details(&res)
		}
		if res.ExitCode == config.CheckExitRunning && !res.TimedOut {
			return temporal.NewNonRetryableApplicationError(fmt.Sprintf(
				"the primary application is running on host %s (check script %s exited %d): stop it before failing back; nothing was replaced",
				app.Host, app.Check, config.CheckExitRunning), ErrTypePrimaryRunning, err)
		}
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf(
			"cannot tell whether the primary application on host %s is stopped: %s (the check must exit %d = stopped or %d = running); nothing was replaced",
			app.Host, rootMessage(err), config.CheckExitStopped, config.CheckExitRunning), ErrTypePrimaryUnknown, err)
	case activities.ErrTypeHostUnreachable, "OrderExhausted":
		if w.in.PrimaryDown {
			w.primaryChecked(fmt.Sprintf("unreachable, going on because the input says primary_down: the check script %s could not run on host %s: %s", app.Check, app.Host, rootMessage(err)))
			return nil
		}
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf(
			"the primary application host %s cannot be reached to check that its application is stopped (%s); if the primary is down, start the failback with --primary-down (input \"primary_down\": true); nothing was replaced",
			app.Host, rootMessage(err)), ErrTypePrimaryUnreachable, err)
	}
	return err
}

// primaryChecked records what the failback knows about the primary, noting each new answer.
func (w *replication) primaryChecked(what string) {
	if w.status.PrimaryCheck != what {
		w.note("failback: primary application " + what)
	}
	w.status.PrimaryCheck = what
}
