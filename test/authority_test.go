package test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/activities/dataplane"
	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/internal/testworld"
	"github.com/replctl/replctl/workflows"
)

// hostileInput is what the test's own workflow sends to a replctl agent's queue: one
// activity with an input of the attacker's choosing.
type hostileInput struct {
	Queue   string
	Script  *activities.ScriptInput  `json:",omitempty"`
	Push    *activities.PushInput    `json:",omitempty"`
	Pull    *activities.PullInput    `json:",omitempty"`
	Verify  *activities.VerifyInput  `json:",omitempty"`
	Restore *activities.RestoreInput `json:",omitempty"`
	Warm    *activities.WarmInput    `json:",omitempty"`
}

// hostile is a workflow that is not replctl's: it schedules one replctl activity on a host's
// queue, as any client that reaches the frontend could.
func hostile(ctx workflow.Context, in hostileInput) error {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue: in.Queue, StartToCloseTimeout: 30 * time.Second, HeartbeatTimeout: 5 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{MaximumAttempts: 1},
	})
	var name string
	var arg any
	switch {
	case in.Script != nil:
		name, arg = activities.RunScriptName, *in.Script
	case in.Push != nil:
		name, arg = activities.PushName, *in.Push
	case in.Pull != nil:
		name, arg = activities.PullName, *in.Pull
	case in.Verify != nil:
		name, arg = activities.VerifyName, *in.Verify
	case in.Restore != nil:
		name, arg = activities.RestoreName, *in.Restore
	case in.Warm != nil:
		name, arg = activities.WarmName, *in.Warm
	}
	return workflow.ExecuteActivity(ctx, name, arg).Get(ctx, nil)
}

