package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/internal/runhistory"
	"github.com/replctl/replctl/workflows"
)

// takeoverPhase kills the pushing agent a1 (kill -9) mid-push and measures how long until
// the next agent (a2) starts its first activity, from the run's history. The dataset is
// the one whose full push took longest, so the kill lands inside the push.
func (b *bench) takeoverPhase(ctx context.Context) error {
	dsName, pushSecs := "a", 0.0
	for _, name := range []string{"a", "b"} {
		if p := median(b.report.values(name, "full", "replctl", func(s Sample) float64 { return s.Steps[string(activities.StepPush)] })); p > pushSecs {
			dsName, pushSecs = name, p
		}
	}
	ds := b.datasets[dsName]
	if err := b.digestSource(ds); err != nil {
		return err
	}
	job := b.job("bench-tk-" + dsName)
	delay := time.Duration(pushSecs / 3 * float64(time.Second))
	b.logf("takeover: kill -9 of a1 %s after its push of dataset %s starts (full push median %.2fs), heartbeat timeout %s",
		delay.Round(time.Millisecond), dsName, pushSecs, b.o.heartbeat)
	for i := 1; i <= b.o.takeovers; i++ {
		t, err := b.takeoverSample(ctx, job, ds, delay)
		if err != nil {
			return fmt.Errorf("sample %d: %w", i, err)
		}
		t.Sample = i
		b.report.Takeovers = append(b.report.Takeovers, *t)
		if t.Missed != "" {
			b.logf("  takeover #%d: MISSED: %s", i, t.Missed)
		} else {
			b.logf("  takeover #%d: a2's first activity (%s) started %.3fs after the kill (heartbeat timeout fired after %.3fs; workflow task timeouts: %s); run took %.2fs",
				i, t.FirstActivity, t.LatencySeconds, t.DetectSeconds, orNone(t.WorkflowTaskTimeouts), t.RunSeconds)
		}
	}
	return nil
}

func (b *bench) takeoverSample(ctx context.Context, job benchJob, ds *Dataset, delay time.Duration) (*TakeoverSample, error) {
	if err := b.h.wipeTarget(ctx, job); err != nil {
		return nil, err
	}
	if err := b.h.restartAgents(ctx, true); err != nil {
		return nil, err
	}
	dropCaches()
	t := &TakeoverSample{Dataset: ds.Spec.Name}
	ids, wait, err := b.h.startCLI(ctx, job.Name, b.o.step)
	if err != nil {
		return nil, err
	}
	var runID string
	select {
	case runID = <-ids:
	case <-time.After(time.Minute):
		_, werr := wait()
		return nil, fmt.Errorf("replctl start %s printed no run ID within a minute: %v", job.Name, werr)
	}
	wfID := workflows.WorkflowID(job.Name)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		started, running, err := b.h.pendingStarted(ctx, wfID, runID, "Push")
		if err != nil {
			return nil, err
		}
		if started {
			break
		}
		if !running || time.Now().After(deadline) {
			_, werr := wait()
			return nil, fmt.Errorf("push of run %s never seen running (run over: %t): %v", runID, !running, werr)
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(delay)
	killedAt := time.Now()
	b.h.agents["a1"].KillGroup() // host a1 crashes with whatever its agent runs
	delete(b.h.agents, "a1")
	r, err := wait()
	if err != nil {
		return nil, err
	}
	if err := b.h.complete(ctx, r); err != nil {
		return nil, err
	}
	t.RunSeconds = r.Elapsed.Seconds()
	t.KillAfterPushStart = delay.Seconds()
	if p := r.History.find("Push", "", ""); p != nil && p.Outcome == runhistory.Completed && p.Identity == workflows.AgentIdentity("a1") {
		t.Missed = "a1 finished its push before the kill"
	} else {
		first := r.History.firstStartBy(workflows.AgentIdentity("a2"), killedAt)
		if first == nil {
			return nil, fmt.Errorf("run %s: no activity of a2 after a1 was killed", runID)
		}
		t.LatencySeconds = first.Started.Sub(killedAt).Seconds()
		t.FirstActivity = activityName(first)
		if to := r.History.find("Push", "", runhistory.TimedOut); to != nil {
			t.DetectSeconds = to.Closed.Sub(killedAt).Seconds()
		}
		t.Timeline = r.History.timeline(killedAt)
		for _, wt := range r.History.WorkflowTaskTimeouts {
			if wt.TimedOut.After(killedAt) {
				t.WorkflowTaskTimeouts = append(t.WorkflowTaskTimeouts, fmt.Sprintf("%s after %.3fs", runhistory.TimeoutName(wt.TimeoutType), wt.TimedOut.Sub(killedAt).Seconds()))
			}
		}
		if ts, ok := r.Markers["takeover-start"]; ok {
			t.ScriptSeconds = ts.Sub(killedAt).Seconds()
		}
		if len(r.Status.Takeovers) == 0 {
			return nil, fmt.Errorf("run %s: a1 was killed mid-push but the status records no takeover", runID)
		}
	}
	if r.Status.Replica == nil || !r.Status.Replica.Verified {
		return nil, fmt.Errorf("run %s published no verified replica after the takeover", runID)
	}
	if err := b.verify(ds, filepath.Join(b.h.targetRoot(job), job.Dataset), "replctl (after takeover)"); err != nil {
		return nil, err
	}
	// The next phase needs a1 again; restartAgents brings everyone back.
	return t, b.h.restartAgents(ctx, false)
}
