package workflows

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/replctl/replctl/activities"
)

// fakeAgents plays the agents of a test run: each activity looks at the queue it was sent
// to, so tests can make one host's agent fail.
type fakeAgents struct {
	mu    sync.Mutex
	calls []string // "step@agent" or "script:step:host@agent"
	// fail returns the error an activity on agent fails with, or nil.
	fail func(kind, agent string) error
	// plan, if set, edits the plan the fake Plan activity returns.
	plan func(*activities.Plan)
	// pushes and pulls are the inputs of every push and pull, in order.
	pushes []activities.PushInput
	pulls  []activities.PullInput
	// precopySkips are the datasets whose precopy reports Skipped.
	precopySkips []string
	// preflights are the inputs of every preflight, in order (not in calls: most tests
	// assert the steps that follow it).
	preflights []activities.PreflightInput
	// inPrecopy and inPush count the preflights a precopy or a push carried; thaws the
	// resume scripts a push ran.
	inPrecopy, inPush, thaws int
	// unsupported is what every push reports its image lacks (on_unsupported: skip).
	unsupported *activities.Unsupported
	// warms are the inputs of every WarmReplica (not in calls: they run beside the steps);
	// with awaitWarms a push first waits up to a second for that many to have started (the
	// run never waits for them, so one still to start when it ends is never run).
	warms      []activities.WarmInput
	awaitWarms int
}

// warmed returns the inputs of the warms so far.
func (f *fakeAgents) warmed() []activities.WarmInput {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.warms)
}

// WarmReplica stands in for a target's read ahead of its pull (warm.go): it records its
// input and fails where fail says.
func (f *fakeAgents) WarmReplica(ctx context.Context, in activities.WarmInput) (activities.WarmResult, error) {
	f.mu.Lock()
	f.warms = append(f.warms, in)
	f.mu.Unlock()
	return activities.WarmResult{}, f.fail("warm", agentOf(ctx))
}

func agentOf(ctx context.Context) string {
	host, _ := HostOfQueue(activity.GetInfo(ctx).TaskQueue)
	return host
}

func (f *fakeAgents) record(s string) {
	f.mu.Lock()
	f.calls = append(f.calls, s)
	f.mu.Unlock()
}

// serial is calls in the order a serial run would have made them: the resume (with the
// takeover scripts just before it) ran beside the pull and its publish, so it is put back
// before them (their order is the test scheduler's).
func (f *fakeAgents) serial() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := slices.Clone(f.calls)
	beside := func(c string) bool {
		return strings.HasPrefix(c, "pull@") || strings.HasPrefix(c, "publish@") || strings.HasPrefix(c, "script:takeover:b")
	}
	for i := range out {
		if !strings.HasPrefix(out[i], "script:resume:") {
			continue
		}
		start := i
		for start > 0 && strings.HasPrefix(out[start-1], "script:takeover:a") {
			start--
		}
		to := start
		for to > 0 && beside(out[to-1]) {
			to--
		}
		block := slices.Clone(out[start : i+1])
		moved := slices.Clone(out[to:start])
		copy(out[to:], block)
		copy(out[to+len(block):], moved)
	}
	return out
}

func (f *fakeAgents) RunScript(ctx context.Context, in activities.ScriptInput) (activities.ScriptResult, error) {
	agent := agentOf(ctx)
	f.record("script:" + string(in.Step) + ":" + in.Host.Name + "@" + agent)
	if err := f.fail("script:"+string(in.Step), agent); err != nil {
		return activities.ScriptResult{}, err
	}
	return activities.ScriptResult{Step: in.Step, Host: in.Host.Name, Agent: agent, Script: in.Script}, nil
}

