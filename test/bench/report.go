package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Sample is one timed run of one tool.
type Sample struct {
	Dataset string `json:"dataset"`
	Mode    string `json:"mode"` // full, incremental, empty, empty-first
	Tool    string `json:"tool"` // replctl, rsync, cp
	Round   int    `json:"round"`
	// Seconds is end to end, including the final sync.
	Seconds     float64 `json:"seconds"`
	SyncSeconds float64 `json:"sync_seconds"`
	// FreezeSeconds: replctl = quiesce script's activity completed → resume script's
	// activity started (history); rsync/cp = the copy itself (a consistent copy needs the
	// application frozen throughout).
	FreezeSeconds float64 `json:"freeze_seconds"`
	// FreezeScriptSeconds is the same window as the scripts logged it (quiesce end → resume start).
	FreezeScriptSeconds float64 `json:"freeze_script_seconds,omitempty"`
	// TrashSeconds: after a replctl run, how long the target agent went on deleting the
	// retired replica in the background (not part of Seconds; waited for, so it never
	// overlaps the next timed run).
	TrashSeconds    float64            `json:"trash_seconds,omitempty"`
	WorkflowSeconds float64            `json:"workflow_seconds,omitempty"`
	CLISeconds      float64            `json:"cli_seconds,omitempty"`
	Steps           map[string]float64 `json:"steps,omitempty"`
	// PeakRSS per process: agents (a1, a2, b1) or the peer tool, bytes.
	PeakRSS    map[string]int64 `json:"peak_rss,omitempty"`
	PushFiles  int64            `json:"push_files,omitempty"`
	PushReused int64            `json:"push_reused,omitempty"`
	Linked     int64            `json:"linked_files,omitempty"`
	Restored   int64            `json:"restored_files,omitempty"`
	// Recycled: the retired replica the pull brought up to date; Kept: its files that stayed.
	Recycled string `json:"recycled,omitempty"`
	Kept     int64  `json:"kept_files,omitempty"`
	// Allocated: bytes the copy allocates on the target (sparse dataset only).
	Allocated    int64   `json:"allocated_bytes,omitempty"`
	CacheDropped bool    `json:"cache_dropped"`
	Load1        float64 `json:"load1"`
}

// TakeoverSample is one kill -9 of the pushing agent.
type TakeoverSample struct {
	Sample             int     `json:"sample"`
	Dataset            string  `json:"dataset"`
	KillAfterPushStart float64 `json:"kill_after_push_start_seconds"`
	// LatencySeconds: kill → first activity started by the next agent (history).
	LatencySeconds float64 `json:"latency_seconds"`
	FirstActivity  string  `json:"first_activity"`
	// DetectSeconds: kill → the push's heartbeat timeout event.
	DetectSeconds float64 `json:"detect_seconds"`
	// WorkflowTaskTimeouts after the kill: a workflow task sent to the dead agent's sticky
	// queue waits for its schedule-to-start timeout before another agent gets it.
	WorkflowTaskTimeouts []string `json:"workflow_task_timeouts,omitempty"`
	// Timeline lists every activity attempt relative to the kill (seconds).
	Timeline []string `json:"timeline,omitempty"`
	// ScriptSeconds: kill → the takeover script started (its own log).
	ScriptSeconds float64 `json:"takeover_script_seconds"`
	RunSeconds    float64 `json:"run_seconds"`
	Missed        string  `json:"missed,omitempty"`
}

// ProfileRun is one CPU-profiled replication (push on a1, pull on b1).
type ProfileRun struct {
	Dataset     string            `json:"dataset"`
	Mode        string            `json:"mode"`
	RunSeconds  float64           `json:"run_seconds"`
	PushSeconds float64           `json:"push_seconds"`
	PullSeconds float64           `json:"pull_seconds"`
	Files       []string          `json:"files"`
	Top         map[string]string `json:"top"`
}

// Row is one line of the results table.
type Row struct {
	Dataset string  `json:"dataset"`
	Mode    string  `json:"mode"`
	Tool    string  `json:"tool"`
	Runs    int     `json:"runs"`
	Median  float64 `json:"median_seconds"`
	Freeze  float64 `json:"median_freeze_seconds"`
	// PeakRSS is the largest peak over the runs, per process.
	PeakRSS map[string]int64 `json:"peak_rss"`
	// Allocated is the largest allocation of a copy over the runs (sparse dataset only).
	Allocated int64 `json:"allocated_bytes,omitempty"`
	// Ratios of the row's median to the peer's (replctl rows and the floors'; 0 = not
	// measured).
	VsRsync float64 `json:"replctl_over_rsync,omitempty"`
	VsCp    float64 `json:"replctl_over_cp,omitempty"`
}

