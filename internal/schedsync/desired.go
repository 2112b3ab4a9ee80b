// Package schedsync makes the Temporal server's schedules match the config, in three steps:
// FromConfig computes the desired state (pure), Diff turns it and what the server has
// (Observed) into a Plan (pure), and Apply carries the plan out against a narrow Client.
// Sync does all three; `replctl schedule sync` and `replctl dev` use it.
package schedsync

import (
	"encoding/json"
	"fmt"
	"strings"

	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"

	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/workflows"
)

// JobPrefix begins the ID of every job's schedule: sync deletes only schedules with this
// prefix or workflows.MaintenanceSchedulePrefix, never somebody else's.
var JobPrefix = workflows.ScheduleID("")

// Owned tells whether the schedule with this ID is one of replctl's (a job's or a
// repository's maintenance schedule).
func Owned(id string) bool {
	return strings.HasPrefix(id, JobPrefix) || strings.HasPrefix(id, workflows.MaintenanceSchedulePrefix)
}

// specMemoKey is the memo field of a schedule's workflow action that holds the config the
// schedule was last synced from. The server compiles cron strings into calendars, so the
// described spec cannot be compared with the config; this fingerprint can. It lives on the
// action because, unlike the schedule's own memo, the action can be updated.
const specMemoKey = "replctl_schedule"

// Fingerprint is what a schedule was synced from (stored in the action's memo).
type Fingerprint struct {
	Cron           string `json:"cron"`
	TimeZone       string `json:"time_zone"`
	Overlap        string `json:"overlap"`
	CatchupWindow  string `json:"catchup_window,omitempty"`
	Jitter         string `json:"jitter,omitempty"`
	PauseOnFailure bool   `json:"pause_on_failure,omitempty"`
	TaskQueue      string `json:"task_queue"`
	Workflow       string `json:"workflow"`
	// Job and Full: the owner job and kind of a repository's maintenance schedule.
	Job  string `json:"job,omitempty"`
	Full bool   `json:"full,omitempty"`
}

// String is the fingerprint as stored in the memo (JSON).
func (fp Fingerprint) String() string {
	b, _ := json.Marshal(fp)
	return string(b)
}

// Summary is the one-line description sync reports for a schedule it created or kept.
func (fp Fingerprint) Summary() string {
	s := fmt.Sprintf("cron %q %s, overlap %s", fp.Cron, fp.TimeZone, fp.Overlap)
	if fp.CatchupWindow != "" {
		s += ", catchup " + fp.CatchupWindow
	}
	if fp.Jitter != "" {
		s += ", jitter " + fp.Jitter
	}
	if fp.PauseOnFailure {
		s += ", pause on failure"
	}
	return s
}

// JobFingerprint is the fingerprint of a job's schedule s, with the config's defaults filled in.
func JobFingerprint(s *config.Schedule, taskQueue string) Fingerprint {
	fp := Fingerprint{Cron: s.Cron, TimeZone: s.TimeZone, Overlap: s.Overlap, PauseOnFailure: s.PauseOnFailure, TaskQueue: taskQueue, Workflow: workflows.ScheduledWorkflowName}
	if fp.TimeZone == "" {
		fp.TimeZone = config.DefaultTimeZone
	}
	if fp.Overlap == "" {
		fp.Overlap = config.DefaultOverlap
	}
	if s.CatchupWindow > 0 {
		fp.CatchupWindow = s.CatchupWindow.String()
	}
	if s.Jitter > 0 {
		fp.Jitter = s.Jitter.String()
	}
	return fp
}

// ReadFingerprint reads the fingerprint sync stored on a described schedule's action; ok
// is false when there is none (a schedule sync did not make) or it does not decode.
func ReadFingerprint(a client.ScheduleAction) (fp Fingerprint, ok bool) {
	s := actionFingerprint(a)
	if s == "" {
		return fp, false
	}
	return fp, json.Unmarshal([]byte(s), &fp) == nil
}

// actionFingerprint reads the sync fingerprint from a described action ("" if none).
func actionFingerprint(a client.ScheduleAction) string {
	wa, ok := a.(*client.ScheduleWorkflowAction)
	if !ok {
		return ""
	}
	var s string
	switch v := wa.Memo[specMemoKey].(type) {
	case string:
		s = v
	case *commonpb.Payload:
		// Described memos come back as payloads.
		_ = converter.GetDefaultDataConverter().FromPayload(v, &s)
	}
	return s
}

