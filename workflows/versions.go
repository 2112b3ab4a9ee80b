package workflows

import "go.temporal.io/sdk/workflow"

// Behaviour changes of the workflows, and one marker for all of them in a new run.
//
// Each change made since the first release is a workflow.GetVersion change ID with versions
// DefaultVersion (the run was recorded before it) and 1 (after). Asked one by one, a new
// replication run recorded a marker and, through the SDK, a TemporalChangeVersion search
// attribute update for each of them that it reached: eight markers and eight upserts in an
// empty run's first workflow task, each a history event that every later workflow task
// reads and replays again (agents keep no sticky cache) and each upsert a visibility write.
//
// A replication run now asks once, at its start, for baselineChange. A run that records it
// takes every change in baselineChanges as made, without a marker of its own; a run recorded
// before it (replayed, or still going after an upgrade) finds no marker, gets
// DefaultVersion, and asks for each change as it did.

// baselineChange is the change ID of the one marker (workflows/versions.go).
const baselineChange = "baseline-2026-12-07"

// baselineChanges are the changes a run with baselineChange takes as made. The set is
// frozen: runs were recorded with it. A later change gets its own GetVersion call (through
// changed, outside this set), or a new baseline with a new change ID.
var baselineChanges = map[string]bool{
	"cancel-phase-is-cancelled":       true,
	"coalesce-search-attributes":      true,
	failbackGuardChange:               true,
	"groups-fanout":                   true,
	"maintenance-id-escaped":          true,
	"no-resume-without-quiesce":       true,
	"plan-local-activity":             true,
	"precopy":                         true,
	"precopy-in-push":                 true,
	"precopy-storage-fault":           true,
	"preflight-in-precopy":            true,
	"preflight-in-push":               true,
	preflightChange:                   true,
	"quiesce-in-push":                 true,
	"quiesce-never-started":           true,
	"resume-beside-pull":              true,
	"resume-in-push":                  true,
	"retry-lost-agents-when-all-were": true,
	"skip-agents-lost-earlier":        true,
	"storage-retry":                   true,
	"strict-input-one-run-per-job":    true,
	"takeover-script-once-per-host":   true,
}

// baselineKey holds, in a run's context, whether the run recorded baselineChange.
type baselineKey struct{}

// withBaseline asks for baselineChange and returns ctx carrying the answer. It must come
// before any GetVersion of a change in baselineChanges, so it is a workflow's first call.
func withBaseline(ctx workflow.Context) workflow.Context {
	made := workflow.GetVersion(ctx, baselineChange, workflow.DefaultVersion, 1) == 1
	return workflow.WithValue(ctx, baselineKey{}, made)
}

// changed reports whether the run takes the change with this ID (version 1 of a
// GetVersion with versions DefaultVersion..1): at once when the run recorded the baseline
// and the change is in it, else by asking GetVersion.
func changed(ctx workflow.Context, id string) bool {
	if made, _ := ctx.Value(baselineKey{}).(bool); made && baselineChanges[id] {
		return true
	}
	return workflow.GetVersion(ctx, id, workflow.DefaultVersion, 1) == 1
}
