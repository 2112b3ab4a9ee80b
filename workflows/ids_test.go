package workflows

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/replctl/replctl/config"
)

// The formats are in recorded histories and on running servers: they never change.
func TestIDFormats(t *testing.T) {
	for _, c := range [][2]string{
		{WorkflowID("orders"), "replctl-orders"},
		{RestoreID("orders"), "replctl-restore.orders"},
		{VerifyID("orders"), "replctl-verify.orders"},
		{ImagesID("orders"), "replctl-images.orders"},
		{CheckID("orders"), "replctl-check.orders"},
		{CheckID(""), "replctl-check.*"},
		{TestFailoverID("orders", "t1"), "replctl-test-failover-orders-t1"},
		{MaintenanceID("array-b", "repo"), "replctl-maintenance-array%2Db-repo"},
		{LegacyMaintenanceID("array-b", ".r/x"), "replctl-maintenance-array-b-_r_x"},
		{ScheduleID("orders"), "replctl-schedule-orders"},
		{MaintenanceScheduleID("array-b", "repo"), "replctl-maintenance-schedule-array%2Db-repo"},
		{LegacyMaintenanceScheduleID("array-b", ".r/x"), "replctl-maintenance-schedule-array-b-_r_x"},
		{MaintenanceSchedulePrefix, "replctl-maintenance-schedule-"},
		{HostQueue("a1"), "replctl-host-a1"},
		{AgentIdentity("a1"), "replctl-agent-a1"},
		{DefaultTaskQueue, "replctl"},
	} {
		assert.Equal(t, c[1], c[0])
	}
}

// For a set of names, no two IDs of different kinds (or of different names) are equal in
// any of Temporal's spaces, and every inverse gives back the name, or refuses an ID of
// another kind. A job name that would collide is the config's to refuse
// (config.ReservedJobPrefix); this test is what ties that list to the kinds here.
func TestIDsAreDistinctAndInvert(t *testing.T) {
	jobs := []string{"orders", "a", "a-b", "b", "0", "x_y", "maintenance", "schedule", "test-failover",
		"verify", "images", "restore", "host-a1", "agent-a1", "orders-2026"}
	hosts := []string{"a1", "b1", "host", "agent", "a-b", "replctl"}
	repos := [][2]string{{"array-b", ".replctl/repository"}, {"a-b", "c"}, {"a", "b-c"}, {"schedule", "x"}, {"s", "repo"}}
	copies := []string{"test", "t1"}

	// Every ID in one space, with what it is; a second ID with the same text fails.
	type space map[string]string
	add := func(s space, id, what string) {
		t.Helper()
		if other, dup := s[id]; dup {
			t.Errorf("%s and %s share the ID %q", other, what, id)
		}
		s[id] = what
	}
	workflowIDs, scheduleIDs, queues, identities := space{}, space{}, space{}, space{}
	var notJobs []string // workflow IDs of other kinds
	other := func(id, what string) {
		add(workflowIDs, id, what)
		notJobs = append(notJobs, id)
	}
	for _, j := range jobs {
		add(workflowIDs, WorkflowID(j), "run of "+j)
		other(RestoreID(j), "restore of "+j)
		other(VerifyID(j), "verify of "+j)
		other(ImagesID(j), "images of "+j)
		other(CheckID(j), "check of "+j)
		for _, c := range copies {
			other(TestFailoverID(j, c), "test failover "+c+" of "+j)
		}
		add(scheduleIDs, ScheduleID(j), "schedule of "+j)
		// A schedule's runs get its ID and the time (the ScheduledReplication trigger).
		other(ScheduleID(j)+"-2026-01-02T03:04:05Z", "scheduled trigger of "+j)
	}
	for _, r := range repos {
		other(MaintenanceID(r[0], r[1]), "maintenance of "+r[0]+":"+r[1])
		other(MaintenanceScheduleID(r[0], r[1])+"-2026-01-02T03:04:05Z", "scheduled maintenance trigger of "+r[0]+":"+r[1])
		add(scheduleIDs, MaintenanceScheduleID(r[0], r[1]), "maintenance schedule of "+r[0]+":"+r[1])
		// Legacy IDs collide among themselves (why they were replaced), never with a job's.
		notJobs = append(notJobs, LegacyMaintenanceID(r[0], r[1]))
		_, isJobSchedule := JobOfScheduleID(LegacyMaintenanceScheduleID(r[0], r[1]))
		assert.False(t, isJobSchedule, "legacy maintenance schedule of %v", r)
	}
	add(queues, DefaultTaskQueue, "the shared queue")
	for _, h := range hosts {
		add(queues, HostQueue(h), "queue of host "+h)
		add(identities, AgentIdentity(h), "agent of "+h)
	}

	for _, j := range jobs {
		got, ok := JobOfWorkflowID(WorkflowID(j))
		assert.True(t, ok && got == j, "JobOfWorkflowID(WorkflowID(%q)) = %q, %t", j, got, ok)
		got, ok = JobOfScheduleID(ScheduleID(j))
		assert.True(t, ok && got == j, "JobOfScheduleID(ScheduleID(%q)) = %q, %t", j, got, ok)
	}
	for _, id := range notJobs {
		job, ok := JobOfWorkflowID(id)
		assert.False(t, ok, "JobOfWorkflowID(%q) = %q: another kind's ID reads as a job's", id, job)
		// And the config refuses the job name that would have this ID.
		if name := id[len(WorkflowID("")):]; jobName.MatchString(name) {
			prefix, _ := config.ReservedJobPrefix(name)
			assert.NotEmpty(t, prefix, "config accepts job %q, whose runs would have ID %q", name, id)
		}
	}
	for id := range scheduleIDs {
		if job, ok := JobOfScheduleID(id); ok {
			assert.Equal(t, ScheduleID(job), id)
		}
		// Schedules are a space of their own, but a job's run ID that reads as a schedule's
		// ID misleads whoever reads both (the Web UI, replctl list): refused too.
		if name := id[len(WorkflowID("")):]; jobName.MatchString(name) {
			prefix, _ := config.ReservedJobPrefix(name)
			assert.NotEmpty(t, prefix, "config accepts job %q, whose runs' ID is schedule ID %q", name, id)
		}
	}
	for _, h := range hosts {
		got, ok := HostOfQueue(HostQueue(h))
		assert.True(t, ok && got == h, "HostOfQueue(HostQueue(%q)) = %q, %t", h, got, ok)
		got, ok = HostOfIdentity(AgentIdentity(h))
		assert.True(t, ok && got == h, "HostOfIdentity(AgentIdentity(%q)) = %q, %t", h, got, ok)
	}
	for _, q := range []string{DefaultTaskQueue, "replctl-prod", HostQueue(""), WorkflowID("a1")} {
		_, ok := HostOfQueue(q)
		assert.False(t, ok, "HostOfQueue(%q)", q)
	}
	for _, id := range []string{"", "1234@somehost", AgentIdentity(""), HostQueue("a1")} {
		_, ok := HostOfIdentity(id)
		assert.False(t, ok, "HostOfIdentity(%q)", id)
	}
	for _, id := range []string{"", "orders", WorkflowID(""), WorkflowID("Orders"), "sneaky-orders"} {
		_, ok := JobOfWorkflowID(id)
		assert.False(t, ok, "JobOfWorkflowID(%q)", id)
	}
	require.Equal(t, config.ReservedTaskQueuePrefix, HostQueue(""), "config's reserved queue prefix is the host queues'")
}