// clearMemo encodes a memo value with the SDK's default converter, so that a payload codec
// leaves it as it is: schedule fingerprints (cron, time zone, policies, job name) hold
// nothing secret, and every replctl reads them back whatever its codec key.
func clearMemo(s string) *commonpb.Payload {
	p, err := converter.GetDefaultDataConverter().ToPayload(s)
	if err != nil {
		panic(err) // a string always encodes
	}
	return p
}

// OverlapPolicy is the Temporal overlap policy of a config spelling (config.OverlapPolicies).
func OverlapPolicy(s string) (enums.ScheduleOverlapPolicy, error) {
	switch s {
	case "skip":
		return enums.SCHEDULE_OVERLAP_POLICY_SKIP, nil
	case "buffer_one":
		return enums.SCHEDULE_OVERLAP_POLICY_BUFFER_ONE, nil
	case "buffer_all":
		return enums.SCHEDULE_OVERLAP_POLICY_BUFFER_ALL, nil
	case "cancel_other":
		return enums.SCHEDULE_OVERLAP_POLICY_CANCEL_OTHER, nil
	case "terminate_other":
		return enums.SCHEDULE_OVERLAP_POLICY_TERMINATE_OTHER, nil
	case "allow_all":
		return enums.SCHEDULE_OVERLAP_POLICY_ALLOW_ALL, nil
	}
	return 0, fmt.Errorf("%q is not an overlap policy (want one of %s)", s, strings.Join(config.OverlapPolicies, ", "))
}

// OverlapName is the config spelling of a Temporal overlap policy. The only one the config
// cannot spell is unspecified: the API prints it "Unspecified" (older versions
// "SCHEDULE_OVERLAP_POLICY_UNSPECIFIED"), so lower case is its snake_case name.
func OverlapName(p enums.ScheduleOverlapPolicy) string {
	for _, n := range config.OverlapPolicies {
		if q, _ := OverlapPolicy(n); q == p {
			return n
		}
	}
	return strings.ToLower(strings.TrimPrefix(p.String(), "SCHEDULE_OVERLAP_POLICY_"))
}

// Want is what the config says about one schedule: that it exists as Options, or (Options
// nil) that it does not.
type Want struct {
	ID string
	// Job is the job of the schedule; of a maintenance schedule, the job that owns it (the
	// first one using the repository, whose target order does the work).
	Job string
	// Repository is storage:path of a repository's maintenance schedule, "" for a job's.
	Repository string
	// Options is the schedule the config asks for; nil when it asks for none.
	Options *client.ScheduleOptions
	// Fingerprint is what Options was made from (stored in its action's memo).
	Fingerprint Fingerprint
	// Summary is the report's detail when sync creates or keeps the schedule.
	Summary string
	// Absent is the report's detail when sync deletes the schedule (Options nil).
	Absent string
	// Err tells why the config's schedule cannot be made; sync reports it and goes on.
	Err error
}

// Desired is the state of the server's schedules the config asks for.
type Desired struct {
	// Wants has a Want for each job of the config, then one for each repository, in the
	// config's order (the order sync reports them in).
	Wants []Want
	// Legacy maps the old (unescaped) IDs of the config's maintenance schedules to the
	// current ones, so that sync says why it deletes a schedule under an old ID.
	Legacy map[string]string
}

// FromConfig is the desired state of cfg's schedules: each job's and each repository's
// maintenance schedule.
func FromConfig(cfg *config.Config) Desired {
	d := Desired{Legacy: map[string]string{}}
	for i := range cfg.Jobs {
		d.Wants = append(d.Wants, JobSchedule(cfg, &cfg.Jobs[i]))
	}
	for _, u := range cfg.Repositories() {
		d.Wants = append(d.Wants, MaintenanceSchedule(cfg, u))
		if old, id := workflows.LegacyMaintenanceScheduleID(u.Storage, u.Path), workflows.MaintenanceScheduleID(u.Storage, u.Path); old != id {
			d.Legacy[old] = id
		}
	}
	return d
}

