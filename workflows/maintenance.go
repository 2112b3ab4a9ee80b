package workflows

import (
	"strings"

	"go.temporal.io/sdk/workflow"

	"github.com/replctl/replctl/activities"
)

// MaintenanceWorkflowName is the workflow that maintains a job's repository (index
// compaction; with Full, garbage collection of data no image refers to, e.g. what killed
// pushes left). Its workflow ID is per repository (MaintenanceID), so a repository has
// exactly one maintainer at a time even when several jobs share it.
const MaintenanceWorkflowName = "RepositoryMaintenance"

// MaintenanceID is the workflow ID of the maintenance of the repository at path inside
// storage. Storage and path are escaped (idPart) so that two repositories never share an
// ID: the ID is what keeps a repository to one maintainer at a time.
func MaintenanceID(storage, path string) string {
	return maintenanceIDPrefix + idPart(storage) + "-" + idPart(path)
}

const maintenanceIDPrefix = "replctl-maintenance-"

// hexDigits writes idPart's escapes (not fmt: workflowcheck rejects fmt in workflow code).
const hexDigits = "0123456789ABCDEF"

// LegacyMaintenanceID is MaintenanceID before storage and path were escaped: "/" and "."
// became "_" and "-" stayed, so e.g. storage "a-b" with path "c" and storage "a" with path
// "b-c" shared an ID. Only for runs recorded then (workflow.GetVersion) and for telling
// an operator which old schedule a new one replaces.
func LegacyMaintenanceID(storage, path string) string {
	return maintenanceIDPrefix + storage + "-" + strings.NewReplacer("/", "_", ".", "_").Replace(path)
}

// idPart escapes s for an ID with "-" as separator: bytes outside [A-Za-z0-9._] become
// %XX (so "-", "/" and "%" never appear unescaped), which makes the mapping one-to-one.
func idPart(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&0xf])
	}
	return b.String()
}

// MaintenanceInput names a job using the repository (for its plan) and the kind of
// maintenance.
type MaintenanceInput struct {
	Job  string `json:"job"`
	Full bool   `json:"full"`
}

// MaintenanceResult says which agent maintained the repository.
type MaintenanceResult struct {
	Status Status                    `json:"status"`
	Result activities.MaintainResult `json:"result"`
}

// Maintenance plans the job and runs Maintain on the job's target order (those agents see
// the repository), with the same takeover protocol as a replication step.
func Maintenance(ctx workflow.Context, in MaintenanceInput) (MaintenanceResult, error) {
	w, err := newReplication(ctx, in.Job)
	if err != nil {
		return MaintenanceResult{}, err
	}
	var res activities.MaintainResult
	err = w.setup(ctx)
	if err == nil {
		w.setPhase(ctx, "maintaining")
		err = w.onRole(ctx, w.roles.target, "maintain", func(ctx workflow.Context, agent string, _ *activities.Progress) error {
			repo, err := w.plan.Repo(agent)
			if err != nil {
				return nonRetryable(err)
			}
			return workflow.ExecuteActivity(ctx, activities.MaintainName, activities.MaintainInput{
				Job: w.plan.Job, Agent: agent, Full: in.Full,
				Repo: repo,
			}).Get(ctx, &res)
		})
	}
	w.status.FinishedAt = workflow.Now(ctx)
	if err != nil {
		w.status.Error = rootMessage(err)
		w.setPhase(workflowDisconnected(ctx), endPhase(ctx, err))
	} else {
		w.setPhase(ctx, PhaseCompleted)
	}
	return MaintenanceResult{Status: w.status, Result: res}, err
}
