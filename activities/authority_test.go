package activities

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"github.com/replctl/replctl/config"
)

// sampleAgent is the agent of host in config/samples/group-fanout.yaml, with the plan the
// workflow would send it for job orders.
func sampleAgent(t *testing.T, host string) (*Agent, Plan) {
	t.Helper()
	const file = "../config/samples/group-fanout.yaml"
	cfg, err := config.Load(file)
	require.NoError(t, err)
	p, err := NewPlan(cfg, "orders")
	require.NoError(t, err)
	return &Agent{Host: host, ConfigFile: file}, p
}

// samplePush is sampleAgent's a1 with the push of dataset orders/db the workflow would send.
func samplePush(t *testing.T) (*Agent, Plan, PushInput) {
	t.Helper()
	a, p := sampleAgent(t, "a1")
	src, err := p.DatasetDir("a1", "array-a", "orders/db")
	require.NoError(t, err)
	repo, err := p.Repo("a1")
	require.NoError(t, err)
	return a, p, PushInput{Job: "orders", Agent: "a1", SourceDir: src, Dataset: "orders/db", Repo: repo}
}

// requireRefused asserts err is a Refused application error whose message holds each want.
func requireRefused(t *testing.T, err error, want ...string) {
	t.Helper()
	var appErr *temporal.ApplicationError
	require.True(t, errors.As(err, &appErr), "want a Refused application error, got %v", err)
	assert.Equal(t, ErrTypeRefused, appErr.Type())
	assert.True(t, appErr.NonRetryable(), "a refusal is final")
	for _, w := range want {
		assert.Contains(t, appErr.Error(), w)
	}
}

// Inputs the workflow builds from the plan pass; each foreign value is refused, naming the
// field and both values.
func TestAuthorityPush(t *testing.T) {
	ctx := context.Background()
	a, _, good := samplePush(t)
	src, repo := good.SourceDir, good.Repo
	got, err := a.authorizePush(ctx, "push", good)
	require.NoError(t, err)
	assert.Equal(t, src, got.SourceDir)
	assert.Equal(t, repo, got.Repo)
	assert.Equal(t, config.OnUnsupportedFail, got.OnUnsupported, "the agent's own policy applies (the default)")
	withPolicy := good
	withPolicy.OnUnsupported = config.OnUnsupportedFail
	_, err = a.authorizePush(ctx, "push", withPolicy)
	require.NoError(t, err)

	for name, c := range map[string]struct {
		mutate func(*PushInput)
		want   []string
	}{
		"source dir /":                      {func(in *PushInput) { in.SourceDir = "/" }, []string{"SourceDir", `"/"`, `"/mnt/a/orders/db"`}},
		"dataset not job's":                 {func(in *PushInput) { in.Dataset, in.SourceDir = "etc", "/mnt/a/etc" }, []string{"Dataset", `"etc"`}},
		"job not in config":                 {func(in *PushInput) { in.Job = "payroll" }, []string{"Job", "payroll"}},
		"repository moved":                  {func(in *PushInput) { in.Repo.Dir = "/tmp/evil" }, []string{"Repo.Dir", "/tmp/evil", "/mnt/b/.replctl/repository"}},
		"password file":                     {func(in *PushInput) { in.Repo.PasswordFile = "/etc/shadow" }, []string{"Repo.PasswordFile", "/etc/shadow"}},
		"repository via ssh":                {func(in *PushInput) { in.Repo.Via = []RepoHost{{Name: "x", Dir: "/", SSH: SSH{Address: "evil:22"}}} }, []string{"Repo.Via", "evil:22"}},
		"failback push of a source dataset": {func(in *PushInput) { in.FollowLink = true }, []string{"Dataset", "not a dataset of a target whose order holds agent a1"}},
		"unsupported entries skipped":       {func(in *PushInput) { in.OnUnsupported = "skip" }, []string{"OnUnsupported", `"skip"`, `"fail"`}},
		"unsupported policy unknown":        {func(in *PushInput) { in.OnUnsupported = "ignore" }, []string{"OnUnsupported", `"ignore"`}},
	} {
		t.Run(name, func(t *testing.T) {
			in := good
			c.mutate(&in)
			_, err := a.authorizePush(ctx, "push", in)
			requireRefused(t, err, c.want...)
		})
	}

	// An agent outside the source order may not push, even with the right paths.
	b1, _ := sampleAgent(t, "b1")
	in := good
	in.Agent = "b1"
	_, err = b1.authorizePush(ctx, "precopy", in)
	requireRefused(t, err, "Precopy", `"b1" is not in the job's source order [a1]`)
}

