package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/internal/codec"
	"github.com/replctl/replctl/workflows"
)

// defaultWatchInterval is how often `status --watch` refreshes.
const defaultWatchInterval = 500 * time.Millisecond

// StatusOptions are the arguments and flags of `replctl status`.
type StatusOptions struct {
	Job    string
	RunID  string
	Output string
	// Watch refreshes a live view until the run ends (or Ctrl-C).
	Watch bool
	// Interval is the refresh period of Watch; 0 means defaultWatchInterval.
	Interval time.Duration
}

// statusView is what `status` shows: the run's own status plus what the server knows.
type statusView struct {
	WorkflowID      string `json:"workflow_id"`
	ExecutionStatus string `json:"execution_status,omitempty"`
	workflows.Status
	// Live is the running step's last heartbeat, when a step is running.
	Live *liveStep `json:"live,omitempty"`
	// LastReplica is the job's newest replica published by a completed run.
	LastReplica *lastReplica `json:"last_replica,omitempty"`
	// RPO compares the last replica's age with the job's schedule.
	RPO *rpoView `json:"rpo,omitempty"`
	// Warning says what could not be found out (e.g. the status query failed).
	Warning string `json:"warning,omitempty"`
}

type liveStep struct {
	Activity      string               `json:"activity"`
	Attempt       int32                `json:"attempt"`
	Progress      *activities.Progress `json:"progress,omitempty"`
	Started       time.Time            `json:"started,omitzero"`
	LastHeartbeat time.Time            `json:"last_heartbeat,omitzero"`
	// BytesPerSecond is the step's average rate since it started.
	BytesPerSecond float64 `json:"bytes_per_second,omitempty"`
	// ETA is the time left at that rate ("" when unknown).
	ETA string `json:"eta,omitempty"`
	// Scheduled is set for a step no agent has started yet: when it was sent to Host's queue.
	Scheduled time.Time `json:"scheduled,omitzero"`
	Host      string    `json:"host,omitempty"`
}

// lastReplica is the newest replica of a job, published by a completed run.
type lastReplica struct {
	RunID    string `json:"run_id"`
	Name     string `json:"name"`
	Path     string `json:"path"`
	Agent    string `json:"agent"`
	Verified bool   `json:"verified"`
	// Incomplete: the replica lacks entries the data plane cannot replicate.
	Incomplete bool      `json:"incomplete,omitempty"`
	At         time.Time `json:"at"`
	// RunTook is how long the run that made it took.
	RunTook time.Duration `json:"run_took_ns"`
}

// rpoView says whether the last replica is as fresh as the job's schedule promises.
type rpoView struct {
	Cron string `json:"cron"`
	// Interval is the longest gap between two of the schedule's actions.
	Interval time.Duration `json:"interval_ns"`
	// Allowed is the age the last replica may reach: interval + jitter + how long a run takes.
	Allowed time.Duration `json:"allowed_ns"`
	Age     time.Duration `json:"age_ns"`
	Late    bool          `json:"late"`
	Note    string        `json:"note,omitempty"`
}

// NewCmdStatus is `replctl status JOB`.
func NewCmdStatus(f *Factory, runF func(*StatusOptions) error) *cobra.Command {
	o := &StatusOptions{}
	cmd := &cobra.Command{
		Use:   "status JOB | --run RUN",
		Short: "Show the latest run of a job: phase, agents, takeovers, progress, replica, RPO",
		Long: "Show a run of JOB (default: the latest): phase, the active agent per role, takeovers, the running\n" +
			"step's progress, the last replica and its age against the job's schedule (RPO).\n" +
			"With --watch, refresh a live view until the run ends; the exit code then tells how it ended,\n" +
			"like start --wait (0 completed, 3 failed or cancelled, 4 failed and left a host quiesced).",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 && o.RunID != "" {
				return nil
			}
			return exactArgs(1, "one job name (or --run RUN)")(cmd, args)
		},
		ValidArgsFunction: completeJobs(f, false),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				o.Job = args[0]
			}
			if err := checkOutput(o.Output); err != nil {
				return err
			}
			if o.Interval < 0 || (o.Interval > 0 && o.Interval < 50*time.Millisecond) {
				return usageError("--interval %s: want at least 50ms", o.Interval)
			}
			if o.Watch && o.Output == "json" {
				return usageError("--watch shows a live view: it does not go with --output json")
			}
			if runF != nil {
				return runF(o)
			}
			return runStatus(cmd, f, o)
		},
	}
	addOutputFlag(cmd, &o.Output)
	cmd.Flags().StringVar(&o.RunID, "run", "", "run ID (default: the latest run)")
	cmd.Flags().BoolVarP(&o.Watch, "watch", "w", false, "refresh a live view until the run ends (Ctrl-C stops watching)")
	cmd.Flags().DurationVar(&o.Interval, "interval", 0, "refresh period of --watch (default 500ms)")
	return cmd
}

