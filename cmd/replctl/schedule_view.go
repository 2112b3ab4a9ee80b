package main

import (
	"strconv"
	"strings"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/internal/schedsync"
	"github.com/replctl/replctl/workflows"
)

// scheduleView is what describe and list show of a schedule.
type scheduleView struct {
	Job        string `json:"job"`
	ScheduleID string `json:"schedule_id"`
	// Repository is set on a repository's maintenance schedule (storage:path); Job owns it.
	Repository string `json:"repository,omitempty"`
	// InConfig tells whether the config has a schedule for the job.
	InConfig bool `json:"in_config"`
	// Synced is false when the schedule differs from the config (run schedule sync).
	Synced bool `json:"synced"`
	// Cron is the cron string the schedule was synced from.
	Cron           string               `json:"cron,omitempty"`
	Spec           string               `json:"spec"`
	TimeZone       string               `json:"time_zone,omitempty"`
	Overlap        string               `json:"overlap"`
	CatchupWindow  string               `json:"catchup_window,omitempty"`
	Jitter         string               `json:"jitter,omitempty"`
	PauseOnFailure bool                 `json:"pause_on_failure"`
	Paused         bool                 `json:"paused"`
	Note           string               `json:"note,omitempty"`
	Workflow       string               `json:"workflow"`
	TaskQueue      string               `json:"task_queue"`
	Actions        int                  `json:"actions"`
	SkippedOverlap int                  `json:"skipped_overlap"`
	MissedCatchup  int                  `json:"missed_catchup"`
	Running        []string             `json:"running,omitempty"`
	Recent         []scheduleActionView `json:"recent_actions,omitempty"`
	Next           []time.Time          `json:"next_action_times,omitempty"`
	Created        time.Time            `json:"created,omitzero"`
	Updated        time.Time            `json:"updated,omitzero"`
	// Differences lists what sync would change.
	Differences []string `json:"differences,omitempty"`
}

type scheduleActionView struct {
	ScheduleTime time.Time `json:"schedule_time"`
	ActualTime   time.Time `json:"actual_time"`
	WorkflowID   string    `json:"workflow_id,omitempty"`
	RunID        string    `json:"run_id,omitempty"`
}

func newScheduleView(cfg *config.Config, job string, d *client.ScheduleDescription) *scheduleView {
	s := d.Schedule
	v := &scheduleView{Job: job, ScheduleID: workflows.ScheduleID(job)}
	if fp, ok := schedsync.ReadFingerprint(s.Action); ok {
		v.Cron = fp.Cron
	}
	if sp := s.Spec; sp != nil {
		v.Spec = formatSpec(sp)
		v.TimeZone = sp.TimeZoneName
		if sp.Jitter > 0 {
			v.Jitter = sp.Jitter.String()
		}
	}
	if p := s.Policy; p != nil {
		v.Overlap = schedsync.OverlapName(p.Overlap)
		v.PauseOnFailure = p.PauseOnFailure
		if p.CatchupWindow > 0 {
			v.CatchupWindow = p.CatchupWindow.String()
		}
	}
	if st := s.State; st != nil {
		v.Paused, v.Note = st.Paused, st.Note
	}
	if a, ok := s.Action.(*client.ScheduleWorkflowAction); ok {
		v.Workflow, _ = a.Workflow.(string)
		v.TaskQueue = a.TaskQueue
	}
	i := d.Info
	v.Actions, v.SkippedOverlap, v.MissedCatchup = i.NumActions, i.NumActionsSkippedOverlap, i.NumActionsMissedCatchupWindow
	for _, r := range i.RunningWorkflows {
		v.Running = append(v.Running, r.WorkflowID)
	}
	for _, a := range i.RecentActions {
		av := scheduleActionView{ScheduleTime: a.ScheduleTime, ActualTime: a.ActualTime}
		if r := a.StartWorkflowResult; r != nil {
			av.WorkflowID, av.RunID = r.WorkflowID, r.FirstExecutionRunID
		}
		v.Recent = append(v.Recent, av)
	}
	v.Next = i.NextActionTimes
	v.Created, v.Updated = i.CreatedAt, i.LastUpdateAt
	if cfg != nil {
		if j, err := cfg.Job(job); err == nil && j.Schedule != nil {
			v.InConfig = true
			if w := schedsync.JobSchedule(cfg, j); w.Err == nil {
				v.Differences = schedsync.Differences(d, w)
			}
			v.Synced = len(v.Differences) == 0
		}
	}
	return v
}

// formatSpec renders a described spec (the server keeps calendars and intervals, not
// the cron string).
func formatSpec(sp *client.ScheduleSpec) string {
	var parts []string
	for _, in := range sp.Intervals {
		s := "@every " + shortDuration(in.Every)
		if in.Offset > 0 {
			s += "/" + shortDuration(in.Offset)
		}
		parts = append(parts, s)
	}
	for _, c := range sp.Calendars {
		parts = append(parts, formatCalendar(c))
	}
	parts = append(parts, sp.CronExpressions...)
	if len(parts) == 0 {
		return "(no times)"
	}
	return strings.Join(parts, " | ")
}

func formatCalendar(c client.ScheduleCalendarSpec) string {
	f := func(name string, rs []client.ScheduleRange) string {
		if len(rs) == 0 {
			return ""
		}
		var s []string
		for _, r := range rs {
			v := strconv.Itoa(r.Start)
			if r.End > r.Start {
				v += "-" + strconv.Itoa(r.End)
			}
			if r.Step > 1 {
				v += "/" + strconv.Itoa(r.Step)
			}
			s = append(s, v)
		}
		return name + "=" + strings.Join(s, ",")
	}
	var out []string
	for _, p := range []string{f("sec", c.Second), f("min", c.Minute), f("hour", c.Hour), f("dom", c.DayOfMonth), f("month", c.Month), f("dow", c.DayOfWeek), f("year", c.Year)} {
		if p != "" {
			out = append(out, p)
		}
	}
	s := strings.Join(out, " ")
	if c.Comment != "" {
		s += " # " + c.Comment
	}
	return s
}

// shortDuration prints 2s, 1h, 1h30m (time.Duration.String prints 1h0m0s).
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