// Push stands in for a push; one that carries the quiesce script runs it first and reports
// its errors as the real agent does (activities/quiescepush.go): the quiesce part's marked,
// a lost agent's last heartbeat naming the part it was in.
func (f *fakeAgents) Push(ctx context.Context, in activities.PushInput) (activities.PushResult, error) {
	agent := agentOf(ctx)
	for deadline := time.Now().Add(time.Second); len(f.warmed()) < f.awaitWarms && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	var quiesced *activities.ScriptResult
	var pre *activities.PrecopyResult
	if in.Before != nil {
		var err error
		if pre, err = f.before(ctx, in); err != nil {
			return activities.PushResult{}, err
		}
	}
	if in.Quiesce != nil {
		res, err := f.RunScript(ctx, *in.Quiesce)
		if err != nil {
			return activities.PushResult{}, fusedError(err, activities.StepQuiesce, res)
		}
		quiesced = &res
	}
	f.record("push@" + agent)
	f.mu.Lock()
	f.pushes = append(f.pushes, in)
	f.mu.Unlock()
	if err := f.fail("push", agent); err != nil {
		if in.Quiesce != nil {
			err = fusedError(err, activities.StepPush, activities.ScriptResult{})
		}
		return activities.PushResult{}, err
	}
	img := "img-1"
	if in.Dataset != "orders" {
		img = "img-" + in.Dataset
	}
	out := activities.PushResult{Agent: agent, ImageID: img, Bytes: 10, Files: 2, Unsupported: f.unsupported, Quiesce: quiesced, Precopy: pre}
	if in.Thaw != nil {
		return f.thaw(ctx, *in.Thaw, out)
	}
	return out, nil
}

// thaw stands in for a push's resume script once it pushed (activities/thawinpush.go): a
// failed thaw is said in the result; a lost agent's last heartbeat carries the push's.
func (f *fakeAgents) thaw(ctx context.Context, in activities.ScriptInput, out activities.PushResult) (activities.PushResult, error) {
	f.mu.Lock()
	f.thaws++
	f.mu.Unlock()
	res, err := f.RunScript(ctx, in)
	var te *temporal.TimeoutError
	switch {
	case err == nil:
		out.Thawed = &res
	case errors.As(err, &te):
		pushed := out
		return activities.PushResult{}, temporal.NewTimeoutError(te.TimeoutType(), nil, activities.Progress{Step: activities.StepResume, Pushed: &pushed})
	default:
		out.ThawFailed = rootMessage(err)
	}
	return out, nil
}

// before stands in for a push's preflight and precopy before its script, failing as the
// real agent does (activities/precopyinpush.go): marked NotQuiesced, a lost agent's last
// heartbeat naming the part, a copy's other failures noted in the result.
func (f *fakeAgents) before(ctx context.Context, in activities.PushInput) (*activities.PrecopyResult, error) {
	agent := agentOf(ctx)
	f.mu.Lock()
	f.preflights = append(f.preflights, in.Before.Preflight)
	f.inPush++
	f.mu.Unlock()
	if err := f.fail("preflight", agent); err != nil {
		if in.Quiesce == nil {
			// A push that quiesces nothing: the push step's own error (preflightinpush.go).
			return nil, err
		}
		return nil, beforeError(err, activities.StepPreflight)
	}
	if !in.Before.Precopy {
		return nil, nil
	}
	f.record("precopy@" + agent)
	if err := f.fail("precopy", agent); err != nil {
		var appErr *temporal.ApplicationError
		if errors.As(err, &appErr) && !slices.Contains([]string{activities.ErrTypeStorageFault, activities.ErrTypeBadInput, activities.ErrTypeRefused, activities.ErrTypeUnsupported}, appErr.Type()) {
			return &activities.PrecopyResult{Agent: agent, Failed: appErr.Message()}, nil
		}
		return nil, beforeError(err, activities.StepPrecopy)
	}
	if slices.Contains(f.precopySkips, in.Dataset) {
		return &activities.PrecopyResult{Agent: agent, Skipped: true}, nil
	}
	return &activities.PrecopyResult{Agent: agent, Bytes: 10, Files: 2, Reused: 1}, nil
}

// beforeError is err as a push reports it from its part before the script.
func beforeError(err error, part activities.Step) error {
	var te *temporal.TimeoutError
	if errors.As(err, &te) {
		if te.TimeoutType() == enums.TIMEOUT_TYPE_SCHEDULE_TO_START {
			return err
		}
		return temporal.NewTimeoutError(te.TimeoutType(), nil, activities.Progress{Step: part})
	}
	return activities.NotQuiescedError(err, part)
}

