package schedsync

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/workflows"
)

// fake is a schedule server in memory. It records the calls that change it; fail makes the
// call "VERB ID" (e.g. "create replctl-schedule-orders") return an error.
type fake struct {
	schedules map[string]*client.ScheduleDescription
	// extra are listed but not describable (deleted already: the list lags).
	extra   []string
	fail    map[string]error
	listErr error
	calls   []string
}

func newFake() *fake {
	return &fake{schedules: map[string]*client.ScheduleDescription{}, fail: map[string]error{}}
}

func (f *fake) err(verb, id string) error { return f.fail[verb+" "+id] }

func notFound(id string) error { return serviceerror.NewNotFound("schedule " + id + " not found") }

func (f *fake) Describe(_ context.Context, id string) (*client.ScheduleDescription, error) {
	if err := f.err("describe", id); err != nil {
		return nil, err
	}
	d, ok := f.schedules[id]
	if !ok {
		return nil, notFound(id)
	}
	return d, nil
}

func (f *fake) List(context.Context) ([]string, error) {
	ids := append([]string(nil), f.extra...)
	for id := range f.schedules {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, f.listErr
}

func (f *fake) Create(_ context.Context, o client.ScheduleOptions) error {
	f.calls = append(f.calls, "create "+o.ID)
	if err := f.err("create", o.ID); err != nil {
		return err
	}
	f.schedules[o.ID] = described(o)
	return nil
}

func (f *fake) Update(_ context.Context, id string, do func(client.ScheduleUpdateInput) (*client.ScheduleUpdate, error)) error {
	f.calls = append(f.calls, "update "+id)
	if err := f.err("update", id); err != nil {
		return err
	}
	d, ok := f.schedules[id]
	if !ok {
		return notFound(id)
	}
	u, err := do(client.ScheduleUpdateInput{Description: *d})
	if err != nil {
		return err
	}
	d.Schedule = *u.Schedule
	return nil
}

func (f *fake) Delete(_ context.Context, id string) error {
	f.calls = append(f.calls, "delete "+id)
	if err := f.err("delete", id); err != nil {
		return err
	}
	if _, ok := f.schedules[id]; !ok {
		return notFound(id)
	}
	delete(f.schedules, id)
	return nil
}

// described is how the server describes a schedule created with o.
func described(o client.ScheduleOptions) *client.ScheduleDescription {
	spec := o.Spec
	return &client.ScheduleDescription{Schedule: client.Schedule{
		Action: o.Action,
		Spec:   &spec,
		Policy: &client.SchedulePolicies{Overlap: o.Overlap, CatchupWindow: o.CatchupWindow, PauseOnFailure: o.PauseOnFailure},
		State:  &client.ScheduleState{Paused: o.Paused, Note: o.Note},
	}}
}

const (
	storage = "array-b"
	path    = ".replctl/repository"
)

var (
	ordersID = workflows.ScheduleID("orders")
	maintID  = workflows.MaintenanceScheduleID(storage, path)
)

// job is a job with schedule cron ("" for none) in the shared repository.
func job(name, cron string) config.Job {
	j := config.Job{Name: name, Repository: config.Repository{Storage: storage, Path: path, Maintenance: config.Maintenance{Cron: config.MaintenanceOff}}}
	if cron != "" {
		j.Schedule = &config.Schedule{Cron: cron}
	}
	return j
}

func cfgOf(jobs ...config.Job) *config.Config {
	cfg := &config.Config{Jobs: jobs}
	cfg.Temporal.TaskQueue = "replctl"
	return cfg
}

// withMaintenance gives the repository of cfg's jobs a maintenance schedule.
func withMaintenance(cfg *config.Config, cron string, quick bool) *config.Config {
	for i := range cfg.Jobs {
		cfg.Jobs[i].Repository.Maintenance = config.Maintenance{Cron: cron, TimeZone: "UTC", Quick: quick}
	}
	return cfg
}

// synced is a fake server that has what cfg asks for.
func synced(t *testing.T, cfg *config.Config) *fake {
	f := newFake()
	_, err := Sync(context.Background(), f, cfg, false)
	require.NoError(t, err)
	f.calls = nil
	return f
}

func TestFromConfig(t *testing.T) {
	cfg := withMaintenance(cfgOf(job("orders", "30 3 * * *"), job("logs", "")), "@daily", false)
	cfg.Jobs[0].Schedule.Jitter = 10 * time.Second
	d := FromConfig(cfg)
	require.Len(t, d.Wants, 3, "each job, then the shared repository")

	orders := d.Wants[0]
	assert.Equal(t, ordersID, orders.ID)
	assert.Equal(t, Fingerprint{Cron: "30 3 * * *", TimeZone: "UTC", Overlap: "skip", Jitter: "10s", TaskQueue: "replctl", Workflow: workflows.ScheduledWorkflowName}, orders.Fingerprint, "defaults filled in")
	require.NotNil(t, orders.Options)
	assert.Equal(t, enums.SCHEDULE_OVERLAP_POLICY_SKIP, orders.Options.Overlap)
	assert.Equal(t, "UTC", orders.Options.Spec.TimeZoneName)
	assert.Equal(t, `cron "30 3 * * *" UTC, overlap skip, jitter 10s`, orders.Summary)
	fp, ok := ReadFingerprint(orders.Options.Action)
	assert.True(t, ok)
	assert.Equal(t, orders.Fingerprint, fp, "the action's memo holds the fingerprint")

	logs := d.Wants[1]
	assert.Nil(t, logs.Options, "a job without schedule wants none")
	assert.Equal(t, "job has no schedule in the config", logs.Absent)

	m := d.Wants[2]
	assert.Equal(t, maintID, m.ID)
	assert.Equal(t, "orders", m.Job, "the first job using the repository owns its maintenance")
	assert.Equal(t, storage+":"+path, m.Repository)
	assert.Equal(t, `repository maintenance (full), cron "@daily" UTC, overlap skip`, m.Summary)
	assert.Equal(t, map[string]string{workflows.LegacyMaintenanceScheduleID(storage, path): maintID}, d.Legacy)

	cfg.Jobs[0].Schedule.Overlap = "sometimes"
	assert.ErrorContains(t, JobSchedule(cfg, &cfg.Jobs[0]).Err, `job orders: schedule.overlap: "sometimes" is not an overlap policy`)
	offCfg := cfgOf(job("orders", ""))
	off := MaintenanceSchedule(offCfg, offCfg.Repositories()[0])
	assert.Nil(t, off.Options)
	assert.Equal(t, "repository maintenance is off in the config", off.Absent)
}

func TestDiff(t *testing.T) {
	cfg := cfgOf(job("orders", "30 3 * * *"))
	d := FromConfig(cfg)
	have := described(*d.Wants[0].Options)
	for _, tc := range []struct {
		name string
		o    Observed
		want []OpKind
		rows []Change
	}{
		{name: "nothing on the server", o: Observed{},
			want: []OpKind{Create}, rows: []Change{{Job: "orders", ScheduleID: ordersID, Change: Created, Detail: `cron "30 3 * * *" UTC, overlap skip`}}},
		{name: "in sync", o: Observed{Schedules: map[string]*client.ScheduleDescription{ordersID: have}, Listed: []string{ordersID}},
			want: []OpKind{Keep}, rows: []Change{{Job: "orders", ScheduleID: ordersID, Change: Unchanged, Detail: `cron "30 3 * * *" UTC, overlap skip`}}},
		{name: "unreadable", o: Observed{Errs: map[string]error{ordersID: errors.New("boom")}},
			want: []OpKind{Fail}, rows: []Change{{Job: "orders", ScheduleID: ordersID, Change: Described}}},
		{name: "stale and foreign listed", o: Observed{Schedules: map[string]*client.ScheduleDescription{ordersID: have},
			Listed: []string{"someone-else", ordersID, workflows.ScheduleID("gone"), workflows.MaintenanceScheduleID("array-c", "r")}, ListErr: errors.New("page 2")},
			want: []OpKind{Keep, Delete, Delete}, rows: []Change{
				{Job: "orders", ScheduleID: ordersID, Change: Unchanged, Detail: `cron "30 3 * * *" UTC, overlap skip`},
				{Job: "gone", ScheduleID: workflows.ScheduleID("gone"), Change: Deleted, Detail: "job is not in the config"},
				{ScheduleID: workflows.MaintenanceScheduleID("array-c", "r"), Change: Deleted, Detail: "repository maintenance: no job of the config uses the repository"},
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := Diff(d, tc.o)
			var kinds []OpKind
			var rows []Change
			for _, op := range p.Ops {
				kinds, rows = append(kinds, op.Kind), append(rows, op.Report)
			}
			assert.Equal(t, tc.want, kinds)
			assert.Equal(t, tc.rows, rows)
			assert.Equal(t, tc.o.ListErr, p.ListErr)
		})
	}
}

// A schedule edited outside replctl (e.g. in the Temporal UI) differs from the config even
// though its fingerprint matches.
func TestDifferencesSeeEditsOutsideReplctl(t *testing.T) {
	w := FromConfig(cfgOf(job("orders", "30 3 * * *"))).Wants[0]
	d := described(*w.Options)
	assert.Empty(t, Differences(d, w))
	d.Schedule.Policy.Overlap = enums.SCHEDULE_OVERLAP_POLICY_ALLOW_ALL
	d.Schedule.Spec.Jitter = time.Minute
	assert.Equal(t, []string{"overlap allow_all -> skip (changed outside replctl)", "jitter 1m0s -> 0s (changed outside replctl)"}, Differences(d, w))
	d.Schedule.Action = &client.ScheduleWorkflowAction{Workflow: "Other", TaskQueue: "replctl"}
	assert.Contains(t, Differences(d, w), "not made by this version of replctl sync")
}

func TestSync(t *testing.T) {
	orders := func(cron string) *config.Config { return cfgOf(job("orders", cron)) }
	boom := errors.New("boom")
	for _, tc := range []struct {
		name string
		// server is the fake the sync starts from; cfg the config it syncs.
		server func(t *testing.T) *fake
		cfg    *config.Config
		dryRun bool
		calls  []string
		rows   []Change
		err    string // "" for none; else each line must be in the error
		after  func(t *testing.T, f *fake)
	}{
		{
			name:   "nothing to do",
			server: func(t *testing.T) *fake { return synced(t, orders("30 3 * * *")) },
			cfg:    orders("30 3 * * *"),
			rows:   []Change{{Job: "orders", ScheduleID: ordersID, Change: Unchanged, Detail: `cron "30 3 * * *" UTC, overlap skip`}},
		},
		{
			name:   "no schedules at all",
			server: func(*testing.T) *fake { return newFake() },
			cfg:    orders(""),
		},
		{
			name:   "new job",
			server: func(*testing.T) *fake { return newFake() },
			cfg:    orders("30 3 * * *"),
			calls:  []string{"create " + ordersID},
			rows:   []Change{{Job: "orders", ScheduleID: ordersID, Change: Created, Detail: `cron "30 3 * * *" UTC, overlap skip`}},
			after: func(t *testing.T, f *fake) {
				fp, ok := ReadFingerprint(f.schedules[ordersID].Schedule.Action)
				require.True(t, ok)
				assert.Equal(t, "30 3 * * *", fp.Cron)
			},
		},
		{
			name: "changed cron keeps an operator's pause",
			server: func(t *testing.T) *fake {
				f := synced(t, orders("30 3 * * *"))
				f.schedules[ordersID].Schedule.State = &client.ScheduleState{Paused: true, Note: "array maintenance"}
				return f
			},
			cfg:   orders("45 3 * * *"),
			calls: []string{"update " + ordersID},
			rows:  []Change{{Job: "orders", ScheduleID: ordersID, Change: Updated, Detail: `cron "30 3 * * *" -> "45 3 * * *"`, Paused: true}},
			after: func(t *testing.T, f *fake) {
				s := f.schedules[ordersID].Schedule
				assert.Equal(t, &client.ScheduleState{Paused: true, Note: "array maintenance"}, s.State)
				assert.Equal(t, []string{"45 3 * * *"}, s.Spec.CronExpressions)
				assert.Empty(t, Differences(f.schedules[ordersID], FromConfig(orders("45 3 * * *")).Wants[0]))
			},
		},
		{
			name: "paused and unchanged",
			server: func(t *testing.T) *fake {
				f := synced(t, orders("30 3 * * *"))
				f.schedules[ordersID].Schedule.State.Paused = true
				return f
			},
			cfg:  orders("30 3 * * *"),
			rows: []Change{{Job: "orders", ScheduleID: ordersID, Change: Unchanged, Detail: `cron "30 3 * * *" UTC, overlap skip`, Paused: true}},
		},
		{
			name:   "job removed from the config",
			server: func(t *testing.T) *fake { return synced(t, orders("30 3 * * *")) },
			cfg:    cfgOf(job("logs", "")),
			calls:  []string{"delete " + ordersID},
			rows:   []Change{{Job: "orders", ScheduleID: ordersID, Change: Deleted, Detail: "job is not in the config"}},
			after:  func(t *testing.T, f *fake) { assert.Empty(t, f.schedules) },
		},
		{
			name:   "schedule removed from the job",
			server: func(t *testing.T) *fake { return synced(t, orders("30 3 * * *")) },
			cfg:    orders(""),
			calls:  []string{"delete " + ordersID},
			rows:   []Change{{Job: "orders", ScheduleID: ordersID, Change: Deleted, Detail: "job has no schedule in the config"}},
		},
		{
			name:   "dry run changes nothing",
			server: func(t *testing.T) *fake { return synced(t, orders("30 3 * * *")) },
			cfg:    cfgOf(job("logs", "@hourly")),
			dryRun: true,
			rows: []Change{
				{Job: "logs", ScheduleID: workflows.ScheduleID("logs"), Change: Created, Detail: `cron "@hourly" UTC, overlap skip`},
				{Job: "orders", ScheduleID: ordersID, Change: Deleted, Detail: "job is not in the config"},
			},
			after: func(t *testing.T, f *fake) { assert.Contains(t, f.schedules, ordersID) },
		},
		{
			name: "somebody else's schedule and a lagging list",
			server: func(*testing.T) *fake {
				f := newFake()
				f.schedules["someone-else"] = &client.ScheduleDescription{}
				f.extra = []string{workflows.ScheduleID("gone")}
				return f
			},
			cfg:   orders(""),
			calls: []string{"delete " + workflows.ScheduleID("gone")},
			after: func(t *testing.T, f *fake) { assert.Contains(t, f.schedules, "someone-else") },
		},
		{
			name: "maintenance created, legacy one replaced",
			server: func(*testing.T) *fake {
				f := newFake()
				f.schedules[workflows.LegacyMaintenanceScheduleID(storage, path)] = &client.ScheduleDescription{}
				return f
			},
			cfg:   withMaintenance(orders(""), "@daily", true),
			calls: []string{"create " + maintID, "delete " + workflows.LegacyMaintenanceScheduleID(storage, path)},
			rows: []Change{
				{Job: "orders", ScheduleID: maintID, Repository: storage + ":" + path, Change: Created, Detail: `repository maintenance (quick), cron "@daily" UTC, overlap skip`},
				{ScheduleID: workflows.LegacyMaintenanceScheduleID(storage, path), Change: Deleted, Detail: "repository maintenance: replaced by " + maintID + " (IDs now escape storage and path)"},
			},
		},
		{
			name:   "maintenance changed, then off",
			server: func(t *testing.T) *fake { return synced(t, withMaintenance(orders(""), "@daily", false)) },
			cfg:    withMaintenance(orders(""), "@every 2s", true),
			calls:  []string{"update " + maintID},
			rows: []Change{{Job: "orders", ScheduleID: maintID, Repository: storage + ":" + path, Change: Updated,
				Detail: `cron "@daily" -> "@every 2s"; full "true" -> "false"`}},
		},
		{
			name:   "maintenance off",
			server: func(t *testing.T) *fake { return synced(t, withMaintenance(orders(""), "@daily", false)) },
			cfg:    orders(""),
			calls:  []string{"delete " + maintID},
			rows:   []Change{{Job: "orders", ScheduleID: maintID, Repository: storage + ":" + path, Change: Deleted, Detail: "repository maintenance is off in the config"}},
		},
		{
			name: "client errors name the schedule; the others are synced",
			server: func(t *testing.T) *fake {
				f := synced(t, cfgOf(job("orders", "30 3 * * *"), job("logs", "@hourly"), job("gone", "@daily")))
				f.fail["describe "+ordersID] = boom
				f.fail["update "+workflows.ScheduleID("logs")] = boom
				f.fail["create "+workflows.ScheduleID("new")] = boom
				f.fail["delete "+workflows.ScheduleID("gone")] = boom
				f.listErr = errors.New("page 2 unreadable")
				return f
			},
			cfg:   cfgOf(job("orders", "45 3 * * *"), job("logs", "@daily"), job("new", "@daily"), job("fine", "@daily")),
			calls: []string{"update " + workflows.ScheduleID("logs"), "create " + workflows.ScheduleID("new"), "create " + workflows.ScheduleID("fine"), "delete " + workflows.ScheduleID("gone")},
			rows: []Change{
				{Job: "orders", ScheduleID: ordersID, Change: Described, Error: "boom"},
				{Job: "logs", ScheduleID: workflows.ScheduleID("logs"), Change: Updated, Detail: `cron "@hourly" -> "@daily"`, Error: "boom"},
				{Job: "new", ScheduleID: workflows.ScheduleID("new"), Change: Created, Detail: `cron "@daily" UTC, overlap skip`, Error: "boom"},
				{Job: "fine", ScheduleID: workflows.ScheduleID("fine"), Change: Created, Detail: `cron "@daily" UTC, overlap skip`},
				{Job: "gone", ScheduleID: workflows.ScheduleID("gone"), Change: Deleted, Detail: "job is not in the config", Error: "boom"},
			},
			err: "schedule sync incomplete (the other schedules were synced): " +
				"schedule replctl-schedule-orders: describe: boom\n" +
				"schedule replctl-schedule-logs: updated: boom\n" +
				"schedule replctl-schedule-new: created: boom\n" +
				"schedule replctl-schedule-gone: deleted: boom\n" +
				"list schedules: page 2 unreadable",
		},
		{
			name:   "a config the server cannot take",
			server: func(*testing.T) *fake { return newFake() },
			cfg: func() *config.Config {
				c := orders("30 3 * * *")
				c.Jobs[0].Schedule.Overlap = "sometimes"
				return c
			}(),
			rows: []Change{{Job: "orders", ScheduleID: ordersID, Change: Created,
				Error: `job orders: schedule.overlap: "sometimes" is not an overlap policy (want one of skip, buffer_one, buffer_all, cancel_other, terminate_other, allow_all)`}},
			err: `schedule sync incomplete (the other schedules were synced): schedule replctl-schedule-orders: created: job orders: schedule.overlap: "sometimes" is not an overlap policy`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.server(t)
			rows, err := Sync(context.Background(), f, tc.cfg, tc.dryRun)
			if tc.err == "" {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.err)
			}
			assert.Equal(t, tc.rows, rows)
			assert.Equal(t, tc.calls, f.calls)
			if tc.after != nil {
				tc.after(t, f)
			}
		})
	}
}

