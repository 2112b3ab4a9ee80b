package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/api/enums/v1"
	failurepb "go.temporal.io/api/failure/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/converter"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/internal/codec"
	"github.com/replctl/replctl/internal/runhistory"
	"github.com/replctl/replctl/workflows"
)

// HistoryOptions are the arguments and flags of `replctl history`.
type HistoryOptions struct {
	Job    string
	RunID  string
	Output string
}

// NewCmdHistory is `replctl history JOB [--run RUN]`.
func NewCmdHistory(f *Factory, runF func(*HistoryOptions) error) *cobra.Command {
	o := &HistoryOptions{}
	cmd := &cobra.Command{
		Use:   "history JOB",
		Short: "Show the steps of a run from its Temporal history: agent, host, timing, result, takeovers",
		Long: "Show every step (activity) of a run from its Temporal history: the step, the agent whose queue it\n" +
			"was sent to, the host it acted on (a takeover script runs on the failed host), start, duration\n" +
			"and result (ok, the error, or the timeout that made the next agent take over). Takeovers are\n" +
			"rows of their own.",
		Args:              exactArgs(1, "one job name"),
		ValidArgsFunction: completeJobs(f, false),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Job = args[0]
			if err := checkOutput(o.Output); err != nil {
				return err
			}
			if runF != nil {
				return runF(o)
			}
			return runHistory(cmd.Context(), f, o)
		},
	}
	cmd.Flags().StringVar(&o.RunID, "run", "", "run ID (default: the latest run)")
	addOutputFlag(cmd, &o.Output)
	return cmd
}

// historyView is a run's history as `replctl history` shows it.
type historyView struct {
	Job        string       `json:"job"`
	WorkflowID string       `json:"workflow_id"`
	RunID      string       `json:"run_id"`
	Status     string       `json:"status"`
	Start      time.Time    `json:"start"`
	End        time.Time    `json:"end,omitzero"`
	Error      string       `json:"error,omitempty"`
	Steps      []historyRow `json:"steps"`
}

// historyRow is one activity of a run, or (Kind "takeover") one move to the next agent.
type historyRow struct {
	Kind     string `json:"kind"` // step or takeover
	Step     string `json:"step"`
	Activity string `json:"activity,omitempty"`
	// Agent is the agent whose queue the step was sent to (for a takeover: the new agent).
	Agent string `json:"agent"`
	// Host is the host the step acted on: a takeover script runs on the failed host.
	Host      string    `json:"host,omitempty"`
	From      string    `json:"from,omitempty"` // takeover: the agent that lost the step
	Identity  string    `json:"worker_identity,omitempty"`
	TaskQueue string    `json:"task_queue,omitempty"`
	Attempt   int32     `json:"attempt,omitempty"`
	Scheduled time.Time `json:"scheduled,omitzero"`
	Started   time.Time `json:"started,omitzero"`
	Ended     time.Time `json:"ended,omitzero"`
	Duration  string    `json:"duration,omitempty"`
	// Result is ok, running, cancelled, the error message or the timeout.
	Result      string `json:"result"`
	OK          bool   `json:"ok"`
	ErrorType   string `json:"error_type,omitempty"`
	TimeoutType string `json:"timeout_type,omitempty"`
	Detail      string `json:"detail,omitempty"`

	activityID      string
	tookOver        string
	cancelRequested bool // "took over from X" of the step's summary
}

func runHistory(ctx context.Context, f *Factory, o *HistoryOptions) error {
	c, err := f.Client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	id := workflows.WorkflowID(o.Job)
	desc, err := c.DescribeWorkflowExecution(ctx, id, o.RunID)
	var nf *serviceerror.NotFound
	if errors.As(err, &nf) {
		if o.RunID != "" {
			return notFoundError("job %s has no run %s (workflow %s); `replctl list --job %s` shows its runs", o.Job, o.RunID, id, o.Job)
		}
		return notFoundError("job %s has no runs yet (no workflow %s): start one with `replctl start %s`", o.Job, id, o.Job)
	}
	if err != nil {
		return fmt.Errorf("describe run of job %s: %w", o.Job, err)
	}
	info := desc.GetWorkflowExecutionInfo()
	v := historyView{Job: o.Job, WorkflowID: id, RunID: info.GetExecution().GetRunId(), Status: executionStatusName(info.GetStatus()), Start: info.GetStartTime().AsTime()}
	events, err := runhistory.Events(ctx, c, id, v.RunID)
	if err != nil {
		return fmt.Errorf("read history of job %s run %s: %w", o.Job, v.RunID, err)
	}
	if err := checkCodecKey(f.DataConverter(), events); err != nil {
		return fmt.Errorf("read history of job %s run %s: %w", o.Job, v.RunID, err)
	}
	v.Steps, v.End, v.Error = historyRows(events, time.Now(), f.DataConverter())
	// A running activity's started event is written only when it ends: take it from the
	// pending activities.
	for _, pa := range desc.GetPendingActivities() {
		for i := range v.Steps {
			r := &v.Steps[i]
			if r.Kind == "step" && r.Result == "running" && r.activityID == pa.GetActivityId() && pa.GetState() == enums.PENDING_ACTIVITY_STATE_STARTED {
				r.Started = pa.GetLastStartedTime().AsTime()
				r.Identity = pa.GetLastWorkerIdentity()
				r.Attempt = pa.GetAttempt()
				r.Duration = time.Since(r.Started).Round(time.Millisecond).String()
			}
		}
	}
	return f.Render(o.Output, v, func(w io.Writer) { printHistory(w, v) })
}