// Goal is one goal of the issue with the measured value.
type Goal struct {
	Name     string  `json:"name"`
	Measured string  `json:"measured"`
	Limit    string  `json:"limit"`
	Met      bool    `json:"met"`
	Value    float64 `json:"value"`
	Known    bool    `json:"known"` // false when the inputs were not measured
	// BelowFloor says what of the source alone took longer than the limit allows:
	// "reading" (toolRead: no copy that reads the files can meet it on this machine) or
	// "walking" (toolWalk: only a change source can). Empty: the floor is below the limit
	// or was not measured.
	BelowFloor string `json:"below_floor,omitempty"`
}

// Report is everything the bench measured; results.md and results.json are written from it.
type Report struct {
	Mode      string           `json:"mode"`
	Started   time.Time        `json:"started"`
	Finished  time.Time        `json:"finished"`
	Machine   string           `json:"machine"`
	Rev       string           `json:"replctl_rev,omitempty"`
	Journal   string           `json:"change_journal,omitempty"`
	Binaries  string           `json:"binaries"`
	CacheDrop bool             `json:"page_cache_dropped"`
	RSSMethod string           `json:"rss_method"`
	Heartbeat string           `json:"heartbeat_timeout"`
	Runs      int              `json:"runs"`
	Datasets  []Spec           `json:"datasets"`
	Samples   []Sample         `json:"samples"`
	Takeovers []TakeoverSample `json:"takeovers"`
	Profiles  []ProfileRun     `json:"profiles,omitempty"`
	Rows      []Row            `json:"rows"`
	Goals     []Goal           `json:"goals"`
	heartbeat time.Duration
}

// binaries says which builds ran what: the packages ship the CLI and agent as a slim build
// and the server as the full one, and the bench measures them the same way.
func binaries(o options) string {
	size := func(p string) string {
		if fi, err := os.Stat(p); err == nil {
			return human(fi.Size())
		}
		return "size unknown"
	}
	if o.serverBin == o.bin {
		return fmt.Sprintf("CLI, agents and server: %s (%s)", filepath.Base(o.bin), size(o.bin))
	}
	return fmt.Sprintf("CLI and agents: %s (%s); server: %s (%s)", filepath.Base(o.bin), size(o.bin), filepath.Base(o.serverBin), size(o.serverBin))
}

func newReport(o options) *Report {
	return &Report{
		Mode: o.mode, Started: time.Now(), Machine: machineInfo(), Runs: o.runs, Rev: o.rev, Journal: o.journal,
		Binaries:  binaries(o),
		Heartbeat: o.heartbeat.String(), heartbeat: o.heartbeat,
		RSSMethod: "VmHWM of each agent process from /proc/PID/status, reset with `echo 5 > /proc/PID/clear_refs` before every timed run; " +
			"agents are also restarted (empty state) before every full run because a full run uses a fresh repository. " +
			"cp/rsync: sum of the VmHWM of every process of the tool, polled every 20 ms while it runs.",
	}
}