// Apply goes on after a failing step and only reports in a dry run.
func TestApply(t *testing.T) {
	w := FromConfig(cfgOf(job("orders", "30 3 * * *"))).Wants[0]
	p := Plan{Ops: []Op{
		{Kind: Create, Report: Change{ScheduleID: ordersID, Change: Created}, Options: w.Options},
		{Kind: Delete, Report: Change{ScheduleID: "replctl-schedule-a", Change: Deleted}},
		{Kind: Delete, Report: Change{ScheduleID: "replctl-schedule-b", Change: Deleted}, Listed: true},
	}}
	f := newFake()
	rows, err := Apply(context.Background(), f, p, true)
	require.NoError(t, err)
	assert.Len(t, rows, 3)
	assert.Empty(t, f.calls)

	rows, err = Apply(context.Background(), f, p, false)
	assert.Equal(t, []string{"create " + ordersID, "delete replctl-schedule-a", "delete replctl-schedule-b"}, f.calls)
	require.Len(t, rows, 2, "a listed schedule that is gone already is not reported")
	assert.Equal(t, fmt.Sprintf("schedule sync incomplete (the other schedules were synced): schedule replctl-schedule-a: deleted: %v", notFound("replctl-schedule-a")), err.Error())
	assert.Contains(t, f.schedules, ordersID)
}
