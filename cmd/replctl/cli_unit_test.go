package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/workflows"
)

// Every one of these is refused before any connection is made (the address is unused).
func TestNewCommandsRejectBadUsage(t *testing.T) {
	t.Setenv("REPLCTL_STATE", t.TempDir())
	for _, args := range [][]string{
		{"schedule", "describe"},
		{"schedule", "pause", "a", "b"},
		{"schedule", "sync", "extra"},
		{"schedule", "sync", "--bogus-flag"},
		{"schedule", "backfill", "orders"},
		{"schedule", "backfill", "orders", "--start", "yesterday"},
		{"schedule", "backfill", "orders", "--start", "-1h", "--end", "-2h"},
		{"schedule", "trigger", "orders", "--overlap", "sometimes"},
		{"schedule", "list", "-o", "yaml"},
		{"list", "extra"},
		{"list", "--status", "bogus"},
		{"list", "--since", "lately"},
		{"list", "--job", "Bad Name"},
		{"list", "--limit", "0"},
		{"list", "-o", "yaml"},
		{"history"},
		{"history", "orders", "-o", "xml"},
		{"cancel"},
		{"cancel", "a", "b"},
		{"replicas", "a", "b"},
		{"replicas", "nojob"},
		{"status"},
		{"status", "a", "b"},
		{"status", "orders", "--watch", "-o", "json"},
		{"status", "orders", "--watch", "--interval", "1ms"},
		{"verify"},
		{"verify", "orders", "r1", "r2"},
		{"verify", "orders", "r1", "--all"},
		{"verify", "orders", "-o", "yaml"},
		{"verify", "nojob"},
		{"images"},
		{"images", "orders", "x"},
		{"images", "orders", "-o", "yaml"},
		{"restore", "orders"},
		{"restore", "orders", "img"},
		{"restore", "orders", "img", "--to", "relative/dir"},
		{"restore", "orders", "img", "--to", "/a/../b"},
	} {
		var out bytes.Buffer
		f := NewFactory(&out, &out)
		root := NewCmdRoot(f)
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append([]string{"--config", "../../config/examples/dev.yaml", "--address", "127.0.0.1:1"}, args...))
		began := time.Now()
		err := root.Execute()
		require.Equal(t, ExitUsage, exitCode(err), "replctl %s: %v", strings.Join(args, " "), err)
		require.Less(t, time.Since(began), 2*time.Second, "replctl %s must fail before dialing", strings.Join(args, " "))
	}
}