func runStatus(cmd *cobra.Command, f *Factory, o *StatusOptions) error {
	ctx := cmd.Context()
	cfg, err := f.Config()
	if err != nil {
		return err
	}
	c, err := f.Client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if o.Job == "" {
		if o.Job, err = jobOfRun(ctx, c, o.RunID); err != nil {
			return err
		}
	}
	if o.Watch {
		return watchStatus(ctx, f, c, cfg, o)
	}
	s := &statusSource{c: c, cfg: cfg, job: o.Job, runID: o.RunID}
	v, _, err := s.fetch(ctx, f.now())
	if err != nil {
		return err
	}
	if v.Warning != "" && v.ExecutionStatus == "running" {
		return fmt.Errorf("%s", v.Warning)
	}
	return f.Render(o.Output, v, func(w io.Writer) { printStatus(w, v) })
}

// jobOfRun finds the job of a run ID through the visibility API.
func jobOfRun(ctx context.Context, c client.Client, runID string) (string, error) {
	if strings.ContainsAny(runID, `'"\`) {
		return "", usageError("--run %q is not a run ID", runID)
	}
	resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
		PageSize: 1, Query: fmt.Sprintf("RunId = '%s' AND WorkflowType = '%s'", runID, workflows.ReplicationWorkflowName),
	})
	if err != nil {
		return "", fmt.Errorf("find run %s: %w", runID, err)
	}
	if len(resp.GetExecutions()) == 0 {
		return "", notFoundError("no replication run %s found (visibility may lag a moment behind a new run; `replctl list` shows runs): give the job too: replctl status JOB --run %s", runID, runID)
	}
	id := resp.GetExecutions()[0].GetExecution().GetWorkflowId()
	job, ok := workflows.JobOfWorkflowID(id)
	if !ok {
		return "", notFoundError("run %s has workflow ID %s, which is no job's (a run under another ID refuses itself): give the job too: replctl status JOB --run %s", runID, id, runID)
	}
	return job, nil
}

// statusSource gathers a run's status; it keeps what changes rarely (last replica, the
// schedule's interval) between refreshes of --watch.
type statusSource struct {
	c     client.Client
	cfg   *config.Config
	job   string
	runID string

	last        *lastReplica
	lastChecked bool
	interval    time.Duration
	intervalSrc string
	intervalOK  bool
}

// fetch reads the run's status now. The error is final (no such run); what could not be
// learnt otherwise is in the view's Warning.
func (s *statusSource) fetch(ctx context.Context, now time.Time) (statusView, enums.WorkflowExecutionStatus, error) {
	id := workflows.WorkflowID(s.job)
	desc, err := s.c.DescribeWorkflowExecution(ctx, id, s.runID)
	var nf *serviceerror.NotFound
	if errors.As(err, &nf) {
		if s.runID != "" {
			return statusView{}, 0, notFoundError("job %s has no run %s (workflow %s); `replctl list --job %s` shows its runs", s.job, s.runID, id, s.job)
		}
		return statusView{}, 0, notFoundError("job %s has no runs yet (no workflow %s): start one with `replctl start %s`", s.job, id, s.job)
	}
	if err != nil {
		return statusView{}, 0, fmt.Errorf("describe the run of job %s (workflow %s): %w", s.job, id, err)
	}
	info := desc.GetWorkflowExecutionInfo()
	status := info.GetStatus()
	runID := info.GetExecution().GetRunId()
	s.runID = runID // follow this run from now on
	v := statusView{WorkflowID: id, ExecutionStatus: executionStatusName(status)}
	v.Job, v.RunID = s.job, runID

	got := false
	if status == enums.WORKFLOW_EXECUTION_STATUS_COMPLETED {
		// The result is in the history: no agent needed.
		err := s.c.GetWorkflow(ctx, id, runID).Get(ctx, &v.Status)
		if errors.Is(err, codec.ErrWrongKey) {
			return statusView{}, 0, fmt.Errorf("read the result of job %s run %s: %w", s.job, runID, err)
		}
		got = err == nil
	}
	if !got {
		q, err := s.c.QueryWorkflow(ctx, id, runID, workflows.StatusQuery)
		if err == nil {
			err = q.Get(&v.Status)
		}
		if errors.Is(err, codec.ErrWrongKey) {
			return statusView{}, 0, fmt.Errorf("status query of job %s run %s: %w", s.job, runID, err)
		}
		if err != nil {
			v.Warning = fmt.Sprintf("status query of job %s run %s failed (are agents running? `replctl agent` or `replctl dev`): %v", s.job, runID, err)
			v.Job, v.RunID = s.job, runID
			v.Phase = payloadString(info.GetSearchAttributes().GetIndexedFields()[workflows.AttrPhase.GetName()])
			v.StartedAt = info.GetStartTime().AsTime()
		}
	}
	for _, pa := range desc.GetPendingActivities() {
		if pa.GetActivityType().GetName() == activities.WarmName {
			continue // a target's read-ahead beside the steps, not the run's step
		}
		if pa.GetState() != enums.PENDING_ACTIVITY_STATE_STARTED {
			if pa.GetState() == enums.PENDING_ACTIVITY_STATE_SCHEDULED && v.Live == nil {
				// Sent to a host's queue and taken by no agent yet.
				v.Live = &liveStep{Activity: pa.GetActivityType().GetName(), Attempt: pa.GetAttempt(), Scheduled: pa.GetScheduledTime().AsTime()}
				v.Live.Host, _ = workflows.HostOfQueue(pa.GetActivityOptions().GetTaskQueue().GetName())
			}
			continue
		}
		v.Live = newLiveStep(pa.GetActivityType().GetName(), pa.GetAttempt(), pa.GetHeartbeatDetails().GetPayloads(), pa.GetLastStartedTime().AsTime(), pa.GetLastHeartbeatTime().AsTime())
	}
	if status != enums.WORKFLOW_EXECUTION_STATUS_RUNNING {
		s.lastChecked = false // a run just ended: look again
	}
	s.lastReplica(ctx, v)
	v.LastReplica = s.last
	v.RPO = s.rpo(ctx, v.LastReplica, now)
	return v, status, nil
}

func newLiveStep(activity string, attempt int32, details []*commonpb.Payload, started, lastHB time.Time) *liveStep {
	l := &liveStep{Activity: activity, Attempt: attempt, Started: started, LastHeartbeat: lastHB}
	if len(details) > 0 {
		var p activities.Progress
		if err := json.Unmarshal(details[0].GetData(), &p); err == nil {
			l.Progress = &p
		}
	}
	if p := l.Progress; p != nil && !started.IsZero() && lastHB.After(started) && p.BytesDone > 0 {
		l.BytesPerSecond = float64(p.BytesDone) / lastHB.Sub(started).Seconds()
		if p.BytesTotal > p.BytesDone && l.BytesPerSecond > 0 {
			l.ETA = time.Duration(float64(p.BytesTotal-p.BytesDone) / l.BytesPerSecond * float64(time.Second)).Round(time.Second).String()
		}
	}
	return l
}

// lastReplica finds the job's newest replica: this run's if it completed, else the result
// of the job's latest completed run (visibility).
func (s *statusSource) lastReplica(ctx context.Context, v statusView) {
	if r := v.Replica; r != nil && v.Phase == workflows.PhaseCompleted {
		s.last = &lastReplica{RunID: v.RunID, Name: r.Name, Path: r.Path, Agent: r.Agent, Verified: r.Verified, Incomplete: r.Incomplete, At: v.FinishedAt, RunTook: v.FinishedAt.Sub(v.StartedAt)}
		s.lastChecked = true
		return
	}
	if s.lastChecked {
		return
	}
	s.lastChecked = true
	resp, err := s.c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
		PageSize: 1,
		Query: fmt.Sprintf("WorkflowType = '%s' AND WorkflowId = '%s' AND ExecutionStatus = 'Completed'",
			workflows.ReplicationWorkflowName, workflows.WorkflowID(s.job)),
	})
	if err != nil || len(resp.GetExecutions()) == 0 {
		return
	}
	e := resp.GetExecutions()[0]
	var st workflows.Status
	if s.c.GetWorkflow(ctx, e.GetExecution().GetWorkflowId(), e.GetExecution().GetRunId()).Get(ctx, &st) != nil || st.Replica == nil {
		return
	}
	at := st.FinishedAt
	if at.IsZero() {
		at = e.GetCloseTime().AsTime()
	}
	s.last = &lastReplica{RunID: e.GetExecution().GetRunId(), Name: st.Replica.Name, Path: st.Replica.Path, Agent: st.Replica.Agent, Verified: st.Replica.Verified, Incomplete: st.Replica.Incomplete, At: at, RunTook: at.Sub(st.StartedAt)}
}

// rpo compares the last replica's age with the job's schedule; nil for jobs without one.
func (s *statusSource) rpo(ctx context.Context, last *lastReplica, now time.Time) *rpoView {
	j, err := s.cfg.Job(s.job)
	if err != nil || j.Schedule == nil {
		return nil
	}
	if !s.intervalOK {
		s.interval, s.intervalSrc = scheduleInterval(ctx, s.c, s.job, j.Schedule.Cron)
		s.intervalOK = s.interval > 0
	}
	return assessRPO(j.Schedule, s.interval, s.intervalSrc, last, now)
}

// scheduleInterval is the longest gap between the schedule's next actions as the server
// computes them (time zone, DST and jitter included); for a schedule not on the server it
// falls back to what the cron string says on its own (@every, @daily, …).
func scheduleInterval(ctx context.Context, c client.Client, job, cron string) (time.Duration, string) {
	if c != nil {
		d, err := c.ScheduleClient().GetHandle(ctx, workflows.ScheduleID(job)).Describe(ctx)
		if err == nil {
			if gap := maxGap(d.Info.NextActionTimes); gap > 0 {
				return gap, "server"
			}
		}
	}
	if d := cronInterval(cron); d > 0 {
		return d, "cron"
	}
	return 0, ""
}

func maxGap(ts []time.Time) time.Duration {
	var gap time.Duration
	for i := 1; i < len(ts); i++ {
		gap = max(gap, ts[i].Sub(ts[i-1]))
	}
	return gap
}

// cronInterval is the interval of @every and of the descriptors; 0 for a cron string
// whose interval needs the server.
func cronInterval(cron string) time.Duration {
	c, _, _ := strings.Cut(cron, "#")
	c = strings.TrimSpace(c)
	if rest, ok := strings.CutPrefix(c, "@every"); ok {
		every, _, _ := strings.Cut(strings.TrimSpace(rest), "/")
		if days, ok := strings.CutSuffix(every, "d"); ok {
			var n int
			if _, err := fmt.Sscanf(days, "%d", &n); err == nil {
				return time.Duration(n) * 24 * time.Hour
			}
			return 0
		}
		d, _ := time.ParseDuration(every)
		return d
	}
	switch c {
	case "@hourly":
		return time.Hour
	case "@daily", "@midnight":
		return 24 * time.Hour
	case "@weekly":
		return 7 * 24 * time.Hour
	case "@monthly":
		return 31 * 24 * time.Hour
	case "@yearly", "@annually":
		return 366 * 24 * time.Hour
	}
	return 0
}

// assessRPO flags a job whose last good replica is older than its schedule allows: one
// interval, plus the schedule's jitter, plus how long the run that made it took (the next
// replica appears that long after its tick).
func assessRPO(s *config.Schedule, interval time.Duration, source string, last *lastReplica, now time.Time) *rpoView {
	v := &rpoView{Cron: s.Cron, Interval: interval}
	if interval <= 0 {
		v.Note = "the schedule's interval is unknown: run `replctl schedule sync` so the server computes its times"
		return v
	}
	if source == "cron" {
		v.Note = "interval from the cron string (schedule not on the server: run `replctl schedule sync`)"
	}
	v.Allowed = interval + s.Jitter
	if last == nil {
		v.Late = true
		v.Note = joinNote(v.Note, "no completed run has published a replica yet")
		return v
	}
	v.Allowed += max(last.RunTook, 0)
	v.Age = max(now.Sub(last.At), 0)
	v.Late = v.Age > v.Allowed
	return v
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// precopySkipReason says why precopy auto skips a dataset (status and history).
const precopySkipReason = "a small image, a push that read little, or a first copy where the source's times are another host's"

// printStatus writes the human form of a status.
func printStatus(w io.Writer, v statusView) {
	s := v.Status
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "job\t%s\n", s.Job)
	fmt.Fprintf(tw, "run\t%s %s\n", v.WorkflowID, s.RunID)
	phase := s.Phase
	if es := v.ExecutionStatus; es != "" && es != "running" && es != s.Phase {
		phase += " (" + es + ")"
	}
	if !s.StartedAt.IsZero() {
		end := s.FinishedAt
		if end.IsZero() {
			phase += fmt.Sprintf(", started %s, running %s", s.StartedAt.Local().Format(time.DateTime), time.Since(s.StartedAt).Round(time.Second))
		} else {
			phase += fmt.Sprintf(", took %s", end.Sub(s.StartedAt).Round(time.Millisecond))
		}
	}
	fmt.Fprintf(tw, "phase\t%s\n", phase)
	if s.Direction != "" {
		fmt.Fprintf(tw, "direction\t%s: the target's replica is copied back to the source\n", s.Direction)
	}
	if s.PrimaryCheck != "" {
		fmt.Fprintf(tw, "primary\t%s\n", s.PrimaryCheck)
	}
	fmt.Fprintf(tw, "agents\tapplication=%s source=%s target=%s\n", dash(s.Agents.Application), dash(s.Agents.Source), dash(s.Agents.Target))
	if s.SourcePath != "" {
		fmt.Fprintf(tw, "source\t%s\n", s.SourcePath)
	}
	if len(s.Images) > 1 {
		fmt.Fprintf(tw, "images\t%s (one point in time)\n", strings.Join(s.Images, ", "))
	} else if s.Image != "" {
		fmt.Fprintf(tw, "image\t%s\n", s.Image)
	}
	if p := s.Precopy; p != nil {
		if p.Skipped {
			fmt.Fprintf(tw, "precopy\tskipped by %s: %s\n", p.Agent, precopySkipReason)
		} else {
			skipped := ""
			if p.SkippedDatasets > 0 {
				skipped = fmt.Sprintf("; %d dataset(s) skipped: %s", p.SkippedDatasets, precopySkipReason)
			}
			fmt.Fprintf(tw, "precopy\tby %s before quiesce: %d files, %s (%d unchanged) in %.1fs%s\n", p.Agent, p.Files, humanBytes(p.Bytes), p.Reused, p.Seconds, skipped)
		}
	}
	if s.Progress.Step != "" {
		fmt.Fprintf(tw, "progress\t%s: %d files, %s\n", s.Progress.Step, s.Progress.FilesDone, humanBytes(s.Progress.BytesDone))
	}
	if l := v.Live; l != nil {
		fmt.Fprintf(tw, "running\t%s\n", liveLine(l))
	}
	if r := s.Replica; r != nil {
		fmt.Fprintf(tw, "replica\t%s (verified=%t%s, by %s, epoch %d)\n", r.Path, r.Verified, incompleteMark(r.Incomplete), r.Agent, r.Epoch)
		fmt.Fprintf(tw, "published at\t%s\n", r.Link)
		if r.Distrusted > 0 {
			fmt.Fprintf(tw, "DAMAGE SEEN\t%d files of the replica before had been changed on the target since their publish; written anew from the image\n", r.Distrusted)
		}
	}
	if showTargets(s) {
		for _, t := range s.Targets {
			fmt.Fprintf(tw, "target %s\t%s\n", t.Storage, targetLine(t))
			for _, r := range t.Replicas {
				fmt.Fprintf(tw, "  %s\t%s (verified=%t%s)\n", r.Dataset, r.Path, r.Verified, incompleteMark(r.Incomplete))
			}
		}
	}
	if u := s.Unsupported; u != nil {
		fmt.Fprintf(tw, "INCOMPLETE\t%s (on_unsupported: skip)\n", u.String())
	}
	for _, t := range s.Takeovers {
		fmt.Fprintf(tw, "takeover\t%s\n", takeoverLine(t))
	}
	if len(s.Takeovers) == 0 && v.ExecutionStatus == "running" {
		fmt.Fprintf(tw, "takeovers\tnone so far\n")
	}
	for _, sc := range s.Scripts {
		fmt.Fprintf(tw, "script\t%s %s on %s by %s: exit %d in %s\n", sc.Step, sc.Script, sc.Host, sc.Agent, sc.ExitCode, sc.Duration.Round(1e6))
	}
	for _, n := range s.Notes {
		fmt.Fprintf(tw, "note\t%s\n", n)
	}
	if r := v.LastReplica; r != nil && (s.Replica == nil || r.RunID != s.RunID) {
		fmt.Fprintf(tw, "last replica\t%s (run %s, %s ago%s)\n", r.Name, r.RunID, time.Since(r.At).Round(time.Second), incompleteMark(r.Incomplete))
	}
	if r := v.RPO; r != nil {
		fmt.Fprintf(tw, "rpo\t%s\n", rpoLine(r))
	}
	if s.QuiescedHost != "" && (s.Phase == workflows.PhaseFailed || s.Phase == workflows.PhaseCancelled) {
		fmt.Fprintf(tw, "WARNING\thost %s was LEFT QUIESCED: run its resume script by hand\n", s.QuiescedHost)
	}
	if s.Error != "" {
		fmt.Fprintf(tw, "error\t%s\n", s.Error)
	}
	if v.Warning != "" {
		fmt.Fprintf(tw, "warning\t%s\n", v.Warning)
	}
	tw.Flush()
}

func takeoverLine(t workflows.Takeover) string {
	to := t.To
	if to == "" {
		to = "(none left)"
	}
	r := t.Role
	if t.Target != "" {
		r += " " + t.Target
	}
	return fmt.Sprintf("%s %s: %s -> %s at %s: %s", r, t.Step, t.From, to, t.Time.Local().Format("15:04:05.000"), t.Reason)
}

// showTargets: per-target lines only say more than the replica line for fan-out and groups.
func showTargets(s workflows.Status) bool {
	return len(s.Targets) > 1 || (len(s.Targets) == 1 && (len(s.Targets[0].Replicas) > 1 || s.Targets[0].Group != "" || s.Targets[0].Phase == workflows.TargetFailed))
}

func targetLine(t workflows.TargetStatus) string {
	out := t.Phase
	if t.Agent != "" {
		out += " on " + t.Agent
	}
	switch {
	case t.Error != "":
		out += ": " + t.Error
	case t.Group != "" && t.Phase == workflows.TargetCompleted:
		out += fmt.Sprintf(": %d datasets published together (%s)", len(t.Replicas), t.Group)
	case len(t.Replicas) == 1 && t.Phase == workflows.TargetCompleted:
		out += ": published " + t.Replicas[0].Link
	}
	return out
}

func rpoLine(r *rpoView) string {
	switch {
	case r.Interval <= 0:
		return fmt.Sprintf("unknown for schedule %q: %s", r.Cron, r.Note)
	case r.Age == 0 && r.Late:
		return fmt.Sprintf("LATE: no replica yet; schedule %q runs every %s (%s)", r.Cron, shortDuration(r.Interval), r.Note)
	}
	state := "ok"
	if r.Late {
		state = "LATE"
	}
	s := fmt.Sprintf("%s: last replica %s old, schedule %q allows %s (every %s)", state, r.Age.Round(time.Second), r.Cron, r.Allowed.Round(time.Second), shortDuration(r.Interval))
	if r.Note != "" {
		s += "; " + r.Note
	}
	return s
}

// liveLine is the running step in one line: activity, agent, phase, a progress bar, rate
// and ETA.
func liveLine(l *liveStep) string {
	p := l.Progress
	if !l.Scheduled.IsZero() {
		return fmt.Sprintf("%s scheduled on host %s's queue %s ago, not started: no agent of %s has taken it yet (agent down or busy)",
			strings.ToLower(l.Activity), dash(l.Host), time.Since(l.Scheduled).Round(100*time.Millisecond), dash(l.Host))
	}
	if p != nil && activities.WaitingForSlot(p.Phase) {
		// Started, but holding back until a data step on the host ends (max_concurrent_steps).
		s := fmt.Sprintf("%s %s", p.Step, p.Phase)
		if !l.Started.IsZero() {
			s += fmt.Sprintf(", for %s", time.Since(l.Started).Round(100*time.Millisecond))
		}
		return s
	}
	if p == nil {
		return fmt.Sprintf("%s (attempt %d), no progress reported yet", l.Activity, l.Attempt)
	}
	step := string(p.Step)
	if step == "" {
		step = strings.ToLower(l.Activity)
	}
	s := fmt.Sprintf("%s on %s", step, dash(p.Agent))
	if p.Phase != "" {
		s += " (" + p.Phase + ")"
	}
	if l.Activity == activities.RunScriptName {
		if !l.Started.IsZero() {
			s += fmt.Sprintf(" for %s", time.Since(l.Started).Round(100*time.Millisecond))
		}
		return s
	}
	if p.BytesTotal == 0 && p.FilesTotal == 0 && p.BytesDone == 0 && p.FilesDone == 0 {
		return s + ", starting"
	}
	frac := -1.0
	switch {
	case p.BytesTotal > 0:
		frac = float64(p.BytesDone) / float64(p.BytesTotal)
	case p.FilesTotal > 0:
		frac = float64(p.FilesDone) / float64(p.FilesTotal)
	}
	s += " " + progressBar(frac, 20)
	if frac >= 0 {
		s += fmt.Sprintf(" %3.0f%%", 100*min(frac, 1))
	}
	s += fmt.Sprintf(" %s/%s, %d/%d files", humanBytes(p.BytesDone), humanBytes(p.BytesTotal), p.FilesDone, p.FilesTotal)
	if l.BytesPerSecond > 0 {
		s += fmt.Sprintf(", %s/s", humanBytes(int64(l.BytesPerSecond)))
	}
	if l.ETA != "" {
		s += ", ETA " + l.ETA
	}
	if l.Attempt > 1 {
		s += fmt.Sprintf(" (attempt %d)", l.Attempt)
	}
	return s
}

// progressBar draws frac (0..1; negative = unknown) in width cells.
func progressBar(frac float64, width int) string {
	if frac < 0 {
		return "[" + strings.Repeat("?", width) + "]"
	}
	n := int(min(frac, 1)*float64(width) + 0.5)
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", width-n) + "]"
}

// watchStatus refreshes a live view of the run until it ends (exit code like start --wait)
// or ctx is cancelled (Ctrl-C). On a terminal it redraws in place; otherwise it prints a
// line when something changed (progress at most every few seconds).
func watchStatus(ctx context.Context, f *Factory, c client.Client, cfg *config.Config, o *StatusOptions) error {
	interval := o.Interval
	if interval == 0 {
		interval = defaultWatchInterval
	}
	src := &statusSource{c: c, cfg: cfg, job: o.Job, runID: o.RunID}
	var w watcher
	var rate rateTracker
	w.tty = isTerminal(f.Out)
	w.out = f.Out
	for first := true; ; first = false {
		v, status, err := src.fetch(ctx, time.Now())
		if err == nil {
			rate.update(v.Live)
		}
		switch {
		case ctx.Err() != nil:
			w.stop()
			return nil
		case err != nil && first:
			return err
		case err != nil:
			w.warn(err.Error())
		default:
			w.show(v, time.Now())
			if status != enums.WORKFLOW_EXECUTION_STATUS_RUNNING {
				w.finish(v)
				return runOutcome(v, status)
			}
		}
		select {
		case <-ctx.Done():
			w.stop()
			return nil
		case <-time.After(interval):
		}
	}
}

// runOutcome is the exit of a run that ended, as `start --wait` reports it.
func runOutcome(v statusView, status enums.WorkflowExecutionStatus) error {
	if status == enums.WORKFLOW_EXECUTION_STATUS_COMPLETED {
		return nil
	}
	why := v.Error
	if why == "" {
		why = executionStatusName(status)
	}
	if v.QuiescedHost != "" {
		return &ExitError{Code: ExitLeftQuiesce, Err: fmt.Errorf("run %s of job %s ended %s: %s; HOST %s WAS LEFT QUIESCED", v.RunID, v.Job, executionStatusName(status), why, v.QuiescedHost)}
	}
	return &ExitError{Code: ExitRunFailed, Err: fmt.Errorf("run %s of job %s ended %s: %s", v.RunID, v.Job, executionStatusName(status), why)}
}

// watcher renders successive views.
type watcher struct {
	out io.Writer
	tty bool

	drawn     bool
	lastKey   string
	lastLine  time.Time
	takeovers int
}

// progressEvery is how often a non-terminal watch prints a line for progress alone.
const progressEvery = 2 * time.Second

func (w *watcher) show(v statusView, now time.Time) {
	if w.tty {
		var b bytes.Buffer
		if !w.drawn {
			b.WriteString("\x1b[2J") // clear the screen once
		}
		b.WriteString("\x1b[H") // home: redraw in place
		for _, l := range watchLines(v, now) {
			b.WriteString(l + "\x1b[K\n")
		}
		b.WriteString("\x1b[J") // clear what the previous frame left below
		_, _ = w.out.Write(b.Bytes())
		w.drawn = true
		return
	}
	if !w.drawn {
		fmt.Fprintf(w.out, "watching job %s run %s (Ctrl-C stops watching, not the run)\n", v.Job, v.RunID)
		w.drawn = true
	}
	for ; w.takeovers < len(v.Takeovers); w.takeovers++ {
		fmt.Fprintf(w.out, "%s TAKEOVER %s\n", now.Format("15:04:05"), takeoverLine(v.Takeovers[w.takeovers]))
	}
	key := fmt.Sprintf("%s|%s|%s|%s", v.Phase, v.ExecutionStatus, v.Agents, v.Warning)
	if v.Live != nil {
		key += "|" + v.Live.Activity
		if p := v.Live.Progress; p != nil {
			key += "|" + p.Phase + "|" + p.Agent
		}
	}
	line := watchLine(v)
	if key == w.lastKey && (now.Sub(w.lastLine) < progressEvery || v.Live == nil || v.Live.Progress == nil) {
		return
	}
	w.lastKey, w.lastLine = key, now
	fmt.Fprintf(w.out, "%s %s\n", now.Format("15:04:05"), line)
}

// watchLine is one line of a non-terminal watch.
func watchLine(v statusView) string {
	s := fmt.Sprintf("%-10s agents application=%s source=%s target=%s", v.Phase, dash(v.Agents.Application), dash(v.Agents.Source), dash(v.Agents.Target))
	if n := len(v.Takeovers); n > 0 {
		s += fmt.Sprintf(" takeovers=%d", n)
	}
	if v.Live != nil {
		s += " | " + liveLine(v.Live)
	}
	if v.Warning != "" {
		s += " | warning: " + v.Warning
	}
	return s
}

// watchLines is the frame of a terminal watch.
func watchLines(v statusView, now time.Time) []string {
	lines := []string{fmt.Sprintf("replctl status %s --watch   %s   (Ctrl-C stops watching, not the run)", v.Job, now.Format("15:04:05"))}
	var b bytes.Buffer
	printStatus(&b, v)
	lines = append(lines, "")
	lines = append(lines, strings.Split(strings.TrimRight(b.String(), "\n"), "\n")...)
	return lines
}

func (w *watcher) warn(msg string) {
	if w.tty {
		fmt.Fprintf(w.out, "\x1b[Kwarning: %s\n", msg)
		return
	}
	fmt.Fprintf(w.out, "%s warning: %s\n", time.Now().Format("15:04:05"), msg)
}

// finish prints the final status once the run ended.
func (w *watcher) finish(v statusView) {
	if w.tty {
		fmt.Fprintf(w.out, "run %s\n", v.ExecutionStatus)
		return
	}
	fmt.Fprintf(w.out, "%s run ended: %s\n", time.Now().Format("15:04:05"), v.ExecutionStatus)
	printStatus(w.out, v)
}

func (w *watcher) stop() {
	fmt.Fprintln(w.out, "stopped watching; the run goes on")
}

// isTerminal tells whether w is a terminal (ANSI redraw) rather than a file or pipe.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func humanBytes(n int64) string { return config.FormatBytes(n) }

// incompleteMark is what a replica's line adds when the replica lacks entries the data plane
// cannot replicate.
func incompleteMark(incomplete bool) string {
	if incomplete {
		return ", INCOMPLETE"
	}
	return ""
}
