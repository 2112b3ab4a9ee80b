package test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/replctl/replctl/activities/hostexec/sshtest"
	"github.com/replctl/replctl/config"
)

// remoteRepoConfig: the source host a1 is attached to array-a only; the repository is on
// array-b, which b1 and b2 mount and serve over SSH (sshd1, sshd2).
func remoteRepoConfig(sshd1, sshd2 *sshtest.Server) func(c *config.Config) {
	return func(c *config.Config) {
		c.Hosts = []config.Host{c.Hosts[0], c.Hosts[2], c.Hosts[3]}
		attachOnly(c, &c.Hosts[0], "array-a")
		attachOnly(c, &c.Hosts[1], "array-b")
		attachOnly(c, &c.Hosts[2], "array-b")
		c.Hosts[1].Connect, c.Hosts[2].Connect = sshConnectTo(sshd1), sshConnectTo(sshd2)
		plainJob(&c.Jobs[0])
		c.Jobs[0].Order = config.Order{Source: []string{"a1"}, Target: []string{"b1", "b2"}}
	}
}

// a1 is not attached to the repository's storage: it pushes over SFTP through b1 (first
// in the target order). With b1's sshd down, a restarted a1 pushes through b2. Both
// replicas are byte-identical to the source.
func TestPushOverSFTPToRepositoryOnOtherStorage(t *testing.T) {
	b1, b2 := sshtest.Start(t), sshtest.Start(t)
	e := newEnvWith(t, envOptions{edit: remoteRepoConfig(b1, b2)})
	writeDataset(t, e.sourceDir(), 200, 256<<10, 11)
	e.startAgents("a1", "b1", "b2")

	run := e.start("orders")
	st, err := e.wait(run)
	require.NoError(t, err)
	assert.Equal(t, "b1", st.Replica.Agent)
	assert.Equal(t, treeDigest(t, e.sourceDir()), treeDigest(t, e.targetLink()))
	assert.Contains(t, b1.Log(), "Accepted publickey", "a1 reached the repository through b1")
	assert.NotContains(t, b2.Log(), "Accepted publickey", "b2 was not needed")
	// The password file is on the hosts (secrets/ beside the config they share here),
	// private, and nothing lies beside the repository on its storage.
	pw, err := os.Stat(filepath.Join(e.dir, "secrets", "array-b-replctl-repository.password"))
	require.NoError(t, err, "the password file was created in the hosts' secrets dir")
	assert.Equal(t, os.FileMode(0o600), pw.Mode().Perm())
	_, err = os.Lstat(filepath.Join(e.dir, "storage/array-b/.replctl/repository.password"))
	assert.True(t, os.IsNotExist(err), "no password file beside the repository: %v", err)
	recordHistory(t, e, run.GetID(), run.GetRunID(), "push-over-sftp-baseline")

	// b1's sshd stops listening (its agent stays up and pulls). Open sessions would
	// survive that, so a1's agent restarts: its new session must go through b2.
	b1.Stop()
	e.kill("a1")
	e.startAgent("a1")
	writeDataset(t, filepath.Join(e.sourceDir(), "more"), 20, 64<<10, 12)
	run = e.start("orders")
	st, err = e.wait(run)
	require.NoError(t, err)
	assert.Equal(t, treeDigest(t, e.sourceDir()), treeDigest(t, e.targetLink()))
	assert.Contains(t, b2.Log(), "Accepted publickey", "a1 reached the repository through b2")
}
