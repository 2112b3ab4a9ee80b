// Package workflows holds the replication workflow: the step sequence (replication.go) and the
// takeover protocol (takeover.go). Workflow code is deterministic: it reads no config, no
// clock but workflow.Now, and ranges over no map.
package workflows

import (
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
)

// ReplicationWorkflowName is the registered name of the replication workflow; recorded
// histories and schedules refer to it.
const ReplicationWorkflowName = "Replication"

// StatusQuery is the query that returns a run's Status.
const StatusQuery = "status"

// HostResumedSignal tells a run that an agent ran the application's resume script outside
// the run (a stopping agent at its shutdown grace): the host is no longer frozen.
const HostResumedSignal = "host-resumed"

// HostResumed is the payload of HostResumedSignal.
type HostResumed struct {
	Host   string `json:"host"`
	Agent  string `json:"agent"`
	Reason string `json:"reason"`
}

// WorkflowTaskTimeout is what every starter of replctl workflows sets. A workflow task
// taken by an agent that then freezes is handed to another agent only after this timeout
// (default 10 s, which showed as 12–22 s takeovers in fault trials); replctl's workflow tasks
// take milliseconds, even replayed from the start.
const WorkflowTaskTimeout = time.Second

// Search attributes every run sets, so the Temporal UI can filter runs by them. The server
// (or the operator, on an existing cluster) registers them: see SearchAttributes.
var (
	AttrJob           = temporal.NewSearchAttributeKeyKeyword("ReplctlJob")
	AttrPhase         = temporal.NewSearchAttributeKeyKeyword("ReplctlPhase")
	AttrAgent         = temporal.NewSearchAttributeKeyKeyword("ReplctlAgent")
	AttrSourceStorage = temporal.NewSearchAttributeKeyKeyword("ReplctlSourceStorage")
	AttrTargetStorage = temporal.NewSearchAttributeKeyKeyword("ReplctlTargetStorage")
	AttrQuiescedHost  = temporal.NewSearchAttributeKeyKeyword("ReplctlQuiescedHost")
)

// SearchAttributes lists the custom search attributes with their types, for registration.
func SearchAttributes() map[string]enums.IndexedValueType {
	m := map[string]enums.IndexedValueType{}
	for _, k := range []temporal.SearchAttributeKeyKeyword{AttrJob, AttrPhase, AttrAgent, AttrSourceStorage, AttrTargetStorage, AttrQuiescedHost} {
		m[k.GetName()] = enums.INDEXED_VALUE_TYPE_KEYWORD
	}
	return m
}
