package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/internal/runhistory"
	"github.com/replctl/replctl/internal/testworld"
	"github.com/stretchr/testify/require"
	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	taskqueuepb "go.temporal.io/api/taskqueue/v1"
	"go.temporal.io/sdk/converter"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func tinySpec() Spec {
	return Spec{Name: "t", Files: 300, MinSize: 100, MaxSize: 900, PerDir: 40, AddDel: 3, Seed: 7}
}

// A generated dataset mutates by about 1 %, reverts to exactly its base state, and is
// reused from the cache (including reverting a run that died mid-way).
func TestDatasetMutateRevertReuse(t *testing.T) {
	dir := t.TempDir()
	data, meta := filepath.Join(dir, "data"), filepath.Join(dir, "meta")
	var logs []string
	logf := func(f string, a ...any) { logs = append(logs, f) }

	ds, err := PrepareDataset(tinySpec(), data, meta, logf)
	require.NoError(t, err)
	require.Contains(t, logs[len(logs)-1], "generating")
	base, err := testworld.Digest(data)
	require.NoError(t, err)
	// 300 files + empty-file + empty-dir + link + 8 leaf dirs and their parents.
	require.Len(t, base.Files(), 301)

	m1, err := ds.Mutate()
	require.NoError(t, err)
	require.Len(t, m1.Rewrite, 3)
	require.Len(t, m1.Delete, 3)
	require.Len(t, m1.Add, 3)
	after1, err := testworld.Digest(data)
	require.NoError(t, err)
	kinds := map[string]int{}
	for _, l := range base.Differences(after1) {
		kinds[strings.Fields(l)[0]]++
	}
	require.Equal(t, map[string]int{"differs": 3, "missing": 3, "extra": 3}, kinds)

	_, err = ds.Mutate()
	require.NoError(t, err)
	require.NoError(t, ds.Revert())
	reverted, err := testworld.Digest(data)
	require.NoError(t, err)
	require.Empty(t, base.Diff(reverted, 5))

	// A bench that died after two rounds: the next one reverts and reuses the copy.
	_, err = ds.Mutate()
	require.NoError(t, err)
	_, err = ds.Mutate()
	require.NoError(t, err)
	logs = nil
	_, err = PrepareDataset(tinySpec(), data, meta, logf)
	require.NoError(t, err)
	require.Contains(t, logs[0], "reverting")
	require.Contains(t, logs[len(logs)-1], "reusing")
	again, err := testworld.Digest(data)
	require.NoError(t, err)
	require.Empty(t, base.Diff(again, 5))

	// Changed parameters regenerate; a damaged tree too.
	logs = nil
	s2 := tinySpec()
	s2.Files = 310
	_, err = PrepareDataset(s2, data, meta, logf)
	require.NoError(t, err)
	require.Contains(t, logs[len(logs)-1], "generating")
	require.NoError(t, os.Remove(filepath.Join(data, s2.path(5))))
	logs = nil
	_, err = PrepareDataset(s2, data, meta, logf)
	require.NoError(t, err)
	require.Contains(t, logs[0], "unusable")
}

// Mutation rounds never rewrite or delete a file an earlier round deleted, and are the
// same whenever recomputed (revert depends on it).
func TestMutationsDeterministic(t *testing.T) {
	s := tinySpec()
	a, b := s.mutations(20), s.mutations(20)
	require.Equal(t, a, b)
	deleted := map[int]bool{}
	for _, m := range a {
		for _, i := range append(append([]int(nil), m.Rewrite...), m.Delete...) {
			require.False(t, deleted[i], "round %d touches file %d deleted earlier", m.Round, i)
		}
		for _, i := range m.Delete {
			deleted[i] = true
		}
	}
}

// A Growth dataset's rounds rewrite 0.01 %, 0.1 % and 1 % of its files in turn.
func TestGrowthRounds(t *testing.T) {
	s := Spec{Name: "c", Files: 20000, MinSize: 1, MaxSize: 2, PerDir: 500, Seed: 3, Growth: true}
	var got []int
	for _, m := range s.mutations(6) {
		got = append(got, len(m.Rewrite))
		require.Empty(t, m.Add)
		require.Empty(t, m.Delete)
	}
	require.Equal(t, []int{2, 20, 200, 2, 20, 200}, got)
	require.Equal(t, "incremental 1%", growthMode(6))
}

