package activities

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/replctl/replctl/activities/dataplane"
	"github.com/replctl/replctl/config"
)

// The group/fan-out sample resolves into a plan with every dataset, every target with its
// order, the failback application, and every host those name.
func TestNewPlanGroupFanOutFailback(t *testing.T) {
	cfg, err := config.Load("../config/samples/group-fanout.yaml")
	require.NoError(t, err)
	p, err := NewPlan(cfg, "orders")
	require.NoError(t, err)
	assert.Equal(t, Endpoint{Storage: "array-a", Dataset: "orders/db", Datasets: []string{"orders/db", "orders/logs"}}, p.Source)
	require.Len(t, p.AllTargets(), 2)
	assert.Equal(t, p.Targets[0].Endpoint, p.Target, "Target is the first target")
	assert.Equal(t, []string{"b1", "b2"}, p.Order.Target)
	assert.Equal(t, TargetPlan{Endpoint: Endpoint{Storage: "array-c", Dataset: "dr/orders-db", Datasets: []string{"dr/orders-db", "dr/orders-logs"}}, Order: []string{"c1"}}, p.Targets[1])
	require.NotNil(t, p.Failback)
	assert.Equal(t, "b1", p.Failback.Host)
	assert.Equal(t, "freeze.sh", p.Failback.Quiesce)
	assert.Equal(t, &FailbackGuard{Allow: true, PrimaryStopped: config.PrimaryStoppedOperator}, p.FailbackGuard)
	var hosts []string
	for _, h := range p.Hosts {
		hosts = append(hosts, h.Name)
	}
	assert.Equal(t, []string{"a1", "b1", "b2", "c1"}, hosts)
	dir, err := p.DatasetDir("c1", "array-c", "dr/orders-db")
	require.NoError(t, err)
	assert.Equal(t, "/mnt/c/dr/orders-db", dir)
	_, err = p.FindTarget("array-z")
	assert.ErrorContains(t, err, `no target on storage "array-z"`)

	// A single-target job's plan has no Targets: its history stays as before.
	cfg, err = config.Load("../config/samples/minimal.yaml")
	require.NoError(t, err)
	p, err = NewPlan(cfg, "docs")
	require.NoError(t, err)
	assert.Nil(t, p.Targets)
	assert.Nil(t, p.Source.Datasets)
	assert.Len(t, p.AllTargets(), 1)
	assert.Nil(t, p.FailbackGuard, "no failback section: failback is refused")

	// The full sample allows failback with the primary's check script.
	t.Setenv("REPLCTL_STATE", t.TempDir())
	cfg, err = config.Load("../config/samples/full.yaml")
	require.NoError(t, err)
	p, err = NewPlan(cfg, "billing")
	require.NoError(t, err)
	assert.Equal(t, "postgres-stopped.sh", p.Application.Check)
	assert.Equal(t, &FailbackGuard{Allow: true, PrimaryStopped: config.PrimaryStoppedCheck}, p.FailbackGuard)
	assert.Nil(t, p.Failback, "no failback.application")
}

// An order host not attached to the repository storage gets the hosts to reach it
// through, in takeover order (target order first); attached hosts get a directory.
func TestPlanRepoOverSSH(t *testing.T) {
	cfg, err := config.Load("../config/samples/remote-repository.yaml")
	require.NoError(t, err)
	p, err := NewPlan(cfg, "orders")
	require.NoError(t, err)

	loc, err := p.Repo("a1")
	require.NoError(t, err)
	require.Len(t, loc.Via, 2)
	require.Equal(t, "b1", loc.Via[0].Name)
	require.Equal(t, "b2", loc.Via[1].Name)
	require.Equal(t, "/mnt/b/.replctl/repository", loc.Via[0].Dir)
	require.Equal(t, loc.Via[0].Dir, loc.Dir)
	require.Equal(t, "b2.example.net:2222", loc.Via[1].SSH.Address)
	require.Equal(t, 5*time.Second, loc.Via[1].SSH.ConnectTimeout)
	require.Equal(t, "/etc/replctl/known_hosts", loc.Via[0].SSH.KnownHostsFile)

	loc, err = p.Repo("b2")
	require.NoError(t, err)
	require.Empty(t, loc.Via, "b2 is attached: no SSH")
	require.Equal(t, "/mnt/b/.replctl/repository", loc.Dir)

	_, err = p.Repo("nope")
	require.ErrorContains(t, err, `host "nope" is not part of job "orders"`)
}

// When every order host is attached, plans are as before: no Via.
func TestPlanRepoAllAttached(t *testing.T) {
	cfg, err := config.Load("../config/samples/mutual-failover.yaml")
	require.NoError(t, err)
	p, err := NewPlan(cfg, "app1")
	require.NoError(t, err)
	require.Empty(t, p.Repository.Via)
	loc, err := p.Repo("a1")
	require.NoError(t, err)
	// The password file is on the host (the config's secrets_dir), not beside the repository.
	require.Equal(t, RepoLocation{Dir: "/mnt/b/.replctl/repository", PasswordFile: filepath.Join(filepath.Dir(cfg.File), "secrets", "array-b-replctl-repository.password")}, loc)
}

// config.Job.Verify holds the values of dataplane.VerifyMode (config imports nothing of the
// module, so it spells them itself).
func TestVerifyModesAreTheConfigs(t *testing.T) {
	require.Equal(t, config.VerifyChanged, string(dataplane.VerifyChanged))
	require.Equal(t, config.VerifyFull, string(dataplane.VerifyFull))
}
