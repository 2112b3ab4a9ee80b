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

// baselineChange is the change ID of the one marker (workflows/versions.go). Its version is
// the baseline a run recorded: 1, then 2 (warmChange).
const baselineChange = "baseline-2026-12-07"

// baselineVersion is the baseline a new run records.
const baselineVersion = 2

// baselineChanges are the changes a run with baselineChange takes as made, each with the
// first baseline version that holds it: a run recorded with baseline 1 takes the changes of
// version 1 as made and those of version 2 as not made, without asking. The set is frozen
// for each version: runs were recorded with it. A later change gets its own GetVersion call
// (through changed, outside this set), or a new baseline version.
var baselineChanges = map[string]int{
	"cancel-phase-is-cancelled":       1,
	"coalesce-search-attributes":      1,
	failbackGuardChange:               1,
	"groups-fanout":                   1,
	"maintenance-id-escaped":          1,
	"no-resume-without-quiesce":       1,
	"plan-local-activity":             1,
	"precopy":                         1,
	"precopy-in-push":                 1,
	"precopy-storage-fault":           1,
	"preflight-in-precopy":            1,
	"preflight-in-push":               1,
	preflightChange:                   1,
	"quiesce-in-push":                 1,
	"quiesce-never-started":           1,
	"resume-beside-pull":              1,
	"resume-in-push":                  1,
	"retry-lost-agents-when-all-were": 1,
	"skip-agents-lost-earlier":        1,
	"storage-retry":                   1,
	"strict-input-one-run-per-job":    1,
	"takeover-script-once-per-host":   1,
	warmChange:                        2,
}

// baselineKey holds, in a run's context, the baseline version the run recorded (0: none).
type baselineKey struct{}

// withBaseline asks for baselineChange and returns ctx carrying the baseline the run
// recorded (0: none). It must come before any GetVersion of a change in baselineChanges, so
// it is a workflow's first call.
func withBaseline(ctx workflow.Context) workflow.Context {
	v := workflow.GetVersion(ctx, baselineChange, workflow.DefaultVersion, baselineVersion)
	return workflow.WithValue(ctx, baselineKey{}, max(int(v), 0))
}

// changed reports whether the run takes the change with this ID (version 1 of a
// GetVersion with versions DefaultVersion..1): from the baseline when the run recorded one
// and the change is in the set, else by asking GetVersion.
func changed(ctx workflow.Context, id string) bool {
	base, _ := ctx.Value(baselineKey{}).(int)
	if want, ok := baselineChanges[id]; ok && base > 0 {
		return base >= want
	}
	return workflow.GetVersion(ctx, id, workflow.DefaultVersion, 1) == 1
}