// Goals are judged on medians, with the right numerator and denominator.
func TestGoals(t *testing.T) {
	r := &Report{heartbeat: 2 * time.Second}
	add := func(d, m, tool string, secs, freeze float64, rss int64) {
		r.Samples = append(r.Samples, Sample{Dataset: d, Mode: m, Tool: tool, Seconds: secs, FreezeSeconds: freeze, PeakRSS: map[string]int64{"a1": rss}})
	}
	for _, v := range []float64{1, 2, 30} { // median 2, not mean 11
		add("a", "incremental", "replctl", v, v/10, 100<<20)
	}
	add("a", "incremental", "rsync", 4, 3, 0)
	add("b", "full", "replctl", 13, 10, 300<<20)
	add("b", "full", "rsync", 10, 10, 0)
	// B's 1 %: walking the source alone takes longer than 0.5× rsync.
	add("b", "incremental", "replctl", 3, 1, 100<<20)
	add("b", "incremental", "rsync", 4, 4, 0)
	r.Samples = append(r.Samples, Sample{Dataset: "b", Mode: "incremental", Tool: toolWalk, Seconds: 2.5})
	// Reading B alone takes longer than 0.7× rsync; the reader's RSS is not measured.
	r.Samples = append(r.Samples, Sample{Dataset: "b", Mode: "full", Tool: toolRead, Seconds: 12})
	add("empty", "empty", "replctl", 0.4, 0.1, 0)
	for i, m := range growthModes() { // C: replctl 1, 2, 4 s; rsync 10 s each; walk 4 s
		add("c", m, "replctl", float64(int(1)<<i), 0.5, 600<<20)
		add("c", m, "rsync", 10, 10, 0)
		r.Samples = append(r.Samples, Sample{Dataset: "c", Mode: m, Tool: toolWalk, Seconds: 4})
	}
	r.Takeovers = []TakeoverSample{{LatencySeconds: 2.5}, {LatencySeconds: 3.2}}
	r.finish()

	got := map[string]Goal{}
	for _, g := range r.Goals {
		got[g.Name] = g
	}
	g := got["freeze window, 1% incremental, A: replctl freeze / rsync incremental copy"]
	require.True(t, g.Known)
	require.InDelta(t, 0.2/3, g.Value, 1e-9)
	require.True(t, g.Met)
	g = got["end to end, 1% incremental, A: replctl / rsync"]
	require.InDelta(t, 0.5, g.Value, 1e-9)
	require.True(t, g.Met)
	g = got["end to end, full, B: replctl / rsync"]
	require.InDelta(t, 1.3, g.Value, 1e-9)
	require.False(t, g.Met, "issue 16: ≤ 0.7×")
	require.Equal(t, "reading", g.BelowFloor, "the read alone is 1.2× rsync")
	require.Contains(t, g.Measured, "reading the source alone 12.00s, 1.20×")
	g = got["end to end, 1% incremental, B: replctl / rsync"]
	require.False(t, g.Met)
	require.Equal(t, "walking", g.BelowFloor, "the walk alone is 0.625× rsync")
	g = got["end to end, 0.1% incremental, C: replctl / rsync (no change source)"]
	require.InDelta(t, 0.2, g.Value, 1e-9)
	require.True(t, g.Met)
	require.Contains(t, g.Measured, "walking the source alone 4.00s, 0.40×")
	require.Empty(t, g.BelowFloor, "the walk is below the limit")
	g = got["end to end, 1% incremental, A: replctl / rsync"]
	require.NotContains(t, g.Measured, "walking", "A's walk was not measured")
	require.False(t, got["agent peak RSS on C (any agent, full and incremental)"].Met, "600 MiB > 512 MiB")
	require.False(t, got["end to end, full, A: replctl / rsync"].Known)
	g = got["agent peak RSS on B (any agent, full and incremental)"]
	require.False(t, g.Met)
	require.False(t, got["empty-dataset replication, end to end (median, warm agents)"].Met, "0.4 s > 0.10 s")
	g = got["takeover: kill -9 of the pushing agent → next agent's first activity (worst sample)"]
	require.InDelta(t, 3.2, g.Value, 1e-9)
	require.False(t, g.Met)

	row := r.row("a", "incremental", "replctl")
	require.Equal(t, 3, row.Runs)
	require.InDelta(t, 0.5, row.VsRsync, 1e-9)
	require.Zero(t, row.VsCp)

	dir := t.TempDir()
	require.NoError(t, r.write(dir, "small"))
	md, err := os.ReadFile(filepath.Join(dir, "results.md"))
	require.NoError(t, err)
	mdSmall, err := os.ReadFile(filepath.Join(dir, "results-small.md"))
	require.NoError(t, err)
	require.Equal(t, md, mdSmall)
	require.NoError(t, err)
	require.Contains(t, string(md), "| A | incremental | replctl | 3 | 2.00 s |")
	require.Contains(t, string(md), "MISSED")
	require.Contains(t, string(md), "| B | full | read | 1 | 12.00 s | – | – | 1.20 | – | – |")
	require.Contains(t, string(md), "MISSED: the limit is below reading the source alone")
	require.Contains(t, string(md), "MISSED: the limit is below walking the source alone")
	require.Contains(t, string(md), "| 0.1% | 2.00 s | 10.00 s | 0.20 | 4.00 s (0.40) | 0.50 s |")
	require.Contains(t, string(md), "| C | incremental 0.1% | walk | 1 | 4.00 s | – | – | 0.40 | – | – |")
	require.Equal(t, []string{"incremental 0.01%", "incremental 0.1%", "incremental 1%"}, growthModes())
}

