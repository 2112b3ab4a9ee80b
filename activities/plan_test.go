package activities

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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
}