// fusedError is err as a fused push's part (step) reports it: a timeout's heartbeat details
// name the part, a quiesce part's error carries the script's result.
func fusedError(err error, part activities.Step, res activities.ScriptResult) error {
	var te *temporal.TimeoutError
	if errors.As(err, &te) {
		if te.TimeoutType() == enums.TIMEOUT_TYPE_SCHEDULE_TO_START {
			return err
		}
		p := activities.Progress{Step: part}
		if part == activities.StepPush && te.HasLastHeartbeatDetails() {
			_ = te.LastHeartbeatDetails(&p)
			p.Step = part
		}
		return temporal.NewTimeoutError(te.TimeoutType(), nil, p)
	}
	if part == activities.StepQuiesce {
		return activities.QuiescePartError(err, res)
	}
	return err
}

func (f *fakeAgents) Precopy(ctx context.Context, in activities.PrecopyInput) (activities.PrecopyResult, error) {
	agent := agentOf(ctx)
	if in.Preflight != nil {
		// The agent's preflight, before it copies anything.
		f.mu.Lock()
		f.preflights = append(f.preflights, *in.Preflight)
		f.inPrecopy++
		f.mu.Unlock()
		if err := f.fail("preflight", agent); err != nil {
			return activities.PrecopyResult{}, err
		}
	}
	f.record("precopy@" + agent)
	if err := f.fail("precopy", agent); err != nil {
		return activities.PrecopyResult{}, err
	}
	if slices.Contains(f.precopySkips, in.Dataset) {
		return activities.PrecopyResult{Agent: agent, Skipped: true}, nil
	}
	return activities.PrecopyResult{Agent: agent, Bytes: 10, Files: 2, Reused: 1}, nil
}

func (f *fakeAgents) Pull(ctx context.Context, in activities.PullInput) (activities.PullResult, error) {
	agent := agentOf(ctx)
	f.mu.Lock() // calls and pulls in the same order, even for parallel pulls
	f.calls = append(f.calls, "pull@"+agent)
	f.pulls = append(f.pulls, in)
	f.mu.Unlock()
	if err := f.fail("pull", agent); err != nil {
		return activities.PullResult{}, err
	}
	return activities.PullResult{Agent: agent, ReplicaName: in.ReplicaName, ReplicaPath: in.TargetRoot + "/r", Verified: true, Epoch: in.Epoch, ResumedFrom: in.ResumeFrom}, nil
}

func testPlan() activities.Plan {
	host := func(name string) activities.HostPlan {
		return activities.HostPlan{Name: name, Queue: HostQueue(name), Scripts: "/scripts", Mounts: []activities.Mount{{Storage: "a", Path: "/a"}, {Storage: "b", Path: "/b"}, {Storage: "c", Path: "/c"}}}
	}
	return activities.Plan{
		Job: "orders", Source: activities.Endpoint{Storage: "a", Dataset: "orders"}, Target: activities.Endpoint{Storage: "b", Dataset: "orders"},
		Application:       activities.Application{Host: "a1", Quiesce: "freeze.sh", Resume: "thaw.sh", Takeover: "takeover.sh", Timeout: time.Minute},
		Order:             activities.Order{Application: []string{"a1", "a2"}, Source: []string{"a1", "a2", "b2"}, Target: []string{"b1", "b2"}},
		Hosts:             []activities.HostPlan{host("a1"), host("a2"), host("b1"), host("b2"), host("c1")},
		Timeouts:          activities.Timeouts{Heartbeat: 2 * time.Second, ScheduleToStart: 3 * time.Second, StartToClose: time.Hour},
		OnUnreachableHost: "fail", Retention: activities.Retention{Replicas: 3, Images: 10},
		Repository: activities.Repository{Storage: "b", Path: ".replctl/repository"},
	}
}