// watchTree sees the peak RSS of a grandchild (dd's 64 MiB buffer under sh).
func TestWatchTreePeak(t *testing.T) {
	cmd := exec.Command("sh", "-c", "dd if=/dev/zero of=/dev/null bs=64M count=40 2>/dev/null; true")
	require.NoError(t, cmd.Start())
	w := watchTree(cmd.Process.Pid, 5*time.Millisecond)
	require.NoError(t, cmd.Wait())
	peak := w.finish()
	require.GreaterOrEqual(t, peak, int64(64<<20), "dd's buffer")
	require.Less(t, peak, int64(160<<20))
}

// A second bench of the same mode on one directory is refused while the first holds the lock.
func TestLockDir(t *testing.T) {
	f := filepath.Join(t.TempDir(), ".lock-small")
	unlock, err := lockDir(f)
	require.NoError(t, err)
	_, err = lockDir(f)
	require.ErrorContains(t, err, "another bench of this mode is running")
	require.ErrorContains(t, err, fmt.Sprint(os.Getpid()))
	unlock()
	unlock2, err := lockDir(f)
	require.NoError(t, err)
	unlock2()
}

// The freeze window, step times and the takeover's first start come out of a history.
func TestParseHistory(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	dc := converter.GetDefaultDataConverter()
	at := func(ms int) *timestamppb.Timestamp {
		return timestamppb.New(t0.Add(time.Duration(ms) * time.Millisecond))
	}
	var evs []*historypb.HistoryEvent
	add := func(ms int, typ enums.EventType, attrs any) int64 {
		ev := &historypb.HistoryEvent{EventId: int64(len(evs) + 1), EventTime: at(ms), EventType: typ}
		switch a := attrs.(type) {
		case *historypb.ActivityTaskScheduledEventAttributes:
			ev.Attributes = &historypb.HistoryEvent_ActivityTaskScheduledEventAttributes{ActivityTaskScheduledEventAttributes: a}
		case *historypb.ActivityTaskStartedEventAttributes:
			ev.Attributes = &historypb.HistoryEvent_ActivityTaskStartedEventAttributes{ActivityTaskStartedEventAttributes: a}
		case *historypb.ActivityTaskCompletedEventAttributes:
			ev.Attributes = &historypb.HistoryEvent_ActivityTaskCompletedEventAttributes{ActivityTaskCompletedEventAttributes: a}
		case *historypb.ActivityTaskTimedOutEventAttributes:
			ev.Attributes = &historypb.HistoryEvent_ActivityTaskTimedOutEventAttributes{ActivityTaskTimedOutEventAttributes: a}
		case *historypb.WorkflowTaskTimedOutEventAttributes:
			ev.Attributes = &historypb.HistoryEvent_WorkflowTaskTimedOutEventAttributes{WorkflowTaskTimedOutEventAttributes: a}
		}
		evs = append(evs, ev)
		return ev.EventId
	}
	thawed := false
	activity := func(typ, queue, step, who string, sched, start, end int, outcome enums.EventType) {
		var input, result any = activities.ScriptInput{Step: activities.Step(step)}, activities.PushResult{Files: 10, Reused: 7}
		if typ == "Push" && step == "quiesce" { // the quiesce travelled in the push
			input = activities.PushInput{Quiesce: &activities.ScriptInput{Step: activities.StepQuiesce}}
			res := activities.PushResult{Files: 10, Reused: 7, Duration: 30 * time.Millisecond, Quiesce: &activities.ScriptResult{Step: activities.StepQuiesce, Duration: 5 * time.Millisecond},
				Precopy: &activities.PrecopyResult{Duration: 20 * time.Millisecond}}
			if thawed { // and the resume
				res.Thawed = &activities.ScriptResult{Step: activities.StepResume, Duration: 4 * time.Millisecond}
			}
			result = res
		}
		in, err := dc.ToPayloads(input)
		require.NoError(t, err)
		id := add(sched, enums.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED, &historypb.ActivityTaskScheduledEventAttributes{
			ActivityType: &commonpb.ActivityType{Name: typ}, TaskQueue: &taskqueuepb.TaskQueue{Name: queue}, Input: in})
		// As with a retry policy: the started event is written when the attempt closes.
		add(start, enums.EVENT_TYPE_ACTIVITY_TASK_STARTED, &historypb.ActivityTaskStartedEventAttributes{ScheduledEventId: id, Identity: who})
		if outcome == enums.EVENT_TYPE_ACTIVITY_TASK_COMPLETED {
			res, err := dc.ToPayloads(result)
			require.NoError(t, err)
			add(end, outcome, &historypb.ActivityTaskCompletedEventAttributes{ScheduledEventId: id, Result: res})
		} else {
			add(end, outcome, &historypb.ActivityTaskTimedOutEventAttributes{ScheduledEventId: id})
		}
	}
	done := enums.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
	add(0, enums.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED, nil)
	activity("RunScript", "replctl-host-a1", "quiesce", "replctl-agent-a1", 10, 12, 40, done)
	activity("Push", "replctl-host-a1", "", "replctl-agent-a1", 50, 52, 2600, enums.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT)
	add(2610, enums.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT, &historypb.WorkflowTaskTimedOutEventAttributes{TimeoutType: enums.TIMEOUT_TYPE_SCHEDULE_TO_START})
	activity("RunScript", "replctl-host-a2", "takeover", "replctl-agent-a2", 2620, 2630, 2650, done)
	activity("Push", "replctl-host-a2", "", "replctl-agent-a2", 2660, 2670, 3000, done)
	activity("RunScript", "replctl-host-a2", "resume", "replctl-agent-a2", 3010, 3040, 3060, done)
	add(4000, enums.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED, nil)

	rh := runHistory{runhistory.Parse(evs, dc)}
	fr, err := rh.freeze()
	require.NoError(t, err)
	require.Equal(t, 3000*time.Millisecond, fr) // quiesce closed at 40 ms, resume started at 3040 ms
	require.Equal(t, 4*time.Second, rh.End.Sub(rh.Start))
	steps := rh.steps()
	require.InDelta(t, 0.33, steps["push"], 1e-9) // only the completed attempt
	require.InDelta(t, 0.02, steps["takeover"], 1e-9)
	first := rh.firstStartBy("replctl-agent-a2", t0.Add(100*time.Millisecond))
	require.NotNil(t, first)
	require.Equal(t, activities.StepTakeover, first.Step)
	require.Equal(t, t0.Add(2630*time.Millisecond), first.Started)
	require.Len(t, rh.WorkflowTaskTimeouts, 1)
	require.Equal(t, "schedule_to_start", runhistory.TimeoutName(rh.WorkflowTaskTimeouts[0].TimeoutType))
	files, reused := rh.pushStats()
	require.Equal(t, [2]int64{10, 7}, [2]int64{files, reused})
	require.Len(t, rh.timeline(t0), 6) // 5 activities + 1 workflow task timeout

	// One activity precopied, quiesced and pushed (and, with thaw, resumed too).
	fusedRun := func(thaw bool) runHistory {
		evs, thawed = nil, thaw
		add(0, enums.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED, nil)
		activity("Push", "replctl-host-a1", "quiesce", "replctl-agent-a1", 10, 12, 100, done)
		if !thaw {
			activity("RunScript", "replctl-host-a1", "resume", "replctl-agent-a1", 140, 150, 160, done)
		}
		add(200, enums.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED, nil)
		return runHistory{runhistory.Parse(evs, dc)}
	}
	// The freeze is the push part's time (30 ms, the agent's measure) plus its completion
	// (at 100 ms) to the resume's start (150 ms), not counting the precopy part (20 ms) or
	// the script.
	rh = fusedRun(false)
	fr, err = rh.freeze()
	require.NoError(t, err)
	require.Equal(t, 80*time.Millisecond, fr)
	steps = rh.steps()
	require.InDelta(t, 0.005, steps["quiesce"], 1e-9)
	require.InDelta(t, 0.020, steps["precopy"], 1e-9)
	require.InDelta(t, 0.063, steps["push"], 1e-9) // 88 ms, less the script's 5 and the precopy's 20

	// The resume travelled in the push too: the freeze is the push part's time alone, and
	// the thaw's time is the resume step's.
	rh = fusedRun(true)
	fr, err = rh.freeze()
	require.NoError(t, err)
	require.Equal(t, 30*time.Millisecond, fr)
	steps = rh.steps()
	require.InDelta(t, 0.004, steps["resume"], 1e-9)
	require.InDelta(t, 0.059, steps["push"], 1e-9) // 88 ms, less the script's 5, the precopy's 20 and the thaw's 4
}

