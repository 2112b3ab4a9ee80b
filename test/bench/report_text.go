package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/replctl/replctl/activities"
)

// growthTable shows how each tool's incremental time grows with the change on C.
func (r *Report) growthTable() string {
	var b strings.Builder
	b.WriteString("| change | replctl | rsync | replctl/rsync | walk of the source (/rsync) | replctl freeze | replctl steps (median run) |\n|---|---|---|---|---|---|---|\n")
	n := 0
	for _, mode := range growthModes() {
		rp, rs := r.row("c", mode, "replctl"), r.row("c", mode, "rsync")
		if rp == nil || rs == nil {
			continue
		}
		n++
		walk := "–"
		if w := r.row("c", mode, toolWalk); w != nil {
			walk = fmt.Sprintf("%.2f s (%s)", w.Median, fmtRatio(w.VsRsync))
		}
		fmt.Fprintf(&b, "| %s | %.2f s | %.2f s | %s | %s | %.2f s | %s |\n", strings.TrimPrefix(mode, "incremental "), rp.Median, rs.Median, fmtRatio(rp.VsRsync), walk, rp.Freeze, fmtSteps(r.medianSteps("c", mode)))
	}
	if n == 0 {
		return ""
	}
	return b.String()
}

// medianSteps is the step times of the median-time replctl run of dataset d in mode.
func (r *Report) medianSteps(d, mode string) map[string]float64 {
	var runs []Sample
	for _, s := range r.Samples {
		if s.Dataset == d && s.Mode == mode && s.Tool == "replctl" {
			runs = append(runs, s)
		}
	}
	if len(runs) == 0 {
		return nil
	}
	sort.Slice(runs, func(i, j int) bool { return runs[i].Seconds < runs[j].Seconds })
	return runs[len(runs)/2].Steps
}

func fmtRatio(v float64) string {
	if v == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", v)
}

func fmtRowRSS(row Row) string {
	if len(row.PeakRSS) == 0 {
		return "–"
	}
	if !isReplctl(row.Tool) {
		return fmtRSS(row.PeakRSS)
	}
	var parts []string
	for _, h := range []string{"a1", "b1"} {
		if v, ok := row.PeakRSS[h]; ok {
			parts = append(parts, fmt.Sprintf("%s %s", h, mib(v)))
		}
	}
	return strings.Join(parts, ", ")
}

// table is the results table in markdown (also readable as plain text).
func (r *Report) table() string {
	var b strings.Builder
	b.WriteString("| dataset | mode | tool | runs | median time | freeze window | peak RSS | / rsync | / cp | allocated |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, row := range r.Rows {
		freeze := fmt.Sprintf("%.2f s", row.Freeze)
		if strings.HasPrefix(row.Mode, "empty") {
			freeze = fmt.Sprintf("%.3f s", row.Freeze)
		}
		if isFloor(row.Tool) {
			freeze = "–"
		}
		med := fmt.Sprintf("%.2f s", row.Median)
		if strings.HasPrefix(row.Mode, "empty") {
			med = fmt.Sprintf("%.3f s", row.Median)
		}
		alloc := "–"
		if row.Allocated > 0 {
			alloc = human(row.Allocated)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %d | %s | %s | %s | %s | %s | %s |\n", strings.ToUpper(row.Dataset), row.Mode, row.Tool, row.Runs,
			med, freeze, fmtRowRSS(row), fmtRatio(row.VsRsync), fmtRatio(row.VsCp), alloc)
	}
	return b.String()
}

