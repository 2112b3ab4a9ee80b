package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/workflows"
)

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
