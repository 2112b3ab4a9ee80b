package workflows

// What a step's error says about the world, in one place beside the takeover protocol
// (takeover.go); the agent's side of the same classification is activities/faults.go.

import (
	"errors"
	"fmt"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/replctl/replctl/activities"
)

// fault is a class of step failure, and with it the reaction.
type fault int

const (
	// faultRetry: transient or unknown; retried on the same agent, then taken over.
	faultRetry fault = iota
	// faultAgentLost: a heartbeat, schedule-to-start or start-to-close timeout: the agent
	// died, stalled or was cut off; the step is taken over at once.
	faultAgentLost
	// faultStorage: the storage refused (full, over quota, read-only, failing). Every agent
	// of that storage would meet it: no takeover, no takeover script; the step fails, or
	// waits and is retried on the same agent within timeouts.storage_retry.
	faultStorage
	// faultFinal: bad input, a refusal by the agent's config, a fence, a failed
	// verification or script: another agent would fail the same way; the step ends.
	faultFinal
)

// classifyFault tells the class of a step's error.
func classifyFault(err error) fault {
	if _, lost, _ := lostAgent(err); lost {
		return faultAgentLost
	}
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) && appErr.Type() == activities.ErrTypeStorageFault {
		return faultStorage
	}
	if isRetryable(err) {
		return faultRetry
	}
	return faultFinal
}

// storageWait is the state of one step's waiting for its storage.
type storageWait struct {
	since time.Time
	waits int
}

// maxStorageBackoff caps the wait between two tries of a step the storage refused.
const maxStorageBackoff = 5 * time.Minute

// waitForStorage waits before the step is tried again on the same agent after a storage
// fault, while the job's timeouts.storage_retry allows; false: fail the step now.
func (w *replication) waitForStorage(ctx workflow.Context, step activities.Step, agent string, s *storageWait, err error) bool {
	workflow.GetMetricsHandler(ctx).WithTags(map[string]string{"job": w.plan.Job, "step": string(step)}).Counter("replctl_storage_faults_total").Inc(1)
	bound := w.plan.Timeouts.StorageRetry
	if bound <= 0 {
		return false
	}
	// Runs recorded before storage faults were told apart had no storage_retry.
	if !changed(ctx, "storage-retry") {
		return false
	}
	now := workflow.Now(ctx)
	if s.since.IsZero() {
		s.since = now
	}
	left := bound - now.Sub(s.since)
	if left <= 0 {
		w.note(fmt.Sprintf("%s on %s: the storage still refused after %s (timeouts.storage_retry): %s", step, agent, bound, rootMessage(err)))
		return false
	}
	wait := min(left, min(maxStorageBackoff, 5*time.Second<<min(s.waits, 10)))
	if s.waits == 0 {
		w.note(fmt.Sprintf("%s on %s: storage fault, waiting and retrying on the same agent for up to %s (timeouts.storage_retry): %s", step, agent, bound, rootMessage(err)))
	}
	s.waits++
	_ = workflow.Sleep(ctx, wait)
	return true
}

// neverStarted tells whether err is a schedule-to-start timeout: no agent ever received the
// activity, so nothing of it ran.
func neverStarted(err error) bool {
	var te *temporal.TimeoutError
	return errors.As(err, &te) && te.TimeoutType() == enumspb.TIMEOUT_TYPE_SCHEDULE_TO_START
}

// lostAgent tells whether err means the agent is lost (a timeout), why, and the last
// progress the failed attempt reported.
func lostAgent(err error) (reason string, lost bool, progress *activities.Progress) {
	var te *temporal.TimeoutError
	if errors.As(err, &te) {
		switch te.TimeoutType() {
		case enumspb.TIMEOUT_TYPE_HEARTBEAT:
			reason = "heartbeat timeout: agent died, stalled or was cut off"
		case enumspb.TIMEOUT_TYPE_SCHEDULE_TO_START:
			reason = "schedule-to-start timeout: no agent is polling its queue"
		case enumspb.TIMEOUT_TYPE_START_TO_CLOSE:
			reason = "start-to-close timeout: step took longer than allowed"
		default:
			reason = "timeout: " + te.TimeoutType().String()
		}
		if te.HasLastHeartbeatDetails() {
			var p activities.Progress
			if te.LastHeartbeatDetails(&p) == nil {
				progress = &p
			}
		}
		return reason, true, progress
	}
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) && appErr.HasDetails() {
		var p activities.Progress
		if appErr.Details(&p) == nil && p.Step != "" {
			progress = &p
		}
	}
	return "", false, progress
}

func isRetryable(err error) bool {
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		return !appErr.NonRetryable()
	}
	var panicErr *temporal.PanicError
	return !errors.As(err, &panicErr)
}
