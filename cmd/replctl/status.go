package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
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
