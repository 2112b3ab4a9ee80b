package schedsync

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"go.temporal.io/sdk/client"

	"github.com/replctl/replctl/workflows"
)

// The values of Change.Change.
const (
	Created   = "created"
	Updated   = "updated"
	Deleted   = "deleted"
	Unchanged = "unchanged"
	// Described is the step that failed when sync could not read a schedule.
	Described = "describe"
)

// Change is one thing sync did (or, with a dry run, would do): a row of its report.
type Change struct {
	Job        string `json:"job,omitempty"`
	ScheduleID string `json:"schedule_id"`
	// Repository is set on a repository's maintenance schedule (storage:path); Job owns it.
	Repository string `json:"repository,omitempty"`
	// Change is created, updated, deleted or unchanged (describe when reading it failed).
	Change string `json:"change"`
	Detail string `json:"detail,omitempty"`
	Paused bool   `json:"paused,omitempty"`
	Error  string `json:"error,omitempty"`
}

// Observed is what the server has of the schedules a Desired names, and which IDs it lists.
type Observed struct {
	// Schedules holds the server's description of a Want's schedule; a Want whose ID has
	// none (or nil) is not on the server.
	Schedules map[string]*client.ScheduleDescription
	// Errs holds why a Want's schedule could not be described.
	Errs map[string]error
	// Listed are the IDs in the server's list: all of them, or those before ListErr.
	Listed []string
	// ListErr tells why the list could not be read (to the end).
	ListErr error
}

// OpKind is what an Op does to the server.
type OpKind int

// The kinds of Op. Sync never pauses or unpauses: an operator's pause survives it.
const (
	// Keep leaves a schedule that matches the config as it is.
	Keep OpKind = iota
	Create
	Update
	Delete
	// Fail reports a schedule sync cannot plan for (it could not be read, or the config's
	// schedule cannot be made).
	Fail
)

// Op is one step of a Plan.
type Op struct {
	Kind OpKind
	// Report is the row sync reports for the step.
	Report Change
	// Options is the schedule to create, or to update to.
	Options *client.ScheduleOptions
	// Err is why a Fail step fails.
	Err error
	// Listed marks the delete of a schedule found only in the server's list. The list lags
	// behind deletions, so such a schedule may be gone already: that is not reported.
	Listed bool
}

// Plan is what sync does, in the order it reports it.
type Plan struct {
	Ops []Op
	// ListErr is why the server's list could not be read: schedules past it are not deleted.
	ListErr error
}

// Diff plans the steps that make the server (o) match the config (d): create the missing
// schedules, update those that differ, delete those the config asks not to have, and delete
// the listed replctl schedules that the config no longer names.
func Diff(d Desired, o Observed) Plan {
	var p Plan
	planned := map[string]bool{}
	add := func(op Op) {
		p.Ops = append(p.Ops, op)
		planned[op.Report.ScheduleID] = true
	}
	for _, w := range d.Wants {
		row := Change{Job: w.Job, ScheduleID: w.ID, Repository: w.Repository}
		desc := o.Schedules[w.ID]
		switch err := o.Errs[w.ID]; {
		case err != nil:
			row.Change = Described
			add(Op{Kind: Fail, Report: row, Err: err})
		case w.Options == nil && w.Err == nil:
			if desc != nil {
				row.Change, row.Detail = Deleted, w.Absent
				add(Op{Kind: Delete, Report: row})
			}
		case w.Err != nil:
			row.Change = Created
			add(Op{Kind: Fail, Report: row, Err: w.Err})
		case desc == nil:
			row.Change, row.Detail = Created, w.Summary
			add(Op{Kind: Create, Report: row, Options: w.Options})
		default:
			row.Paused = desc.Schedule.State != nil && desc.Schedule.State.Paused
			if diff := Differences(desc, w); len(diff) > 0 {
				row.Change, row.Detail = Updated, strings.Join(diff, "; ")
				add(Op{Kind: Update, Report: row, Options: w.Options})
			} else {
				row.Change, row.Detail = Unchanged, w.Summary
				add(Op{Kind: Keep, Report: row})
			}
		}
	}

	// Schedules of jobs (and repositories) that are no longer in the config. The list is
	// eventually consistent; the loop above already planned for everything the config names.
	for _, id := range o.Listed {
		if !Owned(id) || planned[id] {
			continue
		}
		row := Change{ScheduleID: id, Change: Deleted, Detail: "repository maintenance: no job of the config uses the repository"}
		if strings.HasPrefix(id, workflows.MaintenanceSchedulePrefix) {
			if cur, ok := d.Legacy[id]; ok {
				row.Detail = "repository maintenance: replaced by " + cur + " (IDs now escape storage and path)"
			}
		} else {
			row.Job, row.Detail = strings.TrimPrefix(id, JobPrefix), "job is not in the config"
			if slices.ContainsFunc(d.Wants, func(w Want) bool { return w.ID == id }) {
				row.Detail = "job has no schedule in the config"
			}
		}
		add(Op{Kind: Delete, Report: row, Listed: true})
	}
	p.ListErr = o.ListErr
	return p
}