// TestAuthorityPullRetire: whether a pull may recycle the replica its retention retires is
// the agent's own config's retention.retire, which no input can change.
func TestAuthorityPullRetire(t *testing.T) {
	const file = "../config/samples/full.yaml"
	t.Setenv("REPLCTL_STATE", t.TempDir()) // full.yaml's api_key_file
	cfg, err := config.Load(file)
	require.NoError(t, err)
	p, err := NewPlan(cfg, "billing")
	require.NoError(t, err)
	require.Equal(t, config.RetireAfterPublish, p.Retention.Retire)
	repo, err := p.Repo("west-db1")
	require.NoError(t, err)
	a := &Agent{Host: "west-db1", ConfigFile: file}
	grant, err := a.authorizePull(context.Background(), PullInput{Job: "billing", Agent: "west-db1", ImageID: "k1",
		TargetRoot: "/mnt/san-west", Dataset: "replicas/billing", Repo: repo, ReplicaName: "r", Epoch: 1,
		Keep: p.Retention.Replicas, KeepWithin: p.Retention.ReplicasWithin, SourceDataset: "db/billing",
		KeepImages: p.Retention.Images, KeepImagesWithin: p.Retention.ImagesWithin, Verify: p.Verify})
	require.NoError(t, err)
	assert.False(t, grant.Recycle, "retire: after_publish in the agent's config")
}

func TestAuthorityPull(t *testing.T) {
	ctx := context.Background()
	a, p := sampleAgent(t, "c1")
	repo, err := p.Repo("c1")
	require.NoError(t, err)
	good := PullInput{Job: "orders", Agent: "c1", ImageID: "k1", TargetRoot: "/mnt/c", Dataset: "dr/orders-logs",
		Repo: repo, ReplicaName: "r", Epoch: 1, Keep: p.Retention.Replicas, SourceDataset: "orders/logs",
		KeepImages: p.Retention.Images, Verify: p.Verify, Defer: true}
	grant, err := a.authorizePull(ctx, good)
	require.NoError(t, err)
	assert.Equal(t, "/mnt/c", grant.Root)
	assert.True(t, grant.Recycle, "retention.retire defaults to recycle")

	for name, c := range map[string]struct {
		mutate func(*PullInput)
		want   []string
	}{
		"target root /etc":       {func(in *PullInput) { in.TargetRoot = "/etc" }, []string{"TargetRoot", `"/etc"`, `"/mnt/c"`}},
		"other target's dataset": {func(in *PullInput) { in.Dataset = "orders/db" }, []string{"Dataset", "orders/db"}},
		"source dataset swapped": {func(in *PullInput) { in.SourceDataset = "orders/db" }, []string{"SourceDataset", "orders/db", "orders/logs"}},
		"retention 1 replica":    {func(in *PullInput) { in.Keep = 1 }, []string{"Keep"}},
		"image retention 1":      {func(in *PullInput) { in.KeepImages = 1 }, []string{"KeepImages"}},
		"verify weakened":        {func(in *PullInput) { in.Verify = "none" }, []string{"Verify"}},
		"group publish early":    {func(in *PullInput) { in.Defer = false }, []string{"Defer"}},
		"failback into source":   {func(in *PullInput) { in.InPlace = true }, []string{`"c1" is not in the job's source order`}},
	} {
		t.Run(name, func(t *testing.T) {
			in := good
			c.mutate(&in)
			_, err := a.authorizePull(ctx, in)
			requireRefused(t, err, c.want...)
		})
	}
}

