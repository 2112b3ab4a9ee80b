package activities

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/replctl/replctl/config"
)

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
	require.Equal(t, RepoLocation{Dir: "/mnt/b/.replctl/repository"}, loc)
}