func (r *Report) goalTable() string {
	var b strings.Builder
	b.WriteString("| goal | measured | limit | result |\n|---|---|---|---|\n")
	for _, g := range r.Goals {
		res, meas := "MISSED", g.Measured
		if g.Met {
			res = "met"
		} else if g.BelowFloor != "" {
			res = "MISSED: the limit is below " + g.BelowFloor + " the source alone"
		}
		if !g.Known {
			res, meas = "not measured", "–"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", g.Name, meas, g.Limit, res)
	}
	return b.String()
}

func (r *Report) header() string {
	var b strings.Builder
	fmt.Fprintf(&b, "mode %s, %d timed run(s) per tool and mode (medians), alternating order; %s\n", r.Mode, r.Runs, r.Machine)
	if r.Rev != "" {
		fmt.Fprintf(&b, "replctl built from %s\n", r.Rev)
	}
	if r.Journal != "" && r.Journal != "off" {
		fmt.Fprintf(&b, "agents ran with --change-journal=%s\n", r.Journal)
	}
	fmt.Fprintf(&b, "%s\n", r.Binaries)
	for _, s := range r.Datasets {
		fmt.Fprintf(&b, "dataset %s: %d files of %s–%s (%s)", strings.ToUpper(s.Name), s.Files, human(int64(s.MinSize)), human(int64(s.MaxSize)), human(s.Bytes()))
		if s.Growth {
			fmt.Fprintf(&b, "; rounds rewrite %d, %d and %d files (0.01 %%, 0.1 %%, 1 %%) in turn", s.rewrites(1), s.rewrites(2), s.rewrites(3))
		} else {
			fmt.Fprintf(&b, "; 1%% mutation = %d rewritten", s.rewrites(1))
		}
		if s.AddDel > 0 {
			fmt.Fprintf(&b, ", %d added, %d deleted", s.AddDel, s.AddDel)
		}
		b.WriteString("\n")
	}
	timed, dropped := 0, 0
	for _, s := range r.Samples {
		if !strings.HasPrefix(s.Mode, "empty") { // the empty dataset runs warm on purpose
			timed++
			if s.CacheDropped {
				dropped++
			}
		}
	}
	switch {
	case timed > 0 && dropped == timed:
		fmt.Fprintf(&b, "page cache: DROPPED before every timed run (%d of %d; sync; echo 3 > /proc/sys/vm/drop_caches); empty-dataset runs are warm on purpose\n", dropped, timed)
	case dropped > 0:
		fmt.Fprintf(&b, "page cache: dropped before only %d of %d timed runs: mixed cold/warm timings\n", dropped, timed)
	case r.CacheDrop:
		b.WriteString("page cache: can be dropped here (sync; echo 3 > /proc/sys/vm/drop_caches)\n")
	default:
		b.WriteString("page cache: could NOT be dropped (needs root and a writable /proc/sys): warm-cache timings\n")
	}
	fmt.Fprintf(&b, "every time includes a final `sync`; replctl = `replctl start JOB --wait` (server + agents as processes, heartbeat %s)\n", r.Heartbeat)
	fmt.Fprintf(&b, "peak RSS: %s\n", r.RSSMethod)
	var loads []float64
	for _, s := range r.Samples {
		loads = append(loads, s.Load1)
	}
	if len(loads) > 0 {
		sort.Float64s(loads)
		fmt.Fprintf(&b, "1-min load average before the timed runs: median %.1f, max %.1f (other work on the machine skews timings)\n", median(loads), loads[len(loads)-1])
	}
	return b.String()
}

func (r *Report) takeoverText() string {
	var b strings.Builder
	for _, t := range r.Takeovers {
		if t.Missed != "" {
			fmt.Fprintf(&b, "- sample %d (dataset %s): missed: %s\n", t.Sample, strings.ToUpper(t.Dataset), t.Missed)
			continue
		}
		fmt.Fprintf(&b, "- sample %d (dataset %s, a1 killed %.2fs into its push): heartbeat timeout after %.3fs, workflow task timeouts: %s, a2's first activity (%s) after %.3fs, takeover script after %.3fs; run done in %.2fs, replica verified\n",
			t.Sample, strings.ToUpper(t.Dataset), t.KillAfterPushStart, t.DetectSeconds, orNone(t.WorkflowTaskTimeouts), t.FirstActivity, t.LatencySeconds, t.ScriptSeconds, t.RunSeconds)
	}
	return b.String()
}

// text is what the command prints at the end.
func (r *Report) text() string {
	var b strings.Builder
	b.WriteString("== replctl benchmark ==\n")
	b.WriteString(r.header())
	b.WriteString("\n")
	b.WriteString(r.table())
	if g := r.growthTable(); g != "" {
		b.WriteString("\ngrowth on C (medians):\n")
		b.WriteString(g)
	}
	b.WriteString("\ngoals:\n")
	b.WriteString(r.goalTable())
	if len(r.Takeovers) > 0 {
		b.WriteString("\ntakeover samples:\n")
		b.WriteString(r.takeoverText())
	}
	for _, p := range r.Profiles {
		fmt.Fprintf(&b, "\nCPU profiles of a %s %s replication (push %.2fs on a1, pull %.2fs on b1): %s\n", p.Mode, strings.ToUpper(p.Dataset), p.PushSeconds, p.PullSeconds, strings.Join(p.Files, ", "))
		for _, h := range []string{"a1", "b1"} {
			fmt.Fprintf(&b, "\n-- %s (%s), go tool pprof -top --\n%s", h, map[string]activities.Step{"a1": activities.StepPush, "b1": activities.StepPull}[h], firstLines(p.Top[h], 22))
		}
	}
	return b.String()
}

func firstLines(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "")
}