// checkCodecKey fails when the run's input was encrypted with another payload codec key
// than dc's: every detail of the history would be missing, not just one.
func checkCodecKey(dc converter.DataConverter, events []*historypb.HistoryEvent) error {
	for _, e := range events {
		if a := e.GetWorkflowExecutionStartedEventAttributes(); a != nil && a.GetInput() != nil {
			var v any
			if err := dc.FromPayloads(a.GetInput(), &v); errors.Is(err, codec.ErrWrongKey) {
				return err
			}
		}
	}
	return nil
}

// historyRows turns a run's events into step rows (in schedule order) with takeover rows
// before the first step an agent ran in place of another.
// dc decodes the events' payloads (the connection's: with the payload codec when it is on).
func historyRows(events []*historypb.HistoryEvent, now time.Time, dc converter.DataConverter) (rows []historyRow, end time.Time, runErr string) {
	h := runhistory.Parse(events, dc)
	for _, a := range h.Attempts {
		r := historyRow{Kind: "step", Activity: a.Type, TaskQueue: a.Queue, Scheduled: a.Scheduled, Result: "running", activityID: a.ActivityID,
			Started: a.Started, Identity: a.Identity, Attempt: a.Attempt, Ended: a.Closed, cancelRequested: a.CancelRequested}
		describeInput(&r, a)
		if _, from, ok := strings.Cut(a.Summary, "(took over from "); ok {
			r.tookOver = strings.TrimSuffix(from, ")")
		}
		if a.ClosedBy != "" {
			r.Identity = a.ClosedBy
		}
		switch a.Outcome {
		case runhistory.Completed:
			r.Result, r.OK = "ok", true
			describeResult(&r, a.Result, dc)
		case runhistory.Failed:
			r.Result, r.ErrorType = failureMessage(a.Failure, dc)
		case runhistory.TimedOut:
			r.TimeoutType = enumName(a.TimeoutType.String(), "TIMEOUT_TYPE_")
			r.Result = "timeout: " + strings.ReplaceAll(r.TimeoutType, "_", "-") + " (" + timeoutMeaning(a.TimeoutType, r.Agent) + ")"
		case runhistory.Canceled:
			r.Result = "cancelled"
		}
		rows = append(rows, r)
	}
	end = h.End
	switch h.EndType {
	case enums.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
		runErr, _ = failureMessage(h.Failure, dc)
	case enums.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED:
		runErr = "cancelled"
	case enums.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED:
		runErr = "terminated: " + h.TerminateReason
	case enums.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT:
		runErr = "run timed out"
	}
	for i := range rows {
		r := &rows[i]
		from := r.Started
		if from.IsZero() {
			from = r.Scheduled
		}
		switch {
		case !r.Ended.IsZero():
			r.Duration = r.Ended.Sub(from).Round(time.Millisecond).String()
		case end.IsZero():
			r.Duration = now.Sub(from).Round(time.Millisecond).String()
		case r.cancelRequested:
			// The run did not wait for the step to acknowledge the cancellation.
			r.Result = "cancelled with the run"
		default:
			// The run ended without closing the step (e.g. terminated).
			r.Result = "abandoned when the run ended"
		}
	}
	return withTakeovers(rows), end, runErr
}

