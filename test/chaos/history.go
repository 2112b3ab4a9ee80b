package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/internal/runhistory"
	"github.com/replctl/replctl/workflows"
)

// agentOf is the host whose agent started the attempt ("" if none did).
func agentOf(a *runhistory.Attempt) string { return hostOf(a.Identity) }

// hostOf is the host whose agent has identity id ("" if none).
func hostOf(id string) string {
	host, _ := workflows.HostOfIdentity(id)
	return host
}

// loadHistory reads a run's activity attempts and timed-out workflow tasks. Every Pull
// attempt must carry its epoch (the stale_accepted check reads it).
func loadHistory(ctx context.Context, c client.Client, id, runID string) (*runhistory.History, error) {
	h, err := runhistory.Load(ctx, c, id, runID)
	if err != nil {
		return nil, fmt.Errorf("reading history of %s/%s: %w", id, runID, err)
	}
	for _, a := range h.Attempts {
		if a.Type == activities.PullName && a.Pull == nil {
			return nil, fmt.Errorf("decoding Pull input (event %d) of %s/%s", a.ScheduledID, id, runID)
		}
	}
	return h, nil
}

// outcome says how an attempt ended: completed, failed: <message>, timed out (<type>),
// cancelled, or "" while it is open.
func outcome(a *runhistory.Attempt) string {
	switch a.Outcome {
	case runhistory.Failed:
		return "failed: " + truncate(a.Failure.GetMessage(), 120)
	case runhistory.TimedOut:
		return "timed out (" + a.TimeoutType.String() + ")"
	case runhistory.Canceled:
		return "cancelled"
	}
	return string(a.Outcome)
}

// maxEpoch is the highest epoch issued to a Pull attempt of the run (0 if none).
func maxEpoch(h *runhistory.History) int64 {
	var m int64
	for _, a := range h.Attempts {
		if a.Pull != nil && a.Pull.Epoch > m {
			m = a.Pull.Epoch
		}
	}
	return m
}

// firstStartBy is the first attempt started by host's agent after t.
func firstStartBy(h *runhistory.History, host string, after time.Time) *runhistory.Attempt {
	return h.FirstStartBy(func(id string) bool { return hostOf(id) == host }, after)
}

// lostAttempt is host's first attempt the server timed out after the fault.
func lostAttempt(h *runhistory.History, host string, after time.Time) *runhistory.Attempt {
	for _, a := range h.Attempts {
		if agentOf(a) == host && a.TimeoutType != enums.TIMEOUT_TYPE_UNSPECIFIED && a.Closed.After(after) {
			return a
		}
	}
	return nil
}

// stepDurations returns, per step, how long its first attempt ran, when that attempt
// completed (a taker's attempt reuses the lost one's work and says little about the step).
func stepDurations(h *runhistory.History) map[activities.Step]time.Duration {
	out := map[activities.Step]time.Duration{}
	seen := map[activities.Step]bool{}
	for _, a := range h.Attempts {
		if seen[a.Step] {
			continue
		}
		seen[a.Step] = true
		if a.Outcome == runhistory.Completed && !a.Started.IsZero() {
			out[a.Step] = a.Closed.Sub(a.Started)
		}
	}
	return out
}

// snapshot is what DescribeWorkflowExecution said at one moment.
type snapshot struct {
	at    time.Time
	d     *workflowservice.DescribeWorkflowExecutionResponse
	phase string
	// open is false once the run closed (completed, failed, ...).
	open bool
}

// watcher polls one run's description (pending activities, phase, status) in the
// background, so the fault injector and the application writer can wait for moments of the
// run without each hammering the server. It survives a server restart (errors are retried).
type watcher struct {
	c         client.Client
	id, runID string

	mu   sync.Mutex
	last snapshot
}

func newWatcher(c client.Client, id, runID string) *watcher {
	return &watcher{c: c, id: id, runID: runID, last: snapshot{open: true}}
}