// The read floor reads every regular file once, through no symlink, and counts what the
// digest counts.
func TestReadTree(t *testing.T) {
	root := t.TempDir()
	require.NoError(t, os.MkdirAll(filepath.Join(root, "d", "e"), 0o755))
	sizes := map[string]int{"a": 0, "d/b": 5000, "d/e/c": 3 << 20}
	var want int64
	for name, n := range sizes {
		require.NoError(t, os.WriteFile(filepath.Join(root, name), make([]byte, n), 0o644))
		want += int64(n)
	}
	outside := filepath.Join(t.TempDir(), "big")
	require.NoError(t, os.WriteFile(outside, make([]byte, 1<<20), 0o644))
	require.NoError(t, os.Symlink(outside, filepath.Join(root, "d", "link")))

	for _, readers := range []int{1, 3} {
		files, bytes, err := readTree(t.Context(), root, readers)
		require.NoError(t, err)
		require.Equal(t, int64(3), files, "readers %d", readers)
		require.Equal(t, want, bytes, "readers %d", readers)
	}
	tree, err := testworld.Digest(root)
	require.NoError(t, err)
	files, bytes := digestFiles(tree)
	require.Equal(t, int64(3), files)
	require.Equal(t, want, bytes)

	_, _, err = readTree(t.Context(), filepath.Join(root, "missing"), 2)
	require.Error(t, err)
}

// The walk floor sees every entry below the root once (the root itself, a symlink's target
// and a file's contents are not its business) and stops with an error it meets.
func TestWalkTree(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"a/b/c", "a/d", "e"} {
		require.NoError(t, os.MkdirAll(filepath.Join(root, d), 0o755))
	}
	for _, f := range []string{"a/b/c/f1", "a/f2", "e/f3", "f4"} {
		require.NoError(t, os.WriteFile(filepath.Join(root, f), []byte("x"), 0o644))
	}
	require.NoError(t, os.Symlink(t.TempDir(), filepath.Join(root, "a", "link")))
	tree, err := testworld.Digest(root)
	require.NoError(t, err)
	for _, walkers := range []int{1, 4} {
		n, err := walkTree(t.Context(), root, walkers)
		require.NoError(t, err)
		require.Equal(t, int64(len(tree)-1), n, "walkers %d", walkers)
		require.Equal(t, int64(10), n) // 5 directories, 4 files and a symlink below the root
	}
	_, err = walkTree(t.Context(), filepath.Join(root, "missing"), 2)
	require.Error(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err = walkTree(ctx, root, 2)
	require.ErrorIs(t, err, context.Canceled)
}