// values returns f of every sample of (dataset, mode, tool).
func (r *Report) values(dataset, mode, tool string, f func(Sample) float64) []float64 {
	var out []float64
	for _, s := range r.Samples {
		if s.Dataset == dataset && s.Mode == mode && s.Tool == tool {
			out = append(out, f(s))
		}
	}
	return out
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// finish computes the table rows and the goals.
func (r *Report) finish() {
	r.Rows = nil
	type key struct{ d, m, t string }
	seen := map[key]bool{}
	for _, s := range r.Samples {
		k := key{s.Dataset, s.Mode, s.Tool}
		if seen[k] {
			continue
		}
		seen[k] = true
		row := Row{Dataset: s.Dataset, Mode: s.Mode, Tool: s.Tool, PeakRSS: map[string]int64{}}
		for _, x := range r.Samples {
			if x.Dataset == s.Dataset && x.Mode == s.Mode && x.Tool == s.Tool {
				row.Runs++
				for p, v := range x.PeakRSS {
					row.PeakRSS[p] = max(row.PeakRSS[p], v)
				}
				row.Allocated = max(row.Allocated, x.Allocated)
			}
		}
		row.Median = median(r.values(s.Dataset, s.Mode, s.Tool, func(s Sample) float64 { return s.Seconds }))
		row.Freeze = median(r.values(s.Dataset, s.Mode, s.Tool, func(s Sample) float64 { return s.FreezeSeconds }))
		r.Rows = append(r.Rows, row)
	}
	for i := range r.Rows {
		row := &r.Rows[i]
		if !isReplctl(row.Tool) && !isFloor(row.Tool) {
			continue
		}
		if v := r.row(row.Dataset, row.Mode, "rsync"); v != nil && v.Median > 0 {
			row.VsRsync = row.Median / v.Median
		}
		if v := r.row(row.Dataset, row.Mode, "cp"); v != nil && v.Median > 0 {
			row.VsCp = row.Median / v.Median
		}
	}
	r.Goals = r.goals()
}

func (r *Report) row(dataset, mode, tool string) *Row {
	for i := range r.Rows {
		if x := &r.Rows[i]; x.Dataset == dataset && x.Mode == mode && x.Tool == tool {
			return x
		}
	}
	return nil
}

// goals evaluates the goals on the medians.
func (r *Report) goals() []Goal {
	var gs []Goal
	ratio := func(name string, num, den *Row, numFreeze, denFreeze bool, limit float64) {
		g := Goal{Name: name, Limit: fmt.Sprintf("≤ %.1f×", limit)}
		if num != nil && den != nil {
			a, b := num.Median, den.Median
			if numFreeze {
				a = num.Freeze
			}
			if denFreeze {
				b = den.Freeze
			}
			if b > 0 {
				g.Known, g.Value = true, a/b
				g.Met = g.Value <= limit
				g.Measured = fmt.Sprintf("%.2f× (%.2fs vs %.2fs)", g.Value, a, b)
			}
		}
		gs = append(gs, g)
	}
	for _, d := range []string{"a", "b"} {
		D := strings.ToUpper(d)
		ratio("freeze window, 1% incremental, "+D+": replctl freeze / rsync incremental copy",
			r.row(d, "incremental", "replctl"), r.row(d, "incremental", "rsync"), true, true, 0.5)
	}
	// Issue 16's goals (end to end, full and incremental), each beside its floor: the same
	// ratio for reading (full) or walking (incremental) the source alone.
	floor := func(d, mode, tool, peer string, limit float64) {
		g, f, den := &gs[len(gs)-1], r.row(d, mode, tool), r.row(d, mode, peer)
		if g.Known && f != nil && den != nil && den.Median > 0 {
			v := f.Median / den.Median
			what := map[string]string{toolRead: "reading", toolWalk: "walking"}[tool]
			g.Measured += fmt.Sprintf("; %s the source alone %.2fs, %.2f×", what, f.Median, v)
			if v > limit {
				g.BelowFloor = what
			}
		}
	}
	incrLimit := map[string]float64{"a": 1.0, "b": 0.5}
	for _, d := range []string{"a", "b"} {
		D := strings.ToUpper(d)
		ratio("end to end, 1% incremental, "+D+": replctl / rsync",
			r.row(d, "incremental", "replctl"), r.row(d, "incremental", "rsync"), false, false, incrLimit[d])
		floor(d, "incremental", toolWalk, "rsync", incrLimit[d])
	}
	// The same two with `precopy: never` (not the default): shorter end to end, longer freeze.
	for _, d := range []string{"a", "b"} {
		D := strings.ToUpper(d)
		if row := r.row(d, "incremental", toolNoPrecopy); row != nil {
			ratio("(precopy: never) end to end, 1% incremental, "+D+": replctl / rsync",
				row, r.row(d, "incremental", "rsync"), false, false, incrLimit[d])
			ratio("(precopy: never) freeze window, 1% incremental, "+D+": replctl freeze / rsync incremental copy",
				row, r.row(d, "incremental", "rsync"), true, true, 0.5)
		}
	}
	full := func(d, peer string, limit float64) {
		ratio("end to end, full, "+strings.ToUpper(d)+": replctl / "+peer, r.row(d, "full", "replctl"), r.row(d, "full", peer), false, false, limit)
		floor(d, "full", toolRead, peer, limit)
	}
	fullLimit := map[string]float64{"a": 1.0, "b": 0.7}
	for _, d := range []string{"a", "b"} {
		full(d, "rsync", fullLimit[d])
	}
	full("a", "cp", 1.5)
	if r.row("c", growthMode(2), "replctl") != nil {
		ratio("end to end, 0.1% incremental, C: replctl / rsync (no change source)",
			r.row("c", growthMode(2), "replctl"), r.row("c", growthMode(2), "rsync"), false, false, 0.5)
		floor("c", growthMode(2), toolWalk, "rsync", 0.5)
	}
	gs = append(gs, r.peakGoal("b", 256), r.peakGoal("c", 512))

	g := Goal{Name: "empty-dataset replication, end to end (median, warm agents)", Limit: "≤ 0.10 s"}
	if row := r.row("empty", "empty", "replctl"); row != nil {
		g.Known, g.Value = true, row.Median
		g.Met = row.Median <= 0.10
		wf := median(r.values("empty", "empty", "replctl", func(s Sample) float64 { return s.WorkflowSeconds }))
		g.Measured = fmt.Sprintf("%.3fs (workflow alone %.3fs)", row.Median, wf)
	}
	gs = append(gs, g)

	limit := r.heartbeat + time.Second
	g = Goal{Name: "takeover: kill -9 of the pushing agent → next agent's first activity (worst sample)", Limit: fmt.Sprintf("≤ %.2f s (heartbeat %s + 1 s)", limit.Seconds(), r.heartbeat)}
	var worst float64
	n := 0
	for _, t := range r.Takeovers {
		if t.Missed == "" {
			n++
			worst = math.Max(worst, t.LatencySeconds)
		}
	}
	if n > 0 {
		g.Known, g.Value = true, worst
		g.Met = worst <= limit.Seconds()
		g.Measured = fmt.Sprintf("%.3fs (worst of %d)", worst, n)
	}
	gs = append(gs, g)
	return gs
}

// peakGoal is the peak RSS of any agent over every replctl run on dataset d, against
// limitMiB.
func (r *Report) peakGoal(d string, limitMiB int64) Goal {
	g := Goal{Name: fmt.Sprintf("agent peak RSS on %s (any agent, full and incremental)", strings.ToUpper(d)), Limit: fmt.Sprintf("≤ %d MiB", limitMiB)}
	var peak int64
	who := ""
	for _, s := range r.Samples {
		if s.Dataset == d && isReplctl(s.Tool) && (s.Mode == "full" || strings.HasPrefix(s.Mode, "incremental")) {
			for p, v := range s.PeakRSS {
				if v > peak {
					peak, who = v, fmt.Sprintf("%s, %s #%d", p, s.Mode, s.Round)
				}
			}
		}
	}
	if peak > 0 {
		g.Known, g.Value = true, float64(peak)
		g.Met = peak <= limitMiB<<20
		g.Measured = fmt.Sprintf("%s (%s)", mib(peak), who)
	}
	return g
}

// write stores results-<mode>.md (table, goals, raw JSON) and results-<mode>.json under
// dir, and the same as results.md / results.json (the latest run of any mode).
func (r *Report) write(dir, mode string) error {
	if r.Rows == nil {
		r.finish()
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# replctl benchmark (%s, %s)\n\n", r.Mode, r.Started.Format(time.RFC3339))
	for _, l := range strings.Split(strings.TrimSpace(r.header()), "\n") {
		fmt.Fprintf(&b, "- %s\n", l)
	}
	b.WriteString("\n## Results\n\n")
	b.WriteString(r.table())
	if g := r.growthTable(); g != "" {
		b.WriteString("\n## Growth with the change on C (medians)\n\n")
		b.WriteString(g)
	}
	b.WriteString("\n## Goals\n\n")
	b.WriteString(r.goalTable())
	if len(r.Takeovers) > 0 {
		b.WriteString("\n## Takeover samples\n\n")
		b.WriteString(r.takeoverText())
	}
	for _, t := range r.Takeovers {
		if len(t.Timeline) > 0 {
			fmt.Fprintf(&b, "\nTimeline of takeover sample %d (seconds relative to the kill):\n\n```\n%s\n```\n", t.Sample, strings.Join(t.Timeline, "\n"))
		}
	}
	for _, p := range r.Profiles {
		fmt.Fprintf(&b, "\n## CPU profiles, %s %s (push %.2f s on a1, pull %.2f s on b1)\n", p.Mode, strings.ToUpper(p.Dataset), p.PushSeconds, p.PullSeconds)
		for _, h := range []string{"a1", "b1"} {
			fmt.Fprintf(&b, "\n### %s\n\n```\n%s```\n", h, firstLines(p.Top[h], 30))
		}
	}
	b.WriteString("\n## Raw data\n\n```json\n")
	b.Write(js)
	b.WriteString("\n```\n")
	for _, f := range []struct {
		name string
		data []byte
	}{
		{"results-" + mode + ".json", js}, {"results-" + mode + ".md", []byte(b.String())},
		{"results.json", js}, {"results.md", []byte(b.String())},
	} {
		// Written aside and renamed: a concurrent run of the other mode never leaves half a file.
		tmp := filepath.Join(dir, "."+f.name+".tmp-"+mode)
		if err := os.WriteFile(tmp, f.data, 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, filepath.Join(dir, f.name)); err != nil {
			return err
		}
	}
	return nil
}