func TestNewCommandsParseArgs(t *testing.T) {
	f := NewFactory(&bytes.Buffer{}, &bytes.Buffer{})
	var so *ScheduleOptions
	cmd := NewCmdSchedule(f, func(o *ScheduleOptions) error { so = o; return nil })
	_, err := run(t, cmd, "pause", "orders", "--note", "maintenance")
	require.NoError(t, err)
	require.Equal(t, &ScheduleOptions{Action: "pause", Job: "orders", Note: "maintenance", Output: "table"}, so)
	cmd = NewCmdSchedule(f, func(o *ScheduleOptions) error { so = o; return nil })
	_, err = run(t, cmd, "backfill", "orders", "--start", "2025-01-01T00:00:00Z", "--overlap", "allow_all", "-o", "json")
	require.NoError(t, err)
	require.Equal(t, &ScheduleOptions{Action: "backfill", Job: "orders", Start: "2025-01-01T00:00:00Z", End: "now", Overlap: "allow_all", Output: "json"}, so)

	var lo *ListOptions
	_, err = run(t, NewCmdList(f, func(o *ListOptions) error { lo = o; return nil }), "--job", "orders", "--status", "cancelled", "--since", "7d")
	require.NoError(t, err)
	require.Equal(t, &ListOptions{Job: "orders", Status: "cancelled", Since: "7d", Limit: 50, Output: "table"}, lo)
	q, err := lo.query(time.Date(2025, 1, 8, 0, 0, 0, 0, time.UTC))
	require.NoError(t, err)
	require.Equal(t, "WorkflowType = 'Replication' AND WorkflowId = 'replctl-orders' AND ExecutionStatus = 'Canceled' AND StartTime > '2025-01-01T00:00:00Z'", q)

	var st *StatusOptions
	_, err = run(t, NewCmdStatus(f, func(o *StatusOptions) error { st = o; return nil }), "--run", "r1", "--watch", "--interval", "200ms")
	require.NoError(t, err)
	require.Equal(t, &StatusOptions{RunID: "r1", Output: "table", Watch: true, Interval: 200 * time.Millisecond}, st)

	var co *CancelOptions
	_, err = run(t, NewCmdCancel(f, func(o *CancelOptions) error { co = o; return nil }), "orders", "--wait")
	require.NoError(t, err)
	require.Equal(t, &CancelOptions{Job: "orders", Wait: true, Output: "table"}, co)

	var ho *HistoryOptions
	_, err = run(t, NewCmdHistory(f, func(o *HistoryOptions) error { ho = o; return nil }), "orders", "--run", "r2", "-o", "json")
	require.NoError(t, err)
	require.Equal(t, &HistoryOptions{Job: "orders", RunID: "r2", Output: "json"}, ho)

	var ro *ReplicasOptions
	_, err = run(t, NewCmdReplicas(f, func(o *ReplicasOptions) error { ro = o; return nil }), "orders", "--no-size")
	require.NoError(t, err)
	require.Equal(t, &ReplicasOptions{Job: "orders", NoSize: true, Output: "table"}, ro)

	var vo *VerifyOptions
	_, err = run(t, NewCmdVerify(f, func(o *VerifyOptions) error { vo = o; return nil }), "orders", "r1", "-o", "json")
	require.NoError(t, err)
	require.Equal(t, &VerifyOptions{Job: "orders", Replica: "r1", Output: "json"}, vo)
	_, err = run(t, NewCmdVerify(f, func(o *VerifyOptions) error { vo = o; return nil }), "orders", "--all")
	require.NoError(t, err)
	require.Equal(t, &VerifyOptions{Job: "orders", All: true, Output: "table"}, vo)
	_, err = run(t, NewCmdVerify(f, func(o *VerifyOptions) error { vo = o; return nil }), "orders", "--all", "--repair")
	require.NoError(t, err)
	require.Equal(t, &VerifyOptions{Job: "orders", All: true, Repair: true, Output: "table"}, vo)

	var rso *RestoreOptions
	_, err = run(t, NewCmdRestore(f, func(o *RestoreOptions) error { rso = o; return nil }), "orders", "k1", "--to", "/srv/b/restores/x")
	require.NoError(t, err)
	require.Equal(t, &RestoreOptions{Job: "orders", Image: "k1", To: "/srv/b/restores/x", Output: "table"}, rso)

	var cko *CheckOptions
	_, err = run(t, NewCmdCheck(f, func(o *CheckOptions) error { cko = o; return nil }))
	require.NoError(t, err)
	require.Equal(t, &CheckOptions{Wait: 10 * time.Second, Output: "table"}, cko)
	_, err = run(t, NewCmdCheck(f, func(o *CheckOptions) error { cko = o; return nil }), "orders", "--wait", "3s", "-o", "json")
	require.NoError(t, err)
	require.Equal(t, &CheckOptions{Job: "orders", Wait: 3 * time.Second, Output: "json"}, cko)
	_, err = run(t, NewCmdCheck(f, func(o *CheckOptions) error { return nil }), "a", "b")
	require.Equal(t, ExitUsage, exitCode(err))
}

func TestAssessRPO(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	s := &config.Schedule{Cron: "@every 1h", Jitter: 5 * time.Minute}
	fresh := &lastReplica{At: now.Add(-30 * time.Minute), RunTook: 2 * time.Minute}
	v := assessRPO(s, time.Hour, "server", fresh, now)
	require.False(t, v.Late)
	require.Equal(t, time.Hour+5*time.Minute+2*time.Minute, v.Allowed)
	require.Equal(t, 30*time.Minute, v.Age)
	require.Contains(t, rpoLine(v), "ok: last replica 30m0s old")

	stale := &lastReplica{At: now.Add(-68 * time.Minute), RunTook: 2 * time.Minute}
	v = assessRPO(s, time.Hour, "server", stale, now)
	require.True(t, v.Late)
	require.True(t, strings.HasPrefix(rpoLine(v), "LATE: last replica 1h8m0s old"), rpoLine(v))

	v = assessRPO(s, time.Hour, "cron", nil, now)
	require.True(t, v.Late, "a scheduled job without any replica is late")
	require.Contains(t, rpoLine(v), "no replica yet")

	v = assessRPO(&config.Schedule{Cron: "0 3 * * 1-5"}, 0, "", fresh, now)
	require.False(t, v.Late, "unknown interval: no flag")
	require.Contains(t, rpoLine(v), "schedule sync")
}