// A workflow of the test's own schedules RunScript, Push and Pull on a real agent process
// with paths, scripts and hosts its config does not give: every one is refused as
// non-retryable Refused naming the field and both values, and nothing runs or is written.
func TestHostileWorkflowIsRefused(t *testing.T) {
	e := newEnv(t)
	metrics, err := testworld.FreeAddr()
	require.NoError(t, err)
	e.startAgentConfig("a1", e.cfgFile, "--metrics", metrics)
	e.startAgent("a2")

	// What an attacker would like to reach: a script of its own, a secret tree outside
	// every dataset, a repository and a target of its own.
	evil := filepath.Join(e.dir, "evil")
	for _, d := range []string{"scripts", "secret", "repo", "target"} {
		require.NoError(t, os.MkdirAll(filepath.Join(evil, d), 0o755))
	}
	ran := filepath.Join(evil, "ran")
	for _, s := range []string{"freeze.sh", "evil.sh"} {
		require.NoError(t, os.WriteFile(filepath.Join(evil, "scripts", s), []byte("#!/bin/sh\ntouch "+ran+"\n"), 0o755))
	}
	require.NoError(t, os.WriteFile(filepath.Join(evil, "secret", "key"), []byte("secret"), 0o600))
	writeDataset(t, e.sourceDir(), 3, 100, 1)

	host := activities.HostPlan{Name: "a1", Queue: workflows.HostQueue("a1"), Scripts: filepath.Join(e.dir, "scripts"), State: filepath.Join(e.dir, "hosts/a1")}
	script := func(mut func(*activities.ScriptInput)) hostileInput {
		in := activities.ScriptInput{Job: "orders", RunID: "x", Step: "quiesce", Agent: "a1", Host: host, Script: "freeze.sh", SourcePath: e.sourceDir(), Timeout: 10 * time.Second}
		mut(&in)
		return hostileInput{Script: &in}
	}
	repo := activities.RepoLocation{Dir: filepath.Join(e.dir, "storage/array-b/.replctl/repository")}
	cases := []struct {
		name string
		in   hostileInput
		want []string
	}{
		{"script from a foreign dir", script(func(in *activities.ScriptInput) { in.Host.Scripts = filepath.Join(evil, "scripts") }),
			[]string{"Host.Scripts", filepath.Join(evil, "scripts"), filepath.Join(e.dir, "scripts")}},
		{"script the job does not name", script(func(in *activities.ScriptInput) { in.Script = "evil.sh" }),
			[]string{"Script", `"evil.sh"`, `"freeze.sh"`}},
		{"script of a job a1 does not have", script(func(in *activities.ScriptInput) { in.Job = "payroll" }),
			[]string{"Job", "payroll", "no such job"}},
		{"takeover of a host over foreign SSH", script(func(in *activities.ScriptInput) {
			in.Step, in.Script, in.FailedHost = "takeover", "takeover.sh", "b1"
			in.Host = activities.HostPlan{Name: "b1", Scripts: filepath.Join(evil, "scripts"), SSH: &activities.SSH{Address: "127.0.0.1:1", User: "root"}}
		}), []string{"FailedHost", `"b1" does not come before agent a1`}},
		{"push of a tree outside the dataset", hostileInput{Push: &activities.PushInput{Job: "orders", RunID: "x", Agent: "a1", SourceDir: filepath.Join(evil, "secret"), Dataset: "orders", Repo: repo}},
			[]string{"SourceDir", filepath.Join(evil, "secret"), e.sourceDir()}},
		{"push into a foreign repository", hostileInput{Push: &activities.PushInput{Job: "orders", RunID: "x", Agent: "a1", SourceDir: e.sourceDir(), Dataset: "orders", Repo: activities.RepoLocation{Dir: filepath.Join(evil, "repo")}}},
			[]string{"Repo.Dir", filepath.Join(evil, "repo")}},
		{"push carrying a script the job does not name", hostileInput{Push: &activities.PushInput{Job: "orders", RunID: "x", Agent: "a1", SourceDir: e.sourceDir(), Dataset: "orders", Repo: repo,
			Quiesce: &activities.ScriptInput{Job: "orders", RunID: "x", Step: "quiesce", Agent: "a1", Host: host, Script: "evil.sh", Timeout: 10 * time.Second}}},
			[]string{"Script", `"evil.sh"`, `"freeze.sh"`}},
		// The job's own quiesce must not run when the push it travels with is refused.
		{"push carrying the job's quiesce into a foreign repository", hostileInput{Push: &activities.PushInput{Job: "orders", RunID: "x", Agent: "a1", SourceDir: e.sourceDir(), Dataset: "orders", Repo: activities.RepoLocation{Dir: filepath.Join(evil, "repo")},
			Quiesce: &activities.ScriptInput{Job: "orders", RunID: "x", Step: "quiesce", Agent: "a1", Host: host, Script: "freeze.sh", SourcePath: e.sourceDir(), Timeout: 10 * time.Second}}},
			[]string{"Repo.Dir", filepath.Join(evil, "repo")}},
		// Nor when it also carries a preflight and precopy of a tree outside the dataset.
		{"push carrying the job's quiesce and a preflight of a tree outside the dataset", hostileInput{Push: &activities.PushInput{Job: "orders", RunID: "x", Agent: "a1", SourceDir: filepath.Join(evil, "secret"), Dataset: "orders", Repo: repo,
			Quiesce: &activities.ScriptInput{Job: "orders", RunID: "x", Step: "quiesce", Agent: "a1", Host: host, Script: "freeze.sh", SourcePath: e.sourceDir(), Timeout: 10 * time.Second},
			Before:  &activities.BeforeQuiesce{Precopy: true, Preflight: activities.PreflightInput{Job: "orders", RunID: "x", Agent: "a1", Storage: "array-a", Datasets: []string{"orders"}, SourceDirs: []string{filepath.Join(evil, "secret")}}}}},
			[]string{"refused Preflight", "SourceDirs", filepath.Join(evil, "secret"), e.sourceDir()}},
		// A push that quiesces nothing carrying a preflight of a tree outside the dataset.
		{"push carrying a preflight of a tree outside the dataset", hostileInput{Push: &activities.PushInput{Job: "orders", RunID: "x", Agent: "a1", SourceDir: filepath.Join(evil, "secret"), Dataset: "orders", Repo: repo,
			Before: &activities.BeforeQuiesce{Preflight: activities.PreflightInput{Job: "orders", RunID: "x", Agent: "a1", Storage: "array-a", Datasets: []string{"orders"}, SourceDirs: []string{filepath.Join(evil, "secret")}}}}},
			[]string{"refused Preflight", "SourceDirs", filepath.Join(evil, "secret"), e.sourceDir()}},
		// Nor when the resume it would run after the push is a script the job does not name.
		{"push carrying the job's quiesce and a thaw the job does not name", hostileInput{Push: &activities.PushInput{Job: "orders", RunID: "x", Agent: "a1", SourceDir: e.sourceDir(), Dataset: "orders", Repo: repo,
			Quiesce: &activities.ScriptInput{Job: "orders", RunID: "x", Step: "quiesce", Agent: "a1", Host: host, Script: "freeze.sh", SourcePath: e.sourceDir(), Timeout: 10 * time.Second},
			Thaw:    &activities.ScriptInput{Job: "orders", RunID: "x", Step: "resume", Agent: "a1", Host: host, Script: "evil.sh", SourcePath: e.sourceDir(), Timeout: 10 * time.Second}}},
			[]string{"Script", `"evil.sh"`, `"thaw.sh"`}},
		{"pull by an agent of no target order", hostileInput{Pull: &activities.PullInput{Job: "orders", RunID: "x", Agent: "a1", ImageID: "k0", TargetRoot: filepath.Join(e.dir, "storage/array-b"), Dataset: "orders", Repo: repo, ReplicaName: "r1", Epoch: 1}},
			[]string{"Dataset", "not a dataset of a target whose order holds agent a1", "[b1 b2 a2]"}},
		{"pull into a foreign target root", hostileInput{Queue: workflows.HostQueue("a2"), Pull: &activities.PullInput{Job: "orders", RunID: "x", Agent: "a2", ImageID: "k0", TargetRoot: filepath.Join(evil, "target"), Dataset: "orders", Repo: repo, ReplicaName: "r1", Epoch: 1, Keep: 3, KeepImages: 10, SourceDataset: "orders", Verify: dataplane.VerifyChanged}},
			[]string{"agent a2 refused Pull", "TargetRoot", filepath.Join(evil, "target"), filepath.Join(e.dir, "storage/array-b")}},
		{"warm of a foreign target root", hostileInput{Queue: workflows.HostQueue("a2"), Warm: &activities.WarmInput{Job: "orders", RunID: "x", Agent: "a2", TargetRoot: filepath.Join(evil, "target"), Datasets: []string{"orders"}}},
			[]string{"agent a2 refused WarmReplica", "TargetRoot", filepath.Join(evil, "target"), filepath.Join(e.dir, "storage/array-b")}},
		{"warm by an agent of no target order", hostileInput{Warm: &activities.WarmInput{Job: "orders", RunID: "x", Agent: "a1", TargetRoot: filepath.Join(e.dir, "storage/array-b"), Datasets: []string{"orders"}}},
			[]string{"agent a1 refused WarmReplica", "Dataset", "not a dataset of a target whose order holds agent a1"}},
		{"verify of a foreign target root", hostileInput{Queue: workflows.HostQueue("a2"), Verify: &activities.VerifyInput{Job: "orders", Agent: "a2", TargetRoot: filepath.Join(evil, "target"), Dataset: "orders", Repo: repo}},
			[]string{"agent a2 refused VerifyReplicas", "TargetRoot", filepath.Join(evil, "target"), filepath.Join(e.dir, "storage/array-b")}},
		{"verify against a foreign repository", hostileInput{Queue: workflows.HostQueue("a2"), Verify: &activities.VerifyInput{Job: "orders", Agent: "a2", TargetRoot: filepath.Join(e.dir, "storage/array-b"), Dataset: "orders", Repo: activities.RepoLocation{Dir: filepath.Join(evil, "repo")}}},
			[]string{"agent a2 refused VerifyReplicas", "Repo.Dir", filepath.Join(evil, "repo")}},
		{"repair named outside the replicas dir", hostileInput{Queue: workflows.HostQueue("a2"), Verify: &activities.VerifyInput{Job: "orders", Agent: "a2", TargetRoot: filepath.Join(e.dir, "storage/array-b"), Dataset: "orders", Repo: repo, Repair: true, Epoch: 1, RepairName: "../../../../evil/target/x"}},
			[]string{"agent a2 refused VerifyReplicas", "RepairName", "must not contain '/'"}},
		{"restore outside the target storage", hostileInput{Queue: workflows.HostQueue("a2"), Restore: &activities.RestoreInput{Job: "orders", Agent: "a2", TargetRoot: filepath.Join(e.dir, "storage/array-b"), Dataset: "orders", ImageID: "k0", To: filepath.Join(evil, "target"), Repo: repo}},
			[]string{"agent a2 refused RestoreImage", "To", "not a clean absolute path beneath the target storage root"}},
		{"restore into the live dataset", hostileInput{Queue: workflows.HostQueue("a2"), Restore: &activities.RestoreInput{Job: "orders", Agent: "a2", TargetRoot: filepath.Join(e.dir, "storage/array-b"), Dataset: "orders", ImageID: "k0", To: filepath.Join(e.dir, "storage/array-b/orders/sub"), Repo: repo}},
			[]string{"agent a2 refused RestoreImage", "To", "a dataset or replctl's directory"}},
		{"restore into replctl's directory", hostileInput{Queue: workflows.HostQueue("a2"), Restore: &activities.RestoreInput{Job: "orders", Agent: "a2", TargetRoot: filepath.Join(e.dir, "storage/array-b"), Dataset: "orders", ImageID: "k0", To: filepath.Join(e.dir, "storage/array-b/.replctl/replicas/x"), Repo: repo}},
			[]string{"agent a2 refused RestoreImage", "To"}},
	}

	w := worker.New(e.c, "hostile", worker.Options{})
	w.RegisterWorkflowWithOptions(hostile, workflow.RegisterOptions{Name: "Hostile"})
	require.NoError(t, w.Start())
	defer w.Stop()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.in.Queue == "" {
				c.in.Queue = workflows.HostQueue("a1")
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			run, err := e.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{TaskQueue: "hostile"}, "Hostile", c.in)
			require.NoError(t, err)
			err = run.Get(ctx, nil)
			var appErr *temporal.ApplicationError
			require.True(t, errors.As(err, &appErr), "the agent must refuse: %v", err)
			assert.Equal(t, activities.ErrTypeRefused, appErr.Type())
			assert.True(t, appErr.NonRetryable())
			for _, s := range c.want {
				assert.Contains(t, appErr.Error(), s)
			}
			t.Logf("refused: %s", appErr.Error())
		})
	}
	// Nothing ran, nothing was written where the attacker pointed.
	assert.NoFileExists(t, ran, "no script ran")
	for _, d := range []string{"repo", "target"} {
		left, err := os.ReadDir(filepath.Join(evil, d))
		require.NoError(t, err)
		assert.Empty(t, left, "nothing written to %s", d)
	}
	assert.NoDirExists(t, repo.Dir, "no push reached the job's repository")
	assert.Empty(t, e.markers("a1"), "no script of the job ran either")
	// Each refusal is a WARN line in the log of the agent that refused it.
	warned := 0
	for _, h := range []string{"a1", "a2"} {
		logb, err := os.ReadFile(filepath.Join(e.dir, "agent-"+h+".log"))
		require.NoError(t, err)
		warned += strings.Count(string(logb), "refused activity input")
	}
	assert.Equal(t, len(cases), warned)
	// And counted per activity and field.
	resp, err := http.Get("http://" + metrics + "/metrics")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	assert.Regexp(t, `replctl_refused_total\{[^}]*activity="Push"[^}]*field="SourceDir"[^}]*\} 1`, string(body))
	// The two pushes carrying a preflight of a tree outside the dataset: their preflight
	// refused them.
	assert.Regexp(t, `replctl_refused_total\{[^}]*activity="Preflight"[^}]*activity_type="Push"[^}]*field="SourceDirs"[^}]*\} 2`, string(body))
	assert.Regexp(t, `replctl_refused_total\{[^}]*activity="RunScript"[^}]*field="Host.Scripts"[^}]*\} 1`, string(body))
}

