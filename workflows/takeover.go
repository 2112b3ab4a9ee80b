package workflows

// The takeover protocol, in one place. Every step of a run belongs to a role (application,
// source, target) whose agents are tried in the order fixed in the configuration:
//
//  1. The step is sent to the current agent's own task queue with a heartbeat timeout (an
//     agent that died, stalled or was cut off stops heartbeating) and a schedule-to-start
//     timeout (nobody polls the queue). Temporal does not retry it: a retry would go back to
//     the same queue, and moving on is this code's job.
//  2. A timeout means the agent is lost: the takeover is recorded, the role's index moves to
//     the next agent (and stays there for the rest of the run), and that agent first runs the
//     job's takeover script for the failed host ON the failed host (hostexec decides: local
//     process or SSH), then runs the step again from the failed attempt's last heartbeat
//     (the resume cursor).
//  3. A retryable error is retried on the same agent a few times, then treated as lost.
//  4. A non-retryable error (bad input, fenced, verification failed, script failed) ends
//     the step: another agent would fail the same way.
//  4a. A storage fault (the storage is full, over quota, read-only or failing: faults.go)
//     ends the step too, naming the storage, without a takeover or a takeover script; with
//     timeouts.storage_retry the step waits and is retried on the same agent until then.
//  5. When the order is exhausted the step fails with an error naming the role, every agent
//     tried and why each failed.
// An unreachable failed host (its takeover script cannot run) is handled by the job's
// on_unreachable_host policy: fail stops the run, continue goes on crash-consistent.

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/replctl/replctl/activities"
)

// attemptsPerAgent is how often a step is tried on one agent for retryable errors.
const attemptsPerAgent = 3

// role is one role's takeover order and the index of its current agent.
type role struct {
	name  string
	order []string
	idx   int
	// tried records, per agent, why it failed: for the exhausted-order error.
	tried []string
	// pending are failed hosts whose takeover script the next agent runs before the step.
	pending []string
	// target is the target storage of one pull of a fan-out ("" otherwise).
	target string
}

func newRole(name string, order []string) *role {
	return &role{name: name, order: append([]string(nil), order...)}
}

// current is the role's active agent, "" when the order is exhausted.
func (r *role) current() string {
	if r.idx < len(r.order) {
		return r.order[r.idx]
	}
	return ""
}

// attempt runs a step once on agent; resume is the last progress of a failed attempt.
type attempt func(ctx workflow.Context, agent string, resume *activities.Progress) error

// onRole runs a step on the role's current agent and takes over along the order.
func (w *replication) onRole(ctx workflow.Context, r *role, step activities.Step, run attempt) error {
	var resume *activities.Progress
	failures := 0
	var storage storageWait
	for r.current() != "" {
		agent := r.current()
		if w.lostEarlier(ctx, agent) && w.skipLost(ctx, r) {
			// Lost in another role of this run: don't wait a schedule-to-start timeout to
			// learn it again.
			w.takeover(ctx, r, step, agent, "skipped: agent lost earlier in this run")
			continue
		}
		w.setAgent(ctx, r.name, agent)
		err := w.runTakeoverScripts(ctx, r, agent)
		if err == nil {
			err = run(w.stepContext(ctx, r, step, agent), agent, resume)
		}
		if err == nil {
			return nil
		}
		if temporal.IsCanceledError(err) || ctx.Err() != nil {
			return err
		}
		reason, _, progress := lostAgent(err)
		if progress != nil {
			resume = progress
		}
		switch classifyFault(err) {
		case faultAgentLost:
		case faultStorage:
			if w.waitForStorage(ctx, step, agent, &storage, err) {
				continue
			}
			return err
		case faultFinal:
			return err
		case faultRetry:
			failures++
			if failures < attemptsPerAgent {
				_ = workflow.Sleep(ctx, time.Duration(failures)*time.Second)
				continue
			}
			reason = fmt.Sprintf("failed %d times: %s", failures, rootMessage(err))
		}
		failures = 0
		w.takeover(ctx, r, step, agent, reason)
	}
	return temporal.NewNonRetryableApplicationError(
		fmt.Sprintf("%s failed on every %s agent in order [%s]: %s", step, r.name, strings.Join(r.order, ", "), strings.Join(r.tried, "; ")),
		"OrderExhausted", nil)
}

// lostEarlier tells whether agent was taken over from earlier in this run.
func (w *replication) lostEarlier(ctx workflow.Context, agent string) bool {
	// Runs recorded before this change tried every agent of each role again.
	return w.wasTakenOver(agent) && changed(ctx, "skip-agents-lost-earlier")
}

// skipLost tells whether the role's current agent, lost earlier in this run, is skipped:
// only while a later agent of the order was not lost. When every agent left was lost (a
// control plane that was away times out every agent at once: a frontend restart, a
// database failover), they are tried again in order: skipping them all would leave the
// step undone, and for the resume a host quiesced, on a fault of no agent.
func (w *replication) skipLost(ctx workflow.Context, r *role) bool {
	for _, a := range r.order[r.idx+1:] {
		if !w.wasTakenOver(a) {
			return true
		}
	}
	// Runs recorded before this change skipped them all.
	return !changed(ctx, "retry-lost-agents-when-all-were")
}

// wasTakenOver tells whether a step was taken over from agent earlier in this run.
func (w *replication) wasTakenOver(agent string) bool {
	for _, t := range w.status.Takeovers {
		if t.From == agent {
			return true
		}
	}
	return false
}

