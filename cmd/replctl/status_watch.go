package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/replctl/replctl/config"
)

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
