package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"go.temporal.io/api/enums/v1"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/workflows"
)

// StatusOptions are the arguments and flags of `replctl status`.
type StatusOptions struct {
	Job    string
	RunID  string
	Output string
}

// statusView is what `status` shows: the run's own status plus what the server knows.
type statusView struct {
	WorkflowID      string `json:"workflow_id"`
	ExecutionStatus string `json:"execution_status,omitempty"`
	workflows.Status
	// Live is the running step's last heartbeat, when a step is running.
	Live *liveStep `json:"live,omitempty"`
}

type liveStep struct {
	Activity string               `json:"activity"`
	Attempt  int32                `json:"attempt"`
	Progress *activities.Progress `json:"progress,omitempty"`
}

// NewCmdStatus is `replctl status JOB`.
func NewCmdStatus(f *Factory, runF func(*StatusOptions) error) *cobra.Command {
	o := &StatusOptions{}
	cmd := &cobra.Command{
		Use:   "status JOB",
		Short: "Show the latest run of a job: phase, agents, takeovers, progress, replica",
		Args:  exactArgs(1, "one job name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Job = args[0]
			if err := checkOutput(o.Output); err != nil {
				return err
			}
			if runF != nil {
				return runF(o)
			}
			return runStatus(cmd, f, o)
		},
	}
	cmd.Flags().StringVarP(&o.Output, "output", "o", "table", "output: table or json")
	cmd.Flags().StringVar(&o.RunID, "run", "", "run ID (default: the latest run)")
	return cmd
}

func runStatus(cmd *cobra.Command, f *Factory, o *StatusOptions) error {
	ctx := cmd.Context()
	c, err := f.Client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	id := workflows.WorkflowID(o.Job)
	desc, err := c.DescribeWorkflowExecution(ctx, id, o.RunID)
	if err != nil {
		return fmt.Errorf("no run of job %s found (workflow %s): %w", o.Job, id, err)
	}
	v := statusView{WorkflowID: id, ExecutionStatus: strings.ToLower(desc.GetWorkflowExecutionInfo().GetStatus().String())}
	runID := desc.GetWorkflowExecutionInfo().GetExecution().GetRunId()
	q, err := c.QueryWorkflow(ctx, id, runID, workflows.StatusQuery)
	if err != nil {
		return fmt.Errorf("query status of job %s run %s (are agents running?): %w", o.Job, runID, err)
	}
	if err := q.Get(&v.Status); err != nil {
		return err
	}
	for _, pa := range desc.GetPendingActivities() {
		if pa.GetState() != enums.PENDING_ACTIVITY_STATE_STARTED {
			continue
		}
		l := &liveStep{Activity: pa.GetActivityType().GetName(), Attempt: pa.GetAttempt()}
		if d := pa.GetHeartbeatDetails(); d != nil && len(d.GetPayloads()) > 0 {
			var p activities.Progress
			if err := json.Unmarshal(d.GetPayloads()[0].GetData(), &p); err == nil {
				l.Progress = &p
			}
		}
		v.Live = l
	}
	if o.Output == "json" {
		return writeJSON(f.Out, v)
	}
	printStatus(f.Out, v)
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printStatus writes the human form of a status.
func printStatus(w io.Writer, v statusView) {
	s := v.Status
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "job\t%s\n", s.Job)
	fmt.Fprintf(tw, "run\t%s %s\n", v.WorkflowID, s.RunID)
	phase := s.Phase
	if v.ExecutionStatus != "" && v.ExecutionStatus != "workflow_execution_status_running" {
		phase += " (" + strings.TrimPrefix(v.ExecutionStatus, "workflow_execution_status_") + ")"
	}
	fmt.Fprintf(tw, "phase\t%s\n", phase)
	fmt.Fprintf(tw, "agents\tapplication=%s source=%s target=%s\n", dash(s.Agents.Application), dash(s.Agents.Source), dash(s.Agents.Target))
	if s.SourcePath != "" {
		fmt.Fprintf(tw, "source\t%s\n", s.SourcePath)
	}
	if s.Image != "" {
		fmt.Fprintf(tw, "image\t%s\n", s.Image)
	}
	if s.Progress.Step != "" {
		fmt.Fprintf(tw, "progress\t%s: %d files, %s\n", s.Progress.Step, s.Progress.FilesDone, humanBytes(s.Progress.BytesDone))
	}
	if l := v.Live; l != nil && l.Progress != nil {
		p := l.Progress
		fmt.Fprintf(tw, "running\t%s on %s, %s: %d/%d files, %s/%s\n", l.Activity, p.Agent, p.Phase, p.FilesDone, p.FilesTotal, humanBytes(p.BytesDone), humanBytes(p.BytesTotal))
	}
	if r := s.Replica; r != nil {
		fmt.Fprintf(tw, "replica\t%s (verified=%t, by %s, epoch %d)\n", r.Path, r.Verified, r.Agent, r.Epoch)
		fmt.Fprintf(tw, "published at\t%s\n", r.Link)
	}
	for _, t := range s.Takeovers {
		to := t.To
		if to == "" {
			to = "(none left)"
		}
		fmt.Fprintf(tw, "takeover\t%s %s: %s -> %s at %s: %s\n", t.Role, t.Step, t.From, to, t.Time.Format("15:04:05.000"), t.Reason)
	}
	for _, sc := range s.Scripts {
		fmt.Fprintf(tw, "script\t%s %s on %s by %s: exit %d in %s\n", sc.Step, sc.Script, sc.Host, sc.Agent, sc.ExitCode, sc.Duration.Round(1e6))
	}
	for _, n := range s.Notes {
		fmt.Fprintf(tw, "note\t%s\n", n)
	}
	if s.QuiescedHost != "" && (s.Phase == workflows.PhaseFailed || s.Phase == workflows.PhaseCancelled) {
		fmt.Fprintf(tw, "WARNING\thost %s was LEFT QUIESCED: run its resume script by hand\n", s.QuiescedHost)
	}
	if s.Error != "" {
		fmt.Fprintf(tw, "error\t%s\n", s.Error)
	}
	tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
