package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"
	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/api/enums/v1"
	workflowpb "go.temporal.io/api/workflow/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"

	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/internal/codec"
	"github.com/replctl/replctl/workflows"
)

// ListOptions are the flags of `replctl list`.
type ListOptions struct {
	Job    string
	Status string
	// Since is how far back runs are listed (a duration such as 24h or 7d, or an RFC 3339 time).
	Since  string
	Limit  int
	Output string
}

// statusNames maps what `--status` accepts to the visibility API's ExecutionStatus values.
var statusNames = map[string]string{
	"running":          "Running",
	"completed":        "Completed",
	"failed":           "Failed",
	"cancelled":        "Canceled",
	"canceled":         "Canceled",
	"terminated":       "Terminated",
	"timed_out":        "TimedOut",
	"continued_as_new": "ContinuedAsNew",
}

// safeName is what a job name may look like in a visibility query (the config's rule).
var safeName = regexp.MustCompile(config.NamePattern)

// NewCmdList is `replctl list`: runs of jobs from Temporal's visibility store.
func NewCmdList(f *Factory, runF func(*ListOptions) error) *cobra.Command {
	o := &ListOptions{}
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List replication runs: job, run ID, status, phase, start, duration",
		Long: "List replication runs (workflow type " + workflows.ReplicationWorkflowName + "), newest first, from Temporal's visibility store.\n" +
			"The phase is the run's ReplctlPhase search attribute. Visibility lags a moment behind the runs.",
		Args: exactArgs(0, "no arguments (use --job to pick a job)"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(o.Output); err != nil {
				return err
			}
			if _, err := o.query(time.Now()); err != nil {
				return err
			}
			if runF != nil {
				return runF(o)
			}
			return runList(cmd.Context(), f, o)
		},
	}
	cmd.Flags().StringVarP(&o.Job, "job", "j", "", "only runs of this job")
	cmd.Flags().StringVarP(&o.Status, "status", "s", "", "only runs with this status: running, completed, failed, cancelled, terminated, timed_out")
	cmd.Flags().StringVar(&o.Since, "since", "", "only runs started within this duration (24h, 7d) or after this RFC 3339 time")
	cmd.Flags().IntVar(&o.Limit, "limit", 50, "at most this many runs")
	addOutputFlag(cmd, &o.Output)
	_ = cmd.RegisterFlagCompletionFunc("job", completeJobFlag(f))
	_ = cmd.RegisterFlagCompletionFunc("status", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"running", "completed", "failed", "cancelled", "terminated", "timed_out"}, cobra.ShellCompDirectiveNoFileComp
	})
	return cmd
}

// query builds the visibility query of o; errors are usage errors.
func (o *ListOptions) query(now time.Time) (string, error) {
	q := []string{fmt.Sprintf("WorkflowType = '%s'", workflows.ReplicationWorkflowName)}
	if o.Job != "" {
		if !safeName.MatchString(o.Job) {
			return "", usageError("--job %q is not a job name (lower-case letters, digits, - and _)", o.Job)
		}
		q = append(q, fmt.Sprintf("WorkflowId = '%s'", workflows.WorkflowID(o.Job)))
	}
	if o.Status != "" {
		s, ok := statusNames[strings.ToLower(o.Status)]
		if !ok {
			return "", usageError("--status %q: want one of running, completed, failed, cancelled, terminated, timed_out", o.Status)
		}
		q = append(q, fmt.Sprintf("ExecutionStatus = '%s'", s))
	}
	if o.Since != "" {
		t, err := parseSince(o.Since, now)
		if err != nil {
			return "", usageError("--since: %v", err)
		}
		q = append(q, fmt.Sprintf("StartTime > '%s'", t.UTC().Format(time.RFC3339Nano)))
	}
	if o.Limit < 1 {
		return "", usageError("--limit %d: want at least 1", o.Limit)
	}
	return strings.Join(q, " AND "), nil
}

// parseSince reads a duration before now (24h, 90m, 7d) or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n > 0 {
			return now.Add(-time.Duration(n) * 24 * time.Hour), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q: want a duration such as 24h or 7d, or an RFC 3339 time", s)
}

// runRow is one run in `replctl list`.
type runRow struct {
	Job        string    `json:"job"`
	WorkflowID string    `json:"workflow_id"`
	RunID      string    `json:"run_id"`
	Status     string    `json:"status"`
	Phase      string    `json:"phase,omitempty"`
	Agent      string    `json:"agent,omitempty"`
	Trigger    string    `json:"trigger"`
	Start      time.Time `json:"start"`
	End        time.Time `json:"end,omitzero"`
	Duration   string    `json:"duration"`
	// QuiescedHost is set when the run left (or, running, holds) a host quiesced.
	QuiescedHost string `json:"quiesced_host,omitempty"`
	Summary      string `json:"summary,omitempty"`
}

func runList(ctx context.Context, f *Factory, o *ListOptions) error {
	now := f.now()
	q, err := o.query(now)
	if err != nil {
		return err
	}
	c, err := f.Client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	rows, err := listRuns(ctx, c, q, o.Limit, now, f.DataConverter())
	if err != nil {
		return err
	}
	return f.Render(o.Output, rows, func(w io.Writer) { printRuns(w, rows) })
}