func TestEnumName(t *testing.T) {
	require.Equal(t, "schedule_to_start", enumName(enums.TIMEOUT_TYPE_SCHEDULE_TO_START.String(), "TIMEOUT_TYPE_"))
	require.Equal(t, "timed_out", executionStatusName(enums.WORKFLOW_EXECUTION_STATUS_TIMED_OUT))
	require.Equal(t, "cancelled", executionStatusName(enums.WORKFLOW_EXECUTION_STATUS_CANCELED))
	require.Equal(t, "continued_as_new", enumName("WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW", "WORKFLOW_EXECUTION_STATUS_"))
	require.Equal(t, "buffer_one", overlapName(enums.SCHEDULE_OVERLAP_POLICY_BUFFER_ONE))
}

func TestCronInterval(t *testing.T) {
	for cron, want := range map[string]time.Duration{
		"@every 2s": 2 * time.Second, "@every 6h/30m": 6 * time.Hour, "@every 2d": 48 * time.Hour,
		"@hourly": time.Hour, "@daily # nightly": 24 * time.Hour, "@weekly": 7 * 24 * time.Hour,
		"0 3 * * *": 0,
	} {
		require.Equal(t, want, cronInterval(cron), cron)
	}
	now := time.Now()
	require.Equal(t, 25*time.Hour, maxGap([]time.Time{now, now.Add(24 * time.Hour), now.Add(49 * time.Hour)}))
}

func TestLiveLine(t *testing.T) {
	start := time.Now().Add(-10 * time.Second)
	l := newLiveStep(activities.PushName, 1, nil, start, start.Add(4*time.Second))
	require.Contains(t, liveLine(l), "no progress reported yet")

	l = &liveStep{Activity: activities.PushName, Attempt: 2, Started: start, LastHeartbeat: start.Add(4 * time.Second),
		Progress: &activities.Progress{Step: "push", Phase: "upload", Agent: "a2", BytesDone: 4 << 20, BytesTotal: 8 << 20, FilesDone: 10, FilesTotal: 20}}
	// newLiveStep computes rate and ETA from the heartbeat payload the same way.
	l.BytesPerSecond = float64(l.Progress.BytesDone) / 4
	l.ETA = "4s"
	require.Equal(t, "push on a2 (upload) [##########..........]  50% 4.0 MiB/8.0 MiB, 10/20 files, 1.0 MiB/s, ETA 4s (attempt 2)", liveLine(l))
	l.Progress = &activities.Progress{Step: "pull", Phase: "open", Agent: "b1"}
	require.Equal(t, "pull on b1 (open), starting", liveLine(l))
	l.Progress = &activities.Progress{Step: "pull", Phase: activities.PhaseWaitingForSlot + " on host b1: 1 data steps running (max_concurrent_steps 1), 0 waiting ahead", Agent: "b1"}
	require.Regexp(t, `^pull waiting for a slot on host b1: 1 data steps running \(max_concurrent_steps 1\), 0 waiting ahead, for 10(\.\d)?s$`, liveLine(l))
	l = &liveStep{Activity: activities.PullName, Attempt: 1, Scheduled: start, Host: "b1"}
	require.Regexp(t, `^pull scheduled on host b1's queue 10(\.\d)?s ago, not started: no agent of b1 has taken it yet`, liveLine(l))
	require.Equal(t, "[????]", progressBar(-1, 4))
	require.Equal(t, "[####]", progressBar(1.5, 4))
}

func TestWatcherOutput(t *testing.T) {
	now := time.Now()
	v := statusView{WorkflowID: "replctl-orders", ExecutionStatus: "running"}
	v.Job, v.RunID, v.Phase = "orders", "r1", workflows.PhasePushing
	v.Agents.Application, v.Agents.Source = "a1", "a1"
	v.Live = &liveStep{Activity: activities.PushName, Attempt: 1, Progress: &activities.Progress{Step: "push", Phase: "upload", Agent: "a1", BytesDone: 1, BytesTotal: 4}}

	// A terminal gets frames redrawn in place.
	var tty bytes.Buffer
	w := &watcher{out: &tty, tty: true}
	w.show(v, now)
	w.show(v, now.Add(time.Second))
	require.Equal(t, 1, strings.Count(tty.String(), "\x1b[2J"), "screen cleared once")
	require.Equal(t, 2, strings.Count(tty.String(), "\x1b[H"), "one redraw per refresh")
	require.Contains(t, tty.String(), "push on a1 (upload) [#####...............]  25%")

	// A pipe gets a line per change; progress alone at most every progressEvery.
	var pipe bytes.Buffer
	w = &watcher{out: &pipe}
	w.show(v, now)
	v.Live.Progress.BytesDone = 2
	w.show(v, now.Add(500*time.Millisecond))
	require.Equal(t, 2, strings.Count(pipe.String(), "\n"), "header and one progress line: %s", pipe.String())
	w.show(v, now.Add(progressEvery+time.Second))
	require.Equal(t, 3, strings.Count(pipe.String(), "\n"))
	v.Takeovers = []workflows.Takeover{{Role: "source", Step: "push", From: "a1", To: "a2", Reason: "heartbeat timeout", Time: now}}
	v.Agents.Source = "a2"
	w.show(v, now.Add(progressEvery+1500*time.Millisecond))
	require.Contains(t, pipe.String(), "TAKEOVER source push: a1 -> a2")
	require.Contains(t, pipe.String(), "source=a2 target=- takeovers=1")
	require.NotContains(t, pipe.String(), "\x1b[")
	require.False(t, isTerminal(&pipe))
}