// Differences lists what differs between a described schedule and the wanted one w (whose
// Options must be set); nil when they match.
func Differences(d *client.ScheduleDescription, w Want) []string {
	want, fp := w.Options, w.Fingerprint
	var diff []string
	s := d.Schedule
	if got := actionFingerprint(s.Action); got != fp.String() {
		if got == "" {
			diff = append(diff, "not made by this version of replctl sync")
		} else {
			var old Fingerprint
			_ = json.Unmarshal([]byte(got), &old)
			diff = append(diff, fingerprintDiff(old, fp)...)
			if len(diff) == 0 {
				diff = append(diff, "spec changed")
			}
		}
	}
	a, ok := s.Action.(*client.ScheduleWorkflowAction)
	switch {
	case !ok:
		diff = append(diff, "action is not a workflow start")
	default:
		if name, _ := a.Workflow.(string); name != fp.Workflow {
			diff = append(diff, fmt.Sprintf("workflow %q -> %q", name, fp.Workflow))
		}
		if a.TaskQueue != fp.TaskQueue {
			diff = append(diff, fmt.Sprintf("task queue %q -> %q", a.TaskQueue, fp.TaskQueue))
		}
	}
	// Edits made outside replctl (e.g. in the Temporal UI) are undone too.
	if p := s.Policy; p != nil {
		if p.Overlap != want.Overlap {
			diff = append(diff, fmt.Sprintf("overlap %s -> %s (changed outside replctl)", OverlapName(p.Overlap), fp.Overlap))
		}
		if p.PauseOnFailure != want.PauseOnFailure {
			diff = append(diff, fmt.Sprintf("pause_on_failure %t -> %t (changed outside replctl)", p.PauseOnFailure, want.PauseOnFailure))
		}
		if want.CatchupWindow > 0 && p.CatchupWindow != want.CatchupWindow {
			diff = append(diff, fmt.Sprintf("catchup_window %s -> %s (changed outside replctl)", p.CatchupWindow, want.CatchupWindow))
		}
	}
	if sp := s.Spec; sp != nil {
		if sp.TimeZoneName != want.Spec.TimeZoneName && !(sp.TimeZoneName == "" && want.Spec.TimeZoneName == "UTC") {
			diff = append(diff, fmt.Sprintf("time_zone %q -> %q (changed outside replctl)", sp.TimeZoneName, want.Spec.TimeZoneName))
		}
		if sp.Jitter != want.Spec.Jitter {
			diff = append(diff, fmt.Sprintf("jitter %s -> %s (changed outside replctl)", sp.Jitter, want.Spec.Jitter))
		}
	}
	return dedupe(diff)
}

func dedupe(s []string) []string {
	var out []string
	for _, v := range s {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

func fingerprintDiff(old, cur Fingerprint) []string {
	var d []string
	add := func(field, a, b string) {
		if a != b {
			d = append(d, fmt.Sprintf("%s %q -> %q", field, a, b))
		}
	}
	add("cron", old.Cron, cur.Cron)
	add("time_zone", old.TimeZone, cur.TimeZone)
	add("overlap", old.Overlap, cur.Overlap)
	add("catchup_window", old.CatchupWindow, cur.CatchupWindow)
	add("jitter", old.Jitter, cur.Jitter)
	add("pause_on_failure", strconv.FormatBool(old.PauseOnFailure), strconv.FormatBool(cur.PauseOnFailure))
	add("task_queue", old.TaskQueue, cur.TaskQueue)
	add("workflow", old.Workflow, cur.Workflow)
	add("job", old.Job, cur.Job)
	add("full", strconv.FormatBool(old.Full), strconv.FormatBool(cur.Full))
	return d
}
