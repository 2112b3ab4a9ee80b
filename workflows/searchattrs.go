package workflows

import (
	"fmt"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// A run's search attributes and memo: what the Temporal UI lists and filters runs by.

func (w *replication) setAgent(ctx workflow.Context, roleName, agent string) {
	switch roleName {
	case RoleApplication:
		w.status.Agents.Application = agent
	case RoleSource:
		w.status.Agents.Source = agent
	case RoleTarget:
		w.status.Agents.Target = agent
	}
	w.upsert(ctx, AttrAgent.ValueSet(agent))
}

func (w *replication) setPhase(ctx workflow.Context, phase string) {
	w.status.Phase = phase
	w.upsert(ctx, AttrPhase.ValueSet(phase))
}

func (w *replication) clearQuiesced(ctx workflow.Context) {
	w.status.QuiescedHost = ""
	w.upsert(ctx, AttrQuiescedHost.ValueUnset())
}

func (w *replication) upsert(ctx workflow.Context, updates ...temporal.SearchAttributeUpdate) {
	w.pendingAttrs = append(w.pendingAttrs, updates...)
	if !w.coalescing {
		w.flushUpserts(ctx)
	}
}

// coalesceUpserts makes the run send its search attribute updates as one command each time
// its coroutine blocks instead of one per update. Each command is a history event that every
// later workflow task reads from the database, sends and replays again (agents keep no
// sticky cache): an empty run recorded 20 upsert events, then 14, of which 6 were the SDK's
// own (GetVersion upserts TemporalChangeVersion); with one version marker a run
// (versions.go), 6 in all (baseline.json). A coroutine sends what is pending as soon as
// the run's own coroutine blocks, so the updates still go out in the workflow task that made
// them; the workflow's end sends the rest (Replication defers flushUpserts).
func (w *replication) coalesceUpserts(ctx workflow.Context) {
	w.coalescing = true
	workflow.Go(workflowDisconnected(ctx), func(ctx workflow.Context) {
		for {
			if err := workflow.Await(ctx, func() bool { return len(w.pendingAttrs) > 0 }); err != nil {
				return
			}
			w.flushUpserts(ctx)
		}
	})
}

// flushUpserts sends the pending search attribute updates in order (a later update of an
// attribute wins) as one command.
func (w *replication) flushUpserts(ctx workflow.Context) {
	if len(w.pendingAttrs) == 0 {
		return
	}
	updates := w.pendingAttrs
	w.pendingAttrs = nil
	if err := workflow.UpsertTypedSearchAttributes(ctx, updates...); err != nil {
		workflow.GetLogger(ctx).Warn("search attributes not updated", "error", err)
	}
}

// upsertMemo leaves a one-line summary on the run for the Temporal UI.
func (w *replication) upsertMemo(ctx workflow.Context) {
	s := w.status
	summary := fmt.Sprintf("%s %s", s.Job, s.Phase)
	if s.Replica != nil {
		summary += fmt.Sprintf(": replica %s by %s", s.Replica.Name, s.Replica.Agent)
	}
	if n := len(s.Takeovers); n > 0 {
		summary += fmt.Sprintf(", %d takeover(s)", n)
	}
	if s.QuiescedHost != "" {
		summary += ", HOST LEFT QUIESCED: " + s.QuiescedHost
	}
	if err := workflow.UpsertMemo(ctx, map[string]any{"summary": summary}); err != nil {
		workflow.GetLogger(ctx).Warn("memo not updated", "error", err)
	}
}