func TestRateTracker(t *testing.T) {
	t0 := time.Now()
	step := func(agent, phase string, done int64, hb time.Duration) *liveStep {
		return &liveStep{Activity: activities.PullName, Attempt: 1, LastHeartbeat: t0.Add(hb), BytesPerSecond: 999, ETA: "average",
			Progress: &activities.Progress{Step: "pull", Phase: phase, Agent: agent, BytesDone: done, BytesTotal: 100 << 20}}
	}
	var r rateTracker
	l := step("b1", "restore", 10<<20, 0)
	r.update(l)
	require.Zero(t, l.BytesPerSecond, "one heartbeat of a step: no rate yet")
	require.Empty(t, l.ETA)
	l = step("b1", "restore", 20<<20, time.Second)
	r.update(l)
	require.Equal(t, float64(10<<20), l.BytesPerSecond)
	require.Equal(t, "8s", l.ETA)
	l = step("b1", "restore", 40<<20, 2*time.Second)
	r.update(l)
	require.Equal(t, float64(15<<20), l.BytesPerSecond, "smoothed: half the new 20 MiB/s, half the old 10")
	require.Equal(t, "4s", l.ETA)
	l = step("b1", "restore", 40<<20, 2*time.Second)
	r.update(l)
	require.Equal(t, float64(15<<20), l.BytesPerSecond, "no new heartbeat: the rate stays")

	// A phase change, or another agent taking over, starts over.
	l = step("b1", "verify", 5<<20, 3*time.Second)
	r.update(l)
	require.Zero(t, l.BytesPerSecond)
	l = step("b2", "verify", 60<<20, 4*time.Second)
	r.update(l)
	require.Zero(t, l.BytesPerSecond, "a taker's first heartbeat counts reused bytes: no rate from it")
	r.update(nil)
	require.Empty(t, r.key)
}

func TestFormatSpec(t *testing.T) {
	require.Equal(t, "@every 2s", formatSpec(&client.ScheduleSpec{Intervals: []client.ScheduleIntervalSpec{{Every: 2 * time.Second}}}))
	require.Equal(t, "@every 6h/30m", formatSpec(&client.ScheduleSpec{Intervals: []client.ScheduleIntervalSpec{{Every: 6 * time.Hour, Offset: 30 * time.Minute}}}))
	require.Equal(t, "sec=0 min=30 hour=3 dom=1-31 month=1-12 dow=1-5",
		formatSpec(&client.ScheduleSpec{Calendars: []client.ScheduleCalendarSpec{{
			Second: []client.ScheduleRange{{}}, Minute: []client.ScheduleRange{{Start: 30}}, Hour: []client.ScheduleRange{{Start: 3}},
			DayOfMonth: []client.ScheduleRange{{Start: 1, End: 31}}, Month: []client.ScheduleRange{{Start: 1, End: 12}}, DayOfWeek: []client.ScheduleRange{{Start: 1, End: 5}},
		}}}))
}