// takeover records that agent lost step and moves the role to the next agent.
func (w *replication) takeover(ctx workflow.Context, r *role, step activities.Step, agent, reason string) {
	r.tried = append(r.tried, agent+": "+reason)
	r.pending = append(r.pending, agent)
	r.idx++
	t := Takeover{Role: r.name, Step: step, From: agent, To: r.current(), Reason: reason, Time: workflow.Now(ctx), Target: r.target}
	w.status.Takeovers = append(w.status.Takeovers, t)
	workflow.GetMetricsHandler(ctx).WithTags(map[string]string{"job": w.plan.Job, "role": r.name, "step": string(step), "reason": reasonKind(reason)}).
		Counter("replctl_takeovers_total").Inc(1)
	workflow.GetLogger(ctx).Warn("takeover", "role", r.name, "step", step, "from", agent, "to", t.To, "reason", reason)
}

// runTakeoverScripts has agent run the takeover script of each host the role lost, on that
// host. A host that cannot be reached is subject to the job's on_unreachable_host policy.
func (w *replication) runTakeoverScripts(ctx workflow.Context, r *role, agent string) error {
	for len(r.pending) > 0 {
		failed := r.pending[0]
		script := w.plan.Application.Takeover
		host, err := w.plan.Host(failed)
		if err != nil {
			return temporal.NewNonRetryableApplicationError(err.Error(), activities.ErrTypeBadInput, nil)
		}
		// The resume and the pull may take over at the same time: one script per host.
		_ = workflow.Await(ctx, func() bool { return !w.scriptRunning[failed] })
		if w.tookOver(ctx, failed) {
			w.note(fmt.Sprintf("takeover script of host %s already ran in this run: not run again for %s", failed, r.name))
			r.pending = r.pending[1:]
			continue
		}
		if script == "" || host.Scripts == "" {
			w.note(fmt.Sprintf("no takeover script for host %s: %s took over without one", failed, agent))
			r.pending = r.pending[1:]
			continue
		}
		sctx := w.stepContext(ctx, r, activities.StepTakeover, agent)
		if w.scriptRunning == nil {
			w.scriptRunning = map[string]bool{}
		}
		w.scriptRunning[failed] = true
		err = w.script(sctx, activities.StepTakeover, agent, host, script, failed)
		delete(w.scriptRunning, failed)
		if w.continueUnreachable(err, "takeover script of host "+failed, failed) {
			err = nil
		}
		if err != nil {
			return err
		}
		w.takenOver = append(w.takenOver, failed)
		r.pending = r.pending[1:]
	}
	return nil
}

// tookOver tells whether failed's takeover script already ran in this run (a host whose
// agent died is usually lost for several roles: its script runs once).
func (w *replication) tookOver(ctx workflow.Context, failed string) bool {
	done := false
	for _, h := range w.takenOver {
		done = done || h == failed
	}
	// Runs recorded before this change ran the script once per role.
	return done && changed(ctx, "takeover-script-once-per-host")
}

// continueUnreachable applies on_unreachable_host: true when err says a host could not be
// reached and the job's policy is to go on crash-consistent (recorded in the status).
// Only the application host's scripts make the image application-consistent: an
// unreachable source or target host changes nothing about the image.
func (w *replication) continueUnreachable(err error, what, host string) bool {
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) || appErr.Type() != activities.ErrTypeHostUnreachable || w.plan.OnUnreachableHost != "continue" {
		return false
	}
	if host == w.plan.Application.Host {
		w.status.CrashConsistent = true
		w.note(fmt.Sprintf("%s: host unreachable; continuing crash-consistent (on_unreachable_host: continue): %s", what, rootMessage(err)))
	} else {
		w.note(fmt.Sprintf("%s: host unreachable; continuing (on_unreachable_host: continue): %s", what, rootMessage(err)))
	}
	return true
}

// stepContext is the activity options of one attempt of a step on agent.
func (w *replication) stepContext(ctx workflow.Context, r *role, step activities.Step, agent string) workflow.Context {
	t := w.plan.Timeouts
	startToClose := t.StartToClose
	if step == activities.StepQuiesce || step == activities.StepResume || step == activities.StepTakeover {
		startToClose = w.plan.Application.Timeout + t.Heartbeat
	}
	summary := string(step) + " on " + agent
	if r.idx > 0 {
		summary += " (took over from " + r.order[r.idx-1] + ")"
	}
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:              HostQueue(agent),
		ScheduleToStartTimeout: t.ScheduleToStart,
		StartToCloseTimeout:    startToClose,
		HeartbeatTimeout:       t.Heartbeat,
		RetryPolicy:            &temporal.RetryPolicy{MaximumAttempts: 1},
		Summary:                summary,
	})
}

// reasonKind is a takeover reason's first words, a bounded label value for metrics.
func reasonKind(reason string) string {
	for _, k := range []string{"heartbeat timeout", "schedule-to-start timeout", "start-to-close timeout", "skipped"} {
		if strings.HasPrefix(reason, k) {
			return strings.ReplaceAll(k, " ", "_")
		}
	}
	return "errors"
}

// rootMessage is the innermost message of an activity error chain: the part worth showing.
func rootMessage(err error) string {
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		return appErr.Message()
	}
	return err.Error()
}