// withTakeovers inserts a takeover row before the first step an agent ran in place of
// another one (its summary says "took over from X"), with the reason the last step of X
// failed.
func withTakeovers(rows []historyRow) []historyRow {
	out := make([]historyRow, 0, len(rows))
	seen := map[string]bool{}
	for _, r := range rows {
		if r.tookOver != "" && !seen[r.tookOver+">"+r.Agent] {
			seen[r.tookOver+">"+r.Agent] = true
			t := historyRow{Kind: "takeover", Agent: r.Agent, From: r.tookOver, Host: r.tookOver, Scheduled: r.Scheduled, Started: r.Scheduled}
			for i := len(out) - 1; i >= 0; i-- {
				if p := out[i]; p.Kind == "step" && p.Agent == r.tookOver && !p.OK {
					t.Step, t.Result = p.Step, "took over: "+p.Result
					break
				}
			}
			if t.Result == "" {
				t.Step, t.Result = r.Step, "took over"
			}
			out = append(out, t)
		}
		out = append(out, r)
	}
	return out
}

// describeInput fills step, agent and host from an activity's input.
func describeInput(r *historyRow, a *runhistory.Attempt) {
	r.Agent, _ = workflows.HostOfQueue(r.TaskQueue)
	r.Host = r.Agent
	switch r.Activity {
	case activities.RunScriptName:
		if si := a.Script; si != nil {
			r.Step, r.Host = string(si.Step), si.Host.Name
			r.Detail = si.Script
			if si.FailedHost != "" {
				r.Detail += " of failed host " + si.FailedHost
			}
		}
	case activities.PullName:
		r.Step = string(a.Step)
		if pi := a.Pull; pi != nil {
			r.Detail = fmt.Sprintf("epoch %d", pi.Epoch)
			if pi.Defer || pi.InPlace {
				r.Detail += " dataset " + pi.Dataset
			}
		}
	case activities.PlanName:
		r.Step, r.Agent, r.Host = string(a.Step), "", ""
	case activities.PushName:
		r.Step = string(a.Step)
		if si := a.Script; si != nil {
			// The quiesce step's attempt, pushing too (one agent for both).
			r.Step = string(si.Step) + "+" + string(a.Step)
			if b := a.Before; b != nil {
				// It did the preflight and the precopy first.
				first := activities.StepPreflight
				if b.Precopy {
					first = activities.StepPrecopy
				}
				r.Step = string(first) + "+" + r.Step
			}
			if a.Thaw != nil {
				// It resumed the application once it pushed.
				r.Step += "+" + string(a.Thaw.Step)
			}
			r.Detail = si.Script
		} else if a.Before != nil {
			// A job that quiesces nothing: the push carried the preflight.
			r.Step = string(activities.StepPreflight) + "+" + r.Step
		}
	default:
		r.Step = string(a.Step)
	}
}

// describeResult adds what a successful step produced.
func describeResult(r *historyRow, res *commonpb.Payloads, dc converter.DataConverter) {
	switch r.Activity {
	case activities.PlanName:
		var p activities.PlanResult
		if dc.FromPayloads(res, &p) == nil {
			r.Agent, r.Host = p.Agent, p.Agent
		}
	case activities.RunScriptName:
		var s activities.ScriptResult
		if dc.FromPayloads(res, &s) == nil {
			r.Detail = fmt.Sprintf("%s: exit %d", s.Script, s.ExitCode)
			if s.Remote {
				r.Detail += " over ssh"
			}
		}
	case activities.PushName:
		var p activities.PushResult
		if dc.FromPayloads(res, &p) == nil {
			r.Detail = fmt.Sprintf("image %s: %d files, %s", p.ImageID, p.Files, humanBytes(p.Bytes))
			if q := p.Quiesce; q != nil {
				r.Detail = fmt.Sprintf("%s: exit %d; %s", q.Script, q.ExitCode, r.Detail)
			}
			if th := p.Thawed; th != nil {
				r.Detail += fmt.Sprintf("; %s: exit %d", th.Script, th.ExitCode)
			}
			if p.ThawFailed != "" {
				r.Detail += "; resume failed, run as a step: " + p.ThawFailed
			}
			if pc := p.Precopy; pc != nil {
				r.Detail = "precopy " + precopyDetail(*pc) + "; " + r.Detail
			}
			if pf := p.Preflight; pf != nil {
				r.Detail = preflightDetail(*pf) + "; " + r.Detail
			}
			if p.ReusedDirs > 0 || p.PartialDirs > 0 {
				// --change-journal=push: what the push did not list.
				r.Detail += fmt.Sprintf("; journal: %d directories taken from the previous image, %d listed in part", p.ReusedDirs, p.PartialDirs)
			}
			if p.Unsupported != nil {
				r.Detail += "; INCOMPLETE: " + p.Unsupported.String()
			}
		}
	case activities.PrecopyName:
		var p activities.PrecopyResult
		if dc.FromPayloads(res, &p) == nil {
			r.Detail = precopyDetail(p)
			if p.Preflight != nil {
				r.Detail = preflightDetail(*p.Preflight) + "; precopy " + r.Detail
			}
		}
	case activities.PullName:
		var p activities.PullResult
		if dc.FromPayloads(res, &p) == nil {
			r.Detail = fmt.Sprintf("replica %s (verified=%t%s, epoch %d): %d files, %s", p.ReplicaName, p.Verified, incompleteMark(p.Incomplete), p.Epoch, p.Files, humanBytes(p.Bytes))
		}
	case activities.PreflightName:
		var p activities.PreflightResult
		if dc.FromPayloads(res, &p) == nil {
			r.Detail = preflightDetail(p)
		}
	case activities.PublishGroupName:
		var p activities.PublishGroupResult
		if dc.FromPayloads(res, &p) == nil {
			r.Detail = fmt.Sprintf("group of %d datasets published: %s -> %s (epoch %d)", len(p.Links), p.Current, filepath.Base(p.Dir), p.Epoch)
		}
	}
	if r.Agent == "" {
		r.Agent = r.Identity // an agent given an identity of its own
		if h, ok := workflows.HostOfIdentity(r.Identity); ok {
			r.Agent = h
		}
		r.Host = r.Agent
	}
}