func (f *fakeAgents) PublishGroup(ctx context.Context, in activities.PublishGroupInput) (activities.PublishGroupResult, error) {
	agent := agentOf(ctx)
	f.record("publish@" + agent)
	if err := f.fail("publish", agent); err != nil {
		return activities.PublishGroupResult{}, err
	}
	return activities.PublishGroupResult{Agent: agent, Current: in.TargetRoot + "/.replctl/groups/" + in.Job + "/current", Links: in.Datasets, Epoch: in.Epoch}, nil
}

func runWorkflow(t *testing.T, f *fakeAgents) (Status, error) {
	t.Helper()
	return runWorkflowInput(t, f, ReplicationInput{Job: "orders"})
}

func runWorkflowInput(t *testing.T, f *fakeAgents, in ReplicationInput) (Status, error) {
	t.Helper()
	return runWorkflowWith(t, f, in, nil)
}

// runWorkflowWith runs the workflow after before has set up the test environment (e.g.
// delayed signals).
func runWorkflowWith(t *testing.T, f *fakeAgents, in ReplicationInput, before func(*testsuite.TestWorkflowEnvironment)) (Status, error) {
	t.Helper()
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.RegisterWorkflowWithOptions(Replication, workflowOptions())
	env.RegisterActivityWithOptions(func(ctx context.Context, in activities.PlanInput) (activities.PlanResult, error) {
		if in.Job != "orders" {
			return activities.PlanResult{}, temporal.NewNonRetryableApplicationError(`job "`+in.Job+`" is not defined`, activities.ErrTypeBadInput, nil)
		}
		p := testPlan()
		if f.plan != nil {
			f.plan(&p)
		}
		return activities.PlanResult{Plan: p}, nil
	}, activityOptions(activities.PlanName))
	env.RegisterActivityWithOptions(f.RunScript, activityOptions(activities.RunScriptName))
	env.RegisterActivityWithOptions(f.Push, activityOptions(activities.PushName))
	env.RegisterActivityWithOptions(f.Precopy, activityOptions(activities.PrecopyName))
	env.RegisterActivityWithOptions(f.Pull, activityOptions(activities.PullName))
	env.RegisterActivityWithOptions(f.PublishGroup, activityOptions(activities.PublishGroupName))
	env.RegisterActivityWithOptions(f.Preflight, activityOptions(activities.PreflightName))
	env.RegisterActivityWithOptions(f.WarmReplica, activityOptions(activities.WarmName))
	env.SetStartWorkflowOptions(client.StartWorkflowOptions{ID: WorkflowID(in.Job)})
	if before != nil {
		before(env)
	}
	env.ExecuteWorkflow(ReplicationWorkflowName, in)
	require.True(t, env.IsWorkflowCompleted())
	var st Status
	err := env.GetWorkflowError()
	if err == nil {
		require.NoError(t, env.GetWorkflowResult(&st))
	} else {
		v, qerr := env.QueryWorkflow(StatusQuery)
		require.NoError(t, qerr)
		require.NoError(t, v.Get(&st))
	}
	return st, err
}

// failOn fails every activity of kind (on agent, or on any agent when agent is "") with err.
func failOn(kind, agent string, err error) func(string, string) error {
	return func(k, a string) error {
		if k == kind && (agent == "" || a == agent) {
			return err
		}
		return nil
	}
}

func TestStepsRunInOrderOnPrimaries(t *testing.T) {
	f := &fakeAgents{fail: func(string, string) error { return nil }}
	st, err := runWorkflow(t, f)
	require.NoError(t, err)
	assert.Equal(t, []string{"script:quiesce:a1@a1", "push@a1", "script:resume:a1@a1", "pull@b1"}, f.serial())
	assert.Equal(t, PhaseCompleted, st.Phase)
	assert.Equal(t, "img-1", st.Image)
	assert.Empty(t, st.QuiescedHost)
	assert.True(t, st.Replica.Verified)
}