func (w *watcher) run(ctx context.Context) {
	dc := converter.GetDefaultDataConverter()
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		d, err := w.c.DescribeWorkflowExecution(cctx, w.id, w.runID)
		cancel()
		if err == nil {
			s := snapshot{at: time.Now(), d: d, open: d.GetWorkflowExecutionInfo().GetStatus() == enums.WORKFLOW_EXECUTION_STATUS_RUNNING}
			if p := d.GetWorkflowExecutionInfo().GetSearchAttributes().GetIndexedFields()[workflows.AttrPhase.GetName()]; p != nil {
				_ = dc.FromPayload(p, &s.phase)
			}
			w.mu.Lock()
			w.last = s
			w.mu.Unlock()
			if !s.open {
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(25 * time.Millisecond):
		}
	}
}

func (w *watcher) snap() snapshot {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

// phaseRank orders the phases of a run; the closing phases rank last.
func phaseRank(p string) int {
	for i, q := range []string{workflows.PhasePlanning, workflows.PhasePrecopying, workflows.PhaseQuiescing, workflows.PhasePushing, workflows.PhaseResuming, workflows.PhasePulling} {
		if p == q {
			return i
		}
	}
	if p == "" {
		return -1
	}
	return 10
}

// stepPhase is the phase during which a step runs.
func stepPhase(step activities.Step) string {
	switch step {
	case activities.StepPrecopy:
		return workflows.PhasePrecopying
	case activities.StepQuiesce:
		return workflows.PhaseQuiescing
	case activities.StepPush:
		return workflows.PhasePushing
	case activities.StepResume:
		return workflows.PhaseResuming
	default:
		return workflows.PhasePulling
	}
}

// inPhase tells whether step may run during phase: the resume runs beside the pull (the
// run's phase is then pulling).
func inPhase(step activities.Step, phase string) bool {
	return phase == stepPhase(step) || (step == activities.StepResume && phase == workflows.PhasePulling)
}

// running is the step's started activity in the snapshot: its worker and start time. A
// push that carries the quiesce (one agent is the application's and the source's) runs in
// the quiescing phase; its heartbeat names the part it is in.
func (s snapshot) running(step activities.Step) (host string, started time.Time, ok bool) {
	if s.d == nil {
		return "", time.Time{}, false
	}
	for _, pa := range s.d.GetPendingActivities() {
		if pa.GetState() != enums.PENDING_ACTIVITY_STATE_STARTED {
			continue
		}
		name := pa.GetActivityType().GetName()
		fused := name == activities.PushName && s.phase == workflows.PhaseQuiescing
		var p activities.Progress
		if fused && (step == activities.StepQuiesce || step == activities.StepPush) &&
			converter.GetDefaultDataConverter().FromPayloads(pa.GetHeartbeatDetails(), &p) == nil && p.Step == step {
			return hostOf(pa.GetLastWorkerIdentity()), pa.GetLastStartedTime().AsTime(), true
		}
		if !fused && name == step.Info().Activity && inPhase(step, s.phase) {
			return hostOf(pa.GetLastWorkerIdentity()), pa.GetLastStartedTime().AsTime(), true
		}
	}
	return "", time.Time{}, false
}

// startedByOther tells whether an activity was started after t by another agent than host.
func (s snapshot) startedByOther(host string, t time.Time) (string, bool) {
	if s.d == nil {
		return "", false
	}
	for _, pa := range s.d.GetPendingActivities() {
		if pa.GetActivityType().GetName() == activities.WarmName {
			continue // a read-ahead of the run's start, not a step
		}
		who := hostOf(pa.GetLastWorkerIdentity())
		if pa.GetState() == enums.PENDING_ACTIVITY_STATE_STARTED && who != "" && who != host && pa.GetLastStartedTime().AsTime().After(t) {
			return who, true
		}
	}
	return "", false
}