// Replicas share unchanged files as hard links: ADDED counts each file's blocks once, in
// the oldest replica that has it.
func TestMeasureTreeCountsHardLinksOnce(t *testing.T) {
	dir := t.TempDir()
	older, newer := filepath.Join(dir, "r1"), filepath.Join(dir, "r2")
	require.NoError(t, os.MkdirAll(older, 0o755))
	require.NoError(t, os.MkdirAll(newer, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(older, "same"), bytes.Repeat([]byte("x"), 64<<10), 0o644))
	require.NoError(t, os.Link(filepath.Join(older, "same"), filepath.Join(newer, "same")))
	require.NoError(t, os.WriteFile(filepath.Join(newer, "changed"), bytes.Repeat([]byte("y"), 32<<10), 0o644))
	seen := map[[2]uint64]bool{}
	r1, r2 := &replicaRow{Path: older}, &replicaRow{Path: newer}
	require.NoError(t, measureTree(r1, seen))
	require.NoError(t, measureTree(r2, seen))
	require.Equal(t, int64(64<<10), r1.Bytes)
	require.Equal(t, int64(96<<10), r2.Bytes)
	require.EqualValues(t, 2, r2.Files)
	require.GreaterOrEqual(t, r1.AddedBytes, int64(64<<10))
	require.GreaterOrEqual(t, r2.AddedBytes, int64(32<<10))
	require.Less(t, r2.AddedBytes, int64(64<<10), "the shared file is not counted again")
}

// Fan-out and group runs show a line per target (with its datasets) and name the target of
// a takeover; a plain run does not get target lines.
func TestPrintStatusTargets(t *testing.T) {
	v := statusView{WorkflowID: "replctl-orders"}
	v.Job, v.RunID, v.Phase = "orders", "r1", workflows.PhaseFailed
	v.Images = []string{"i1", "i2"}
	v.Targets = []workflows.TargetStatus{
		{Storage: "array-b", Phase: workflows.TargetCompleted, Agent: "b2", Group: "/b/.replctl/groups/orders/current",
			Replicas: []workflows.Replica{{Dataset: "orders/db", Path: "/b/.replctl/replicas/db/r", Verified: true}, {Dataset: "orders/logs", Path: "/b/.replctl/replicas/logs/r", Verified: true}}},
		{Storage: "array-c", Phase: workflows.TargetFailed, Agent: "c1", Error: "pull failed on every target agent in order [c1]"},
	}
	v.Takeovers = []workflows.Takeover{{Role: "target", Step: "pull", From: "b1", To: "b2", Reason: "heartbeat timeout", Target: "array-b"}}
	var out bytes.Buffer
	printStatus(&out, v)
	s := out.String()
	require.Contains(t, s, "images          i1, i2 (one point in time)")
	require.Contains(t, s, "target array-b  completed on b2: 2 datasets published together (/b/.replctl/groups/orders/current)")
	require.Contains(t, s, "  orders/logs   /b/.replctl/replicas/logs/r (verified=true)")
	require.Contains(t, s, "target array-c  failed on c1: pull failed on every target agent in order [c1]")
	require.Contains(t, s, "target array-b pull: b1 -> b2")

	out.Reset()
	v.Images, v.Targets, v.Takeovers = nil, []workflows.TargetStatus{{Storage: "array-b", Phase: workflows.TargetCompleted, Replicas: []workflows.Replica{{Dataset: "orders"}}}}, nil
	printStatus(&out, v)
	require.NotContains(t, out.String(), "target array-b")
}

// A run's precopy shows in its status: what it copied ahead of the freeze, or that it was
// skipped.
func TestPrintStatusPrecopy(t *testing.T) {
	v := statusView{WorkflowID: "replctl-orders"}
	v.Job, v.RunID, v.Phase = "orders", "r1", workflows.PhaseCompleted
	v.Precopy = &workflows.Precopy{Agent: "a1", Files: 200000, Bytes: 3 << 30, Reused: 198000, Seconds: 4.81}
	var out bytes.Buffer
	printStatus(&out, v)
	require.Contains(t, out.String(), "precopy  by a1 before quiesce: 200000 files, 3.0 GiB (198000 unchanged) in 4.8s")

	out.Reset()
	v.Precopy = &workflows.Precopy{Agent: "a1", Files: 10, Bytes: 1 << 20, Reused: 9, Seconds: 0.5, SkippedDatasets: 1}
	printStatus(&out, v)
	require.Contains(t, out.String(), "precopy  by a1 before quiesce: 10 files, 1.0 MiB (9 unchanged) in 0.5s; 1 dataset(s) skipped: a small image, a push that read little, or a first copy where the source's times are another host's")

	out.Reset()
	v.Precopy = &workflows.Precopy{Agent: "a2", Skipped: true, SkippedDatasets: 1}
	printStatus(&out, v)
	require.Contains(t, out.String(), "precopy  skipped by a2: a small image, a push that read little, or a first copy where the source's times are another host's")
}