// With precopy on, the source agent copies the live source before quiesce; the push and the
// rest of the run are unchanged.
func TestPrecopyRunsBeforeQuiesce(t *testing.T) {
	f := &fakeAgents{fail: func(string, string) error { return nil }, plan: func(p *activities.Plan) { p.Precopy = "auto" }}
	st, err := runWorkflow(t, f)
	require.NoError(t, err)
	assert.Equal(t, []string{"precopy@a1", "script:quiesce:a1@a1", "push@a1", "script:resume:a1@a1", "pull@b1"}, f.serial())
	require.NotNil(t, st.Precopy)
	assert.Equal(t, Precopy{Agent: "a1", Bytes: 10, Files: 2, Reused: 1, Seconds: st.Precopy.Seconds}, *st.Precopy)

	for _, mode := range []string{"never", ""} {
		f := &fakeAgents{fail: func(string, string) error { return nil }, plan: func(p *activities.Plan) { p.Precopy = mode }}
		st, err := runWorkflow(t, f)
		require.NoError(t, err)
		assert.Equal(t, []string{"script:quiesce:a1@a1", "push@a1", "script:resume:a1@a1", "pull@b1"}, f.serial(), "precopy %q", mode)
		assert.Nil(t, st.Precopy)
	}

	// Without a quiesce script there is no freeze to shorten.
	f = &fakeAgents{fail: func(string, string) error { return nil }, plan: func(p *activities.Plan) { p.Precopy = "always"; p.Application.Quiesce = "" }}
	_, err = runWorkflow(t, f)
	require.NoError(t, err)
	assert.NotContains(t, f.calls, "precopy@a1")
}

// In a consistency group the precopy summary says skipped only when every dataset was
// skipped, and counts the skipped ones otherwise.
func TestGroupPrecopySummaryCountsSkippedDatasets(t *testing.T) {
	group := func(p *activities.Plan) {
		p.Precopy = "auto"
		p.Source = activities.Endpoint{Storage: "a", Dataset: "orders/db", Datasets: []string{"orders/db", "orders/logs"}}
		p.Target = activities.Endpoint{Storage: "b", Dataset: "dr/db", Datasets: []string{"dr/db", "dr/logs"}}
	}
	for _, tc := range []struct {
		skips   []string
		want    Precopy
		comment string
	}{
		{nil, Precopy{Agent: "a1", Bytes: 20, Files: 4, Reused: 2}, "none skipped"},
		{[]string{"orders/logs"}, Precopy{Agent: "a1", Bytes: 10, Files: 2, Reused: 1, SkippedDatasets: 1}, "the last skipped"},
		{[]string{"orders/db"}, Precopy{Agent: "a1", Bytes: 10, Files: 2, Reused: 1, SkippedDatasets: 1}, "the first skipped"},
		{[]string{"orders/db", "orders/logs"}, Precopy{Agent: "a1", Skipped: true, SkippedDatasets: 2}, "all skipped"},
	} {
		f := &fakeAgents{fail: func(string, string) error { return nil }, plan: group, precopySkips: tc.skips}
		st, err := runWorkflow(t, f)
		require.NoError(t, err, tc.comment)
		require.NotNil(t, st.Precopy, tc.comment)
		tc.want.Seconds = st.Precopy.Seconds
		assert.Equal(t, tc.want, *st.Precopy, tc.comment)
	}
}

func workflowOptions() workflow.RegisterOptions {
	return workflow.RegisterOptions{Name: ReplicationWorkflowName}
}
func activityOptions(name string) activity.RegisterOptions {
	return activity.RegisterOptions{Name: name}
}

func TestBadJobNameIsRejectedBeforePlanning(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.RegisterWorkflowWithOptions(Replication, workflowOptions())
	env.ExecuteWorkflow(ReplicationWorkflowName, ReplicationInput{Job: "../x"})
	err := env.GetWorkflowError()
	require.Error(t, err)
	assert.Contains(t, err.Error(), `want {"job": "NAME"}`)
}