func TestAuthorityScript(t *testing.T) {
	ctx := context.Background()
	a, p := sampleAgent(t, "a1")
	host, err := p.Host("a1")
	require.NoError(t, err)
	good := ScriptInput{Job: "orders", Step: "quiesce", Agent: "a1", Host: host, Script: "freeze.sh", SourcePath: "/mnt/a/orders/db"}
	own, src, err := a.authorizeScript(ctx, good)
	require.NoError(t, err)
	assert.Equal(t, host, own)
	assert.Equal(t, "/mnt/a/orders/db", src)

	for name, c := range map[string]struct {
		mutate func(*ScriptInput)
		want   []string
	}{
		"scripts dir /tmp":    {func(in *ScriptInput) { in.Host.Scripts = "/tmp" }, []string{"Host.Scripts", `"/tmp"`, `"/etc/replctl/scripts"`}},
		"other script":        {func(in *ScriptInput) { in.Script = "rm.sh" }, []string{"Script", "rm.sh", "freeze.sh"}},
		"ssh to elsewhere":    {func(in *ScriptInput) { in.Host.SSH = &SSH{Address: "evil:22", User: "root"} }, []string{"Host.SSH", "evil:22", "no SSH (local)"}},
		"unknown host":        {func(in *ScriptInput) { in.Host.Name = "x9" }, []string{"Host", "x9"}},
		"not the app host":    {func(in *ScriptInput) { in.Host, _ = p.Host("c1"); in.Host.Scripts = "" }, []string{"Host", `"c1"`, `"a1"`}},
		"state dir":           {func(in *ScriptInput) { in.Host.State = "/root" }, []string{"Host.State", "/root"}},
		"source path":         {func(in *ScriptInput) { in.SourcePath = "/" }, []string{"SourcePath"}},
		"unknown step":        {func(in *ScriptInput) { in.Step = "shell" }, []string{"Step", "shell"}},
		"takeover of nobody":  {func(in *ScriptInput) { in.Step, in.Script, in.FailedHost = "takeover", "", "a1" }, []string{"FailedHost", `"a1" does not come before agent a1`}},
		"takeover of another": {func(in *ScriptInput) { in.Step, in.Script, in.FailedHost = "takeover", "", "b1" }, []string{"FailedHost", `"b1"`, `"a1"`}},
	} {
		t.Run(name, func(t *testing.T) {
			in := good
			c.mutate(&in)
			_, _, err := a.authorizeScript(ctx, in)
			requireRefused(t, err, c.want...)
		})
	}

	// b2 follows b1 in the array-b target order: it may run b1's takeover script (the job
	// has none, so the script name is ""), c1 may not.
	b1, err := p.Host("b1")
	require.NoError(t, err)
	tk := ScriptInput{Job: "orders", Step: "takeover", Host: b1, FailedHost: "b1"}
	b2, _ := sampleAgent(t, "b2")
	_, _, err = b2.authorizeScript(ctx, tk)
	require.NoError(t, err)
	c1, _ := sampleAgent(t, "c1")
	_, _, err = c1.authorizeScript(ctx, tk)
	requireRefused(t, err, `"b1" does not come before agent c1`)

	// The failback application (b1) is quiesced by b1 only.
	fb := ScriptInput{Job: "orders", Step: "resume", Agent: "b1", Host: b1, Script: "thaw.sh"}
	b1a, _ := sampleAgent(t, "b1")
	_, _, err = b1a.authorizeScript(ctx, fb)
	require.NoError(t, err)
	_, _, err = b2.authorizeScript(ctx, fb)
	requireRefused(t, err, `"b2" is not in the job's application order [b1]`)
}

func TestAuthorityTargetSteps(t *testing.T) {
	ctx := context.Background()
	b2, p := sampleAgent(t, "b2")
	pg := PublishGroupInput{Job: "orders", Agent: "b2", TargetRoot: "/mnt/b", ReplicaName: "r", Datasets: []string{"orders/db", "orders/logs"}, Keep: p.Retention.Replicas}
	require.NoError(t, b2.authorizePublishGroup(ctx, pg))
	bad := pg
	bad.Datasets = []string{"orders/db"}
	requireRefused(t, b2.authorizePublishGroup(ctx, bad), "Datasets")
	bad = pg
	bad.TargetRoot = "/"
	requireRefused(t, b2.authorizePublishGroup(ctx, bad), "TargetRoot", `"/"`, `"/mnt/b"`)

	tc := TestCopyInput{Job: "orders", Agent: "b2", TargetRoot: "/mnt/b", Dataset: "orders/db"}
	require.NoError(t, b2.authorizeTestCopy(ctx, tc))
	tc.TargetRoot = "/var"
	requireRefused(t, b2.authorizeTestCopy(ctx, tc), "TargetRoot", "/var")

	repo, err := p.Repo("b2")
	require.NoError(t, err)
	_, err = b2.authorizeMaintain(ctx, MaintainInput{Job: "orders", Agent: "b2", Repo: repo})
	require.NoError(t, err)
	_, err = b2.authorizeMaintain(ctx, MaintainInput{Job: "orders", Agent: "b2", Repo: RepoLocation{Dir: "/home"}})
	requireRefused(t, err, "Repo.Dir", "/home")
	a1, _ := sampleAgent(t, "a1")
	_, err = a1.authorizeMaintain(ctx, MaintainInput{Job: "orders", Agent: "a1", Repo: repo})
	requireRefused(t, err, `"a1" is not in the job's target order [b1 b2]`)
}