// failureMessage is the most telling message of a failure chain and its error type. dc
// decodes messages the payload codec encrypted (they read "Encoded failure" without it).
func failureMessage(f *failurepb.Failure, dc converter.DataConverter) (msg, typ string) {
	if f == nil {
		return "failed", ""
	}
	converter.DecodeCommonFailureAttributes(dc, f)
	msg, typ = f.GetMessage(), f.GetApplicationFailureInfo().GetType()
	// Activity and child-workflow wrappers say only "activity error": use their cause.
	for (f.GetActivityFailureInfo() != nil || f.GetChildWorkflowExecutionFailureInfo() != nil) && f.GetCause() != nil {
		f = f.GetCause()
		converter.DecodeCommonFailureAttributes(dc, f)
		msg, typ = f.GetMessage(), f.GetApplicationFailureInfo().GetType()
	}
	if msg == "" {
		msg = "failed"
	}
	return msg, typ
}

func timeoutMeaning(tt enums.TimeoutType, agent string) string {
	switch tt {
	case enums.TIMEOUT_TYPE_HEARTBEAT:
		return "agent " + agent + " died, stalled or was cut off"
	case enums.TIMEOUT_TYPE_SCHEDULE_TO_START:
		return "no agent polled queue " + workflows.HostQueue(agent)
	case enums.TIMEOUT_TYPE_START_TO_CLOSE:
		return "the step took longer than start_to_close"
	}
	return "timeout"
}

func printHistory(w io.Writer, v historyView) {
	fmt.Fprintf(w, "job %s  workflow %s  run %s  %s  started %s", v.Job, v.WorkflowID, v.RunID, v.Status, v.Start.Local().Format(time.DateTime))
	if !v.End.IsZero() {
		fmt.Fprintf(w, "  took %s", v.End.Sub(v.Start).Round(time.Millisecond))
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STEP\tACTIVITY\tAGENT\tHOST\tSTART\tDURATION\tRESULT")
	for _, r := range v.Steps {
		if r.Kind == "takeover" {
			fmt.Fprintf(tw, "TAKEOVER\t%s -> %s\t%s\t%s\t%s\t\t%s\n", r.Step, r.Agent, r.Agent, r.From, r.Started.Local().Format("15:04:05.000"), r.Result)
			continue
		}
		res := r.Result
		if r.Detail != "" {
			res += " (" + r.Detail + ")"
		}
		if r.ErrorType != "" {
			res += " [" + r.ErrorType + "]"
		}
		start := r.Started
		if start.IsZero() {
			start = r.Scheduled
			if r.Result == "running" {
				res = "waiting for agent " + dash(r.Agent) + " to pick it up"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Step, r.Activity, dash(r.Agent), dash(r.Host), start.Local().Format("15:04:05.000"), r.Duration, res)
	}
	tw.Flush()
	if v.Error != "" {
		fmt.Fprintf(w, "run error: %s\n", v.Error)
	}
}

// precopyDetail says what a precopy did, in a few words.
func precopyDetail(p activities.PrecopyResult) string {
	d := fmt.Sprintf("live source: %d files, %s, %d unchanged", p.Files, humanBytes(p.Bytes), p.Reused)
	switch {
	case p.Failed != "":
		d = "failed: " + p.Failed
	case p.Skipped:
		d = "skipped: " + precopySkipReason
	}
	return d
}

// preflightDetail is what a preflight checked, in one line.
func preflightDetail(p activities.PreflightResult) string {
	return "on disk: storage " + strings.Join(p.Roots, ", ") + "; source " + strings.Join(p.SourceDirs, ", ")
}