func TestScheduledStartsTheJobsRunAsChild(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.RegisterWorkflowWithOptions(Scheduled, workflow.RegisterOptions{Name: ScheduledWorkflowName})
	env.RegisterWorkflowWithOptions(func(ctx workflow.Context, in ReplicationInput) (Status, error) {
		assert.Equal(t, WorkflowID("orders"), workflow.GetInfo(ctx).WorkflowExecution.ID, "the run has the job's workflow ID")
		return Status{Job: in.Job, Phase: PhaseCompleted}, nil
	}, workflow.RegisterOptions{Name: ReplicationWorkflowName})
	env.ExecuteWorkflow(ScheduledWorkflowName, ReplicationInput{Job: "orders"})
	require.NoError(t, env.GetWorkflowError())
	var res ScheduledResult
	require.NoError(t, env.GetWorkflowResult(&res))
	assert.True(t, res.Started)
	assert.Equal(t, PhaseCompleted, res.Phase)
}

func TestMaintenanceRunsOnTargetOrderWithTakeover(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.RegisterWorkflowWithOptions(Maintenance, workflow.RegisterOptions{Name: MaintenanceWorkflowName})
	f := &fakeAgents{fail: func(string, string) error { return nil }}
	env.RegisterActivityWithOptions(func(ctx context.Context, in activities.PlanInput) (activities.PlanResult, error) {
		return activities.PlanResult{Plan: testPlan()}, nil
	}, activityOptions(activities.PlanName))
	env.RegisterActivityWithOptions(f.RunScript, activityOptions(activities.RunScriptName))
	var ran []string
	env.RegisterActivityWithOptions(func(ctx context.Context, in activities.MaintainInput) (activities.MaintainResult, error) {
		agent := agentOf(ctx)
		ran = append(ran, agent+":"+in.Repo.Dir)
		if agent == "b1" {
			return activities.MaintainResult{}, temporal.NewTimeoutError(enums.TIMEOUT_TYPE_SCHEDULE_TO_START, nil)
		}
		return activities.MaintainResult{Agent: agent, Full: in.Full}, nil
	}, activityOptions(activities.MaintainName))
	env.ExecuteWorkflow(MaintenanceWorkflowName, MaintenanceInput{Job: "orders", Full: true})
	require.NoError(t, env.GetWorkflowError())
	var res MaintenanceResult
	require.NoError(t, env.GetWorkflowResult(&res))
	assert.Equal(t, []string{"b1:/b/.replctl/repository", "b2:/b/.replctl/repository"}, ran)
	assert.Equal(t, "b2", res.Result.Agent)
	assert.True(t, res.Result.Full)
	assert.Equal(t, "replctl-maintenance-array%2Db-.replctl%2Frepository", MaintenanceID("array-b", ".replctl/repository"))
}

// Maintenance IDs keep one maintainer per repository, so different repositories must never
// share one; the IDs before escaping did (LegacyMaintenanceID).
func TestMaintenanceIDsAreDistinctPerRepository(t *testing.T) {
	repos := [][2]string{
		{"a-b", "c"}, {"a", "b-c"}, {"a", "b/c"}, {"a", "b.c"}, {"a", "b_c"}, {"a", "b%2Fc"},
		{"a", "b%2Dc"}, {"a-b", "c/d"}, {"a", "b-c/d"}, {"array-b", ".replctl/repository"},
	}
	seen := map[string][2]string{}
	legacy := map[string]bool{}
	legacyCollides := false
	for _, r := range repos {
		id := MaintenanceID(r[0], r[1])
		if other, ok := seen[id]; ok {
			t.Errorf("repositories %v and %v share maintenance ID %s", other, r, id)
		}
		seen[id] = r
		assert.NotEqual(t, MaintenanceScheduleID(r[0], r[1]), id)
		l := LegacyMaintenanceID(r[0], r[1])
		legacyCollides = legacyCollides || legacy[l]
		legacy[l] = true
	}
	assert.True(t, legacyCollides, "the list holds repositories the old IDs confused")
}