// Failback steps run only where the agent's own config lets the job fail back; the check
// script is the job's, on the application host.
func TestAuthorityFailback(t *testing.T) {
	ctx := context.Background()
	const file = "../config/samples/minimal.yaml"
	cfg, err := config.Load(file)
	require.NoError(t, err)
	p, err := NewPlan(cfg, "docs")
	require.NoError(t, err)
	require.True(t, p.FailbackGuard == nil || !p.FailbackGuard.Allow, "the sample must not allow failback")
	h1 := &Agent{Host: "h1", ConfigFile: file}
	repo, err := p.Repo("h1")
	require.NoError(t, err)
	_, err = h1.authorizePush(ctx, "push", PushInput{Job: "docs", Agent: "h1", SourceDir: "/srv/backup/docs", Dataset: "docs", Repo: repo, FollowLink: true})
	requireRefused(t, err, "Failback", "failback.allow is not true in agent h1's own config")
	_, err = h1.authorizePull(ctx, PullInput{Job: "docs", Agent: "h1", TargetRoot: "/srv/primary", Dataset: "docs", SourceDataset: "docs", Repo: repo, InPlace: true, Keep: p.Retention.Replicas, Verify: p.Verify})
	requireRefused(t, err, "Failback")
	host, err := p.Host("h1")
	require.NoError(t, err)
	_, _, err = h1.authorizeScript(ctx, ScriptInput{Job: "docs", Step: "check", Agent: "h1", Host: host, Script: "", SourcePath: "/srv/primary/docs"})
	requireRefused(t, err, "Failback")

	// The full sample allows failback with a check script: the check passes only with the
	// job's script on the application host.
	t.Setenv("REPLCTL_STATE", t.TempDir())
	cfg, err = config.Load("../config/samples/full.yaml")
	require.NoError(t, err)
	for _, j := range cfg.Jobs {
		p, err := NewPlan(cfg, j.Name)
		require.NoError(t, err)
		if p.FailbackGuard == nil || !p.FailbackGuard.Allow || p.Application.Check == "" {
			continue
		}
		app := p.Order.Application[0]
		a := &Agent{Host: app, ConfigFile: "../config/samples/full.yaml"}
		host, err := p.Host(p.Application.Host)
		require.NoError(t, err)
		src, _ := p.SourceDir(host.Name)
		in := ScriptInput{Job: j.Name, Step: "check", Agent: app, Host: host, Script: p.Application.Check, SourcePath: src}
		_, _, err = a.authorizeScript(ctx, in)
		require.NoError(t, err)
		in.Script = "rm-rf.sh"
		_, _, err = a.authorizeScript(ctx, in)
		requireRefused(t, err, "Script", "rm-rf.sh", p.Application.Check)
		return
	}
	t.Fatal("config/samples/full.yaml has no job that allows failback with a check script")
}

