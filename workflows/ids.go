package workflows

// Every name replctl gives Temporal objects: workflow IDs, schedule IDs, task queues and
// agent identities, with their inverses. Nothing else in replctl's code spells them out
// (a host's queue is in internal/ids, re-exported here; config keeps the reserved
// prefixes as data).
//
// Recorded histories (test/testdata) and running deployments depend on these formats:
// never change one. A job's runs are "replctl-<job>"; every other workflow ID is
// "replctl-<kind>" followed by "." (never in a name, so never a job's ID) or by "-" (then
// config refuses job names beginning with "<kind>-": config.ReservedJobPrefix). A new kind
// gets a prefix of its own and a case in ids_test.go, which checks the two agree.

import (
	"strings"

	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/internal/ids"
)

// idPrefix begins every workflow ID, schedule ID, host queue and agent identity.
const idPrefix = "replctl-"

const (
	restoreIDPrefix           = idPrefix + "restore."
	verifyIDPrefix            = idPrefix + "verify."
	imagesIDPrefix            = idPrefix + "images."
	checkIDPrefix             = idPrefix + "check."
	maintenanceIDPrefix       = idPrefix + "maintenance-"
	testFailoverIDPrefix      = idPrefix + "test-failover-"
	scheduleIDPrefix          = idPrefix + "schedule-"
	agentIdentityPrefix       = idPrefix + "agent-"
	MaintenanceSchedulePrefix = idPrefix + "maintenance-schedule-" // begins the ID of every repository maintenance schedule
)

// DefaultTaskQueue is the shared queue every agent's workflow worker polls (config
// temporal.task_queue may name another).
const DefaultTaskQueue = config.DefaultTaskQueue

// WorkflowID is the ID of a job's runs: one per job, so two runs of a job never overlap.
func WorkflowID(job string) string { return idPrefix + job }

// JobOfWorkflowID reverses WorkflowID: ok is false for an ID that is not a job's run ID,
// such as another workflow's (verify, maintenance, test failover, ...).
func JobOfWorkflowID(id string) (job string, ok bool) { return jobAfter(idPrefix, id) }

// jobAfter is the job named by id after prefix: ok only if the rest may be a job's name
// (the config's name rule, and none of the prefixes config reserves for other IDs).
func jobAfter(prefix, id string) (job string, ok bool) {
	job, ok = strings.CutPrefix(id, prefix)
	if reserved, _ := config.ReservedJobPrefix(job); !ok || !jobName.MatchString(job) || reserved != "" {
		return "", false
	}
	return job, true
}

// RestoreID is the workflow ID of a job's restore ("." is in no job name).
func RestoreID(job string) string { return restoreIDPrefix + job }

// VerifyID is the workflow ID of a job's verification. "." is not in job names, so it never
// is a replication's ID (WorkflowID).
func VerifyID(job string) string { return verifyIDPrefix + job }

// ImagesID is the workflow ID of a listing of a job's images ("." is in no job name).
func ImagesID(job string) string { return imagesIDPrefix + job }

// CheckID is the workflow ID of `replctl check` of job's hosts; CheckID("") checks every
// host ("replctl-check.*"). Neither "." nor "*" is in a job name.
func CheckID(job string) string {
	if job == "" {
		job = "*"
	}
	return checkIDPrefix + job
}

// TestFailoverID is the workflow ID of a job's test failover named name. (Ambiguous when
// names contain "-": job "a" with name "b-c" and job "a-b" with name "c" share an ID. The
// format is in recorded histories, so it stays; it has no inverse.)
func TestFailoverID(job, name string) string { return testFailoverIDPrefix + job + "-" + name }

// MaintenanceID is the workflow ID of the maintenance of the repository at path inside
// storage. Storage and path are escaped (idPart) so that two repositories never share an
// ID: the ID is what keeps a repository to one maintainer at a time.
func MaintenanceID(storage, path string) string {
	return maintenanceIDPrefix + idPart(storage) + "-" + idPart(path)
}

// LegacyMaintenanceID is MaintenanceID before storage and path were escaped: "/" and "."
// became "_" and "-" stayed, so e.g. storage "a-b" with path "c" and storage "a" with path
// "b-c" shared an ID. Only for runs recorded then (workflow.GetVersion) and for telling
// an operator which old schedule a new one replaces.
func LegacyMaintenanceID(storage, path string) string {
	return maintenanceIDPrefix + storage + "-" + strings.NewReplacer("/", "_", ".", "_").Replace(path)
}

// hexDigits writes idPart's escapes (not fmt: workflowcheck rejects fmt in workflow code).
const hexDigits = "0123456789ABCDEF"

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

// ScheduleID is the ID of a job's Temporal Schedule. ScheduleID("") is the prefix of every
// job's schedule (not of maintenance schedules: MaintenanceSchedulePrefix).
func ScheduleID(job string) string { return scheduleIDPrefix + job }

// JobOfScheduleID reverses ScheduleID: ok is false for an ID that is not a job's schedule.
func JobOfScheduleID(id string) (job string, ok bool) { return jobAfter(scheduleIDPrefix, id) }

// MaintenanceScheduleID is the ID of the maintenance schedule of the repository at path
// inside storage. Its prefix differs from ScheduleID's, so no job name can collide with it.
func MaintenanceScheduleID(storage, path string) string {
	return MaintenanceSchedulePrefix + strings.TrimPrefix(MaintenanceID(storage, path), maintenanceIDPrefix)
}

// LegacyMaintenanceScheduleID is MaintenanceScheduleID before storage and path were escaped
// (see LegacyMaintenanceID); schedule sync replaces such a schedule.
func LegacyMaintenanceScheduleID(storage, path string) string {
	return MaintenanceSchedulePrefix + strings.TrimPrefix(LegacyMaintenanceID(storage, path), maintenanceIDPrefix)
}

// HostQueue is the task queue an agent polls for the activities of its host. HostQueue("")
// is the prefix of every host queue. (Defined in internal/ids: activities needs it too.)
func HostQueue(host string) string { return ids.HostQueue(host) }

// HostOfQueue reverses HostQueue: ok is false for a queue that is no host's.
func HostOfQueue(q string) (host string, ok bool) { return ids.HostOfQueue(q) }

// AgentIdentity is the worker identity of host's agent, shown in the Web UI and recorded in
// histories as who started each activity.
func AgentIdentity(host string) string { return agentIdentityPrefix + host }

// HostOfIdentity reverses AgentIdentity: ok is false for an identity that is no agent's
// (another client's, or an agent given an identity of its own).
func HostOfIdentity(identity string) (host string, ok bool) {
	host, ok = strings.CutPrefix(identity, agentIdentityPrefix)
	return host, ok && host != ""
}