func TestScheduledMaintenanceStartsMaintenanceUnderTheRepositoryID(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.RegisterWorkflowWithOptions(ScheduledMaintenance, workflow.RegisterOptions{Name: ScheduledMaintenanceWorkflowName})
	env.RegisterWorkflowWithOptions(func(ctx workflow.Context, in MaintenanceInput) (MaintenanceResult, error) {
		assert.Equal(t, MaintenanceID("array-b", ".replctl/repository"), workflow.GetInfo(ctx).WorkflowExecution.ID, "one owner per repository")
		assert.Equal(t, MaintenanceInput{Job: "orders", Full: true}, in)
		return MaintenanceResult{Status: Status{Job: in.Job, Phase: PhaseCompleted}}, nil
	}, workflow.RegisterOptions{Name: MaintenanceWorkflowName})
	env.ExecuteWorkflow(ScheduledMaintenanceWorkflowName, ScheduledMaintenanceInput{Job: "orders", Storage: "array-b", Path: ".replctl/repository", Full: true})
	require.NoError(t, env.GetWorkflowError())
	var res ScheduledResult
	require.NoError(t, env.GetWorkflowResult(&res))
	assert.True(t, res.Started)
	assert.Equal(t, PhaseCompleted, res.Phase)
	assert.Equal(t, "replctl-maintenance-schedule-array%2Db-.replctl%2Frepository", MaintenanceScheduleID("array-b", ".replctl/repository"))
	assert.Equal(t, "replctl-maintenance-schedule-array-b-_replctl_repository", LegacyMaintenanceScheduleID("array-b", ".replctl/repository"))

	env = s.NewTestWorkflowEnvironment()
	env.RegisterWorkflowWithOptions(ScheduledMaintenance, workflow.RegisterOptions{Name: ScheduledMaintenanceWorkflowName})
	env.ExecuteWorkflow(ScheduledMaintenanceWorkflowName, ScheduledMaintenanceInput{Job: "orders"})
	require.Error(t, env.GetWorkflowError())
	assert.Contains(t, env.GetWorkflowError().Error(), "bad maintenance schedule input")
}

// A scheduled maintenance recorded before the escaped IDs keeps starting its child under
// the old ID when it replays.
func TestScheduledMaintenanceBeforeEscapedIDsUsesTheLegacyID(t *testing.T) {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.RegisterWorkflowWithOptions(ScheduledMaintenance, workflow.RegisterOptions{Name: ScheduledMaintenanceWorkflowName})
	var childID string
	env.RegisterWorkflowWithOptions(func(ctx workflow.Context, in MaintenanceInput) (MaintenanceResult, error) {
		childID = workflow.GetInfo(ctx).WorkflowExecution.ID
		return MaintenanceResult{Status: Status{Job: in.Job, Phase: PhaseCompleted}}, nil
	}, workflow.RegisterOptions{Name: MaintenanceWorkflowName})
	env.OnGetVersion("maintenance-id-escaped", workflow.DefaultVersion, 1).Return(workflow.DefaultVersion)
	env.ExecuteWorkflow(ScheduledMaintenanceWorkflowName, ScheduledMaintenanceInput{Job: "orders", Storage: "array-b", Path: ".replctl/repository"})
	require.NoError(t, env.GetWorkflowError())
	assert.Equal(t, "replctl-maintenance-array-b-_replctl_repository", childID)
}

// The pull starts while the application is resumed: the resume script here waits for the
// pull to begin, which a run that pulled only after resuming would never do.
func TestResumeRunsBesidePull(t *testing.T) {
	pulled := make(chan struct{})
	var once sync.Once
	f := &fakeAgents{fail: func(kind, _ string) error {
		switch kind {
		case "pull":
			once.Do(func() { close(pulled) })
		case "script:resume":
			select {
			case <-pulled:
			case <-time.After(5 * time.Second):
				return temporal.NewNonRetryableApplicationError("the pull did not start while the resume ran", "Test", nil)
			}
		}
		return nil
	}}
	// A resume step of its own: runs recorded before the resume travelled in the push.
	st, err := runWorkflowWith(t, f, ReplicationInput{Job: "orders"}, thawApart)
	require.NoError(t, err)
	assert.Equal(t, []string{"script:quiesce:a1@a1", "push@a1", "script:resume:a1@a1", "pull@b1"}, f.serial())
	assert.Empty(t, st.QuiescedHost)
	assert.Equal(t, PhaseCompleted, st.Phase)
}