// A source dataset reached through a symlink beneath the storage root (the dataset itself or
// a directory on the way) is refused before the push reads anything.
func TestAuthorityPushRefusesSymlinkedDataset(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	secret := filepath.Join(base, "secret")
	require.NoError(t, os.MkdirAll(secret, 0o700))
	require.NoError(t, os.MkdirAll(filepath.Join(base, "A"), 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(base, "B"), 0o755))
	cfgFile := filepath.Join(base, "replctl.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(fmt.Sprintf(`
storage:
  - {name: a, path: %[1]s/A}
  - {name: b, path: %[1]s/B}
hosts:
  - {name: h1, attach: {a: %[1]s/A, b: %[1]s/B}}
jobs:
  - {name: flat, source: {storage: a, dataset: flat}, target: {storage: b, dataset: flat}, application: {host: h1}, order: {source: [h1], target: [h1]}}
  - {name: nested, source: {storage: a, dataset: app/db}, target: {storage: b, dataset: db}, application: {host: h1}, order: {source: [h1], target: [h1]}}
`, base)), 0o600))
	require.NoError(t, os.Symlink(secret, filepath.Join(base, "A/flat")))
	require.NoError(t, os.Symlink(base, filepath.Join(base, "A/app")))
	require.NoError(t, os.MkdirAll(filepath.Join(base, "db"), 0o755))
	a := &Agent{Host: "h1", ConfigFile: cfgFile}
	for job, ds := range map[string]string{"flat": "flat", "nested": "app/db"} {
		cfg, err := config.Load(cfgFile)
		require.NoError(t, err)
		p, err := NewPlan(cfg, job)
		require.NoError(t, err)
		src, err := p.DatasetDir("h1", "a", ds)
		require.NoError(t, err)
		repo, err := p.Repo("h1")
		require.NoError(t, err)
		_, err = a.authorizePush(ctx, "push", PushInput{Job: job, Agent: "h1", SourceDir: src, Dataset: ds, Repo: repo})
		requireRefused(t, err, "SourceDir", "cannot be read beneath the storage root", "is a symlink")
	}
}

// A preflight input naming other storage, datasets or dirs than the agent's own config, or
// sent to an agent outside the source order, is refused naming the field and both values.
func TestAuthorityPreflight(t *testing.T) {
	ctx := context.Background()
	a, _ := sampleAgent(t, "a1")
	good := PreflightInput{Job: "orders", Agent: "a1", Storage: "array-a",
		Datasets: []string{"orders/db", "orders/logs"}, SourceDirs: []string{"/mnt/a/orders/db", "/mnt/a/orders/logs"}}
	own, err := a.authorizePreflight(ctx, good)
	require.NoError(t, err)
	assert.Equal(t, "a1", own.host.Name)
	assert.Equal(t, "/mnt/a", own.root)
	assert.Equal(t, good.SourceDirs, own.dirs)
	assert.Equal(t, config.OnUnsupportedFail, own.onUnsupported)

	for name, c := range map[string]struct {
		mutate func(*PreflightInput)
		want   []string
	}{
		"source dir /etc":     {func(in *PreflightInput) { in.SourceDirs = []string{"/etc", "/mnt/a/orders/logs"} }, []string{"SourceDirs", "/etc", "/mnt/a/orders/db"}},
		"target storage":      {func(in *PreflightInput) { in.Storage = "array-b" }, []string{"Storage", `"array-b"`, `"array-a"`}},
		"one dataset dropped": {func(in *PreflightInput) { in.Datasets, in.SourceDirs = in.Datasets[:1], in.SourceDirs[:1] }, []string{"Datasets", "orders/logs"}},
		"foreign dataset":     {func(in *PreflightInput) { in.Datasets = []string{"orders/db", "../../etc"} }, []string{"Datasets", "../../etc"}},
		"job not in config":   {func(in *PreflightInput) { in.Job = "payroll" }, []string{"Job", "payroll"}},
	} {
		t.Run(name, func(t *testing.T) {
			in := good
			c.mutate(&in)
			_, err := a.authorizePreflight(ctx, in)
			requireRefused(t, err, c.want...)
		})
	}

	b1, _ := sampleAgent(t, "b1")
	in := good
	in.Agent = "b1"
	_, err = b1.authorizePreflight(ctx, in)
	requireRefused(t, err, "Preflight", `"b1" is not in the job's source order [a1]`)
}

// A warm reads only the replicas of a target whose order holds the agent, on the root it
// mounts, with the job's own retention.
func TestAuthorityWarm(t *testing.T) {
	ctx := context.Background()
	a, p := sampleAgent(t, "c1")
	good := WarmInput{Job: "orders", Agent: "c1", TargetRoot: "/mnt/c", Datasets: []string{"dr/orders-logs"}}
	reqs, err := a.authorizeWarm(ctx, good)
	require.NoError(t, err)
	require.Len(t, reqs, 1)
	assert.Equal(t, "/mnt/c", reqs[0].TargetRoot)
	assert.Equal(t, p.Retention.Replicas, reqs[0].Keep.Last)
	assert.True(t, reqs[0].Recycle, "retention.retire defaults to recycle")

	for name, c := range map[string]struct {
		mutate func(*WarmInput)
		want   []string
	}{
		"target root /etc":       {func(in *WarmInput) { in.TargetRoot = "/etc" }, []string{"TargetRoot", `"/etc"`, `"/mnt/c"`}},
		"other target's dataset": {func(in *WarmInput) { in.Datasets = []string{"dr/orders-logs", "orders/db"} }, []string{"Dataset", "orders/db"}},
		"no dataset":             {func(in *WarmInput) { in.Datasets = nil }, []string{"Datasets", "names no dataset"}},
		"job c1 does not have":   {func(in *WarmInput) { in.Job = "payroll" }, []string{"Job", "no such job"}},
	} {
		t.Run(name, func(t *testing.T) {
			in := good
			c.mutate(&in)
			_, err := a.authorizeWarm(ctx, in)
			requireRefused(t, err, c.want...)
		})
	}
}

// A job without read_ahead in the agent's own config is refused a warm, whatever the input.
func TestAuthorityWarmNeedsReadAhead(t *testing.T) {
	const file = "../config/samples/minimal.yaml"
	a := &Agent{Host: "h1", ConfigFile: file}
	_, err := a.authorizeWarm(context.Background(), WarmInput{Job: "docs", Agent: "h1", TargetRoot: "/srv/backup", Datasets: []string{"docs"}})
	requireRefused(t, err, "Job", "does not read ahead (read_ahead) in its own config")
}