// listRuns pages through the visibility API until limit runs are found; a running run's
// duration is up to now.
func listRuns(ctx context.Context, c client.Client, query string, limit int, now time.Time, dc converter.DataConverter) ([]runRow, error) {
	rows := []runRow{}
	var token []byte
	for {
		resp, err := c.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			PageSize: int32(min(limit, 1000)), NextPageToken: token, Query: query,
		})
		if err != nil {
			return nil, fmt.Errorf("list runs (query %s): %w", query, err)
		}
		for _, e := range resp.GetExecutions() {
			if p := e.GetMemo().GetFields()["summary"]; p != nil {
				var s string
				if err := dc.FromPayload(p, &s); errors.Is(err, codec.ErrWrongKey) {
					return nil, fmt.Errorf("run summary of %s: %w", e.GetExecution().GetWorkflowId(), err)
				}
			}
			rows = append(rows, newRunRow(e, now, dc))
			if len(rows) == limit {
				return rows, nil
			}
		}
		token = resp.GetNextPageToken()
		if len(token) == 0 {
			return rows, nil
		}
	}
}

// newRunRow is a run's row; dc decodes the memo (encrypted when a payload codec is on).
func newRunRow(e *workflowpb.WorkflowExecutionInfo, now time.Time, dc converter.DataConverter) runRow {
	attrs := e.GetSearchAttributes().GetIndexedFields()
	r := runRow{
		WorkflowID:   e.GetExecution().GetWorkflowId(),
		RunID:        e.GetExecution().GetRunId(),
		Status:       executionStatusName(e.GetStatus()),
		Phase:        payloadString(attrs[workflows.AttrPhase.GetName()]),
		Agent:        payloadString(attrs[workflows.AttrAgent.GetName()]),
		Job:          payloadString(attrs[workflows.AttrJob.GetName()]),
		QuiescedHost: payloadString(attrs[workflows.AttrQuiescedHost.GetName()]),
		Summary:      memoString(dc, e.GetMemo().GetFields()["summary"]),
		Start:        e.GetStartTime().AsTime(),
		Trigger:      "manual",
	}
	if r.Job == "" {
		// A run under another ID (it refused itself) has no job.
		r.Job, _ = workflows.JobOfWorkflowID(r.WorkflowID)
	}
	if e.GetParentExecution() != nil {
		r.Trigger = "schedule"
	}
	end := now
	if ct := e.GetCloseTime(); ct != nil && ct.IsValid() && !ct.AsTime().IsZero() && e.GetStatus() != enums.WORKFLOW_EXECUTION_STATUS_RUNNING {
		r.End = ct.AsTime()
		end = r.End
	}
	r.Duration = end.Sub(r.Start).Round(time.Millisecond).String()
	return r
}

// executionStatusName is the snake_case name of a workflow status: completed, timed_out, …
// Temporal's "canceled" is spelt like replctl's phase: cancelled.
func executionStatusName(s enums.WorkflowExecutionStatus) string {
	if s == enums.WORKFLOW_EXECUTION_STATUS_CANCELED {
		return "cancelled"
	}
	return enumName(s.String(), "WORKFLOW_EXECUTION_STATUS_")
}

// enumName turns a Temporal API enum name into snake_case: the API prints "TimedOut" (and
// older versions "WORKFLOW_EXECUTION_STATUS_TIMED_OUT").
func enumName(s, prefix string) string {
	s = strings.TrimPrefix(s, prefix)
	if strings.Contains(s, "_") || strings.ToUpper(s) == s {
		return strings.ToLower(s)
	}
	var b strings.Builder
	for i, r := range s {
		if unicode.IsUpper(r) && i > 0 {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}

// payloadString decodes a keyword search attribute or a string memo ("" if absent).
func payloadString(p *commonpb.Payload) string {
	if p == nil {
		return ""
	}
	var s string
	if err := converter.GetDefaultDataConverter().FromPayload(p, &s); err != nil {
		return ""
	}
	return s
}

// memoString decodes a string memo with dc ("" if absent or not decodable).
func memoString(dc converter.DataConverter, p *commonpb.Payload) string {
	var s string
	if p == nil || dc.FromPayload(p, &s) != nil {
		return ""
	}
	return s
}

func printRuns(w io.Writer, rows []runRow) {
	if len(rows) == 0 {
		fmt.Fprintln(w, "no runs found (visibility lags a moment behind new runs; widen --since or drop --status)")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tRUN ID\tSTATUS\tPHASE\tBY\tSTART\tDURATION")
	for _, r := range rows {
		status := r.Status
		if r.QuiescedHost != "" && r.Status != "running" {
			status += " (HOST " + r.QuiescedHost + " LEFT QUIESCED)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Job, r.RunID, status, dash(r.Phase), r.Trigger, r.Start.Local().Format(time.DateTime), r.Duration)
	}
	tw.Flush()
}

// completeJobs completes a JOB argument with the config's job names (only those with a
// schedule when scheduled is set).
func completeJobs(f *Factory, scheduled bool) cobra.CompletionFunc {
	return func(_ *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp // one JOB only
		}
		return jobNames(f, scheduled, toComplete), cobra.ShellCompDirectiveNoFileComp
	}
}

// completeJobFlag completes a --job flag with the config's job names.
func completeJobFlag(f *Factory) cobra.CompletionFunc {
	return func(_ *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		return jobNames(f, false, toComplete), cobra.ShellCompDirectiveNoFileComp
	}
}

func jobNames(f *Factory, scheduled bool, prefix string) []string {
	cfg, err := f.Config()
	if err != nil {
		return nil
	}
	var names []string
	for _, j := range cfg.Jobs {
		if (!scheduled || j.Schedule != nil) && strings.HasPrefix(j.Name, prefix) {
			names = append(names, j.Name)
		}
	}
	return names
}

// withJobCompletion gives a command that takes a JOB argument job-name completion.
func withJobCompletion(f *Factory, cmd *cobra.Command) *cobra.Command {
	cmd.ValidArgsFunction = completeJobs(f, false)
	return cmd
}