// JobSchedule is the schedule job j's config asks for (none when j has no schedule).
func JobSchedule(cfg *config.Config, j *config.Job) Want {
	w := Want{ID: workflows.ScheduleID(j.Name), Job: j.Name}
	s := j.Schedule
	if s == nil {
		w.Absent = "job has no schedule in the config"
		return w
	}
	fp := JobFingerprint(s, cfg.Temporal.TaskQueue)
	w.Fingerprint, w.Summary = fp, fp.Summary()
	overlap, err := OverlapPolicy(fp.Overlap)
	if err != nil {
		w.Err = fmt.Errorf("job %s: schedule.overlap: %w", j.Name, err)
		return w
	}
	w.Options = &client.ScheduleOptions{
		ID: w.ID,
		Spec: client.ScheduleSpec{
			CronExpressions: []string{s.Cron},
			TimeZoneName:    fp.TimeZone,
			Jitter:          s.Jitter,
		},
		Action: &client.ScheduleWorkflowAction{
			// The schedule appends the tick's time to this ID; the job's run itself gets
			// workflows.WorkflowID(job) from the ScheduledReplication workflow.
			ID:                    w.ID,
			Workflow:              workflows.ScheduledWorkflowName,
			Args:                  []any{workflows.ReplicationInput{Job: j.Name}},
			TaskQueue:             cfg.Temporal.TaskQueue,
			WorkflowTaskTimeout:   workflows.WorkflowTaskTimeout,
			Memo:                  map[string]any{specMemoKey: clearMemo(fp.String())},
			TypedSearchAttributes: temporal.NewSearchAttributes(workflows.AttrJob.ValueSet(j.Name)),
			StaticSummary:         "scheduled run of job " + j.Name,
		},
		Overlap:        overlap,
		CatchupWindow:  s.CatchupWindow,
		PauseOnFailure: s.PauseOnFailure,
		Memo:           map[string]any{"job": j.Name},
	}
	return w
}

// MaintenanceSchedule is the maintenance schedule of repository u (none when its cron is
// off): owned by the first job using it, whose target order does the work. Overlap is
// skip: one maintainer at a time.
func MaintenanceSchedule(cfg *config.Config, u config.RepositoryUse) Want {
	repo := u.Storage + ":" + u.Path
	w := Want{ID: workflows.MaintenanceScheduleID(u.Storage, u.Path), Job: u.Jobs[0], Repository: repo}
	m := u.Maintenance
	if m.Cron == config.MaintenanceOff {
		w.Absent = "repository maintenance is off in the config"
		return w
	}
	fp := Fingerprint{Cron: m.Cron, TimeZone: m.TimeZone, Overlap: config.DefaultOverlap, TaskQueue: cfg.Temporal.TaskQueue,
		Workflow: workflows.ScheduledMaintenanceWorkflowName, Job: u.Jobs[0], Full: !m.Quick}
	kind := "full"
	if m.Quick {
		kind = "quick"
	}
	w.Fingerprint, w.Summary = fp, "repository maintenance ("+kind+"), "+fp.Summary()
	w.Options = &client.ScheduleOptions{
		ID:   w.ID,
		Spec: client.ScheduleSpec{CronExpressions: []string{m.Cron}, TimeZoneName: m.TimeZone},
		Action: &client.ScheduleWorkflowAction{
			ID:                    w.ID,
			Workflow:              workflows.ScheduledMaintenanceWorkflowName,
			Args:                  []any{workflows.ScheduledMaintenanceInput{Job: u.Jobs[0], Storage: u.Storage, Path: u.Path, Full: !m.Quick}},
			TaskQueue:             cfg.Temporal.TaskQueue,
			WorkflowTaskTimeout:   workflows.WorkflowTaskTimeout,
			Memo:                  map[string]any{specMemoKey: clearMemo(fp.String())},
			TypedSearchAttributes: temporal.NewSearchAttributes(workflows.AttrJob.ValueSet(u.Jobs[0])),
			StaticSummary:         fmt.Sprintf("scheduled %s maintenance of repository %s (job %s)", kind, repo, u.Jobs[0]),
		},
		Overlap: enums.SCHEDULE_OVERLAP_POLICY_SKIP,
		Memo:    map[string]any{"repository": repo, "job": u.Jobs[0]},
	}
	return w
}