// Configs that differ between hosts: an agent acts on its own config only. Here b1's config
// mounts the target storage elsewhere than the config the run was planned from; b1 refuses
// the pull, naming both paths, instead of writing where the plan said, and no other agent
// takes over a refusal.
func TestAgentRefusesPlanFromAnotherConfig(t *testing.T) {
	// Long schedule-to-start: a slow agent start must not be taken for a dead agent here.
	e := newEnvWith(t, envOptions{heartbeat: "2s", scheduleToStart: "20s"})
	writeDataset(t, e.sourceDir(), 5, 1000, 2)
	alt := filepath.Join(e.dir, "storage/array-b-alt")
	require.NoError(t, os.MkdirAll(alt, 0o755))
	b1Cfg := filepath.Join(e.dir, "replctl-b1.yaml")
	e.writeConfigAs(b1Cfg, func(c *config.Config) {
		require.Equal(t, "b1", c.Hosts[2].Name)
		c.Hosts[2].Attach["array-b"] = alt
	})

	// b1 starts once the run is planned (by an agent with the shared config).
	e.startAgents("a1", "a2", "b2")
	run := e.start("orders")
	e.waitStarted(run, activities.PushName) // it carries the preflight and the precopy
	e.startAgentConfig("b1", b1Cfg)
	_, err := e.wait(run)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `agent b1 refused Pull of job "orders": TargetRoot is "`+e.dir+`/storage/array-b" in the activity input, but agent b1's own config gives "`+alt+`"`)
	st := e.status(run)
	for _, tk := range st.Takeovers {
		assert.NotEqual(t, activities.StepPull, tk.Step, "a refusal is not an agent fault: nobody takes over the pull")
	}
	assert.Equal(t, "b1", st.Agents.Target)
	assert.Equal(t, workflows.PhaseFailed, st.Phase)
	left, err := os.ReadDir(alt)
	require.NoError(t, err)
	assert.Empty(t, left, "nothing written under b1's own mount either")
	_, err = os.Lstat(e.targetLink())
	assert.True(t, os.IsNotExist(err), "nothing published at the planned target")
}
