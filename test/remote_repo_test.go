package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/replctl/replctl/activities/hostexec/sshtest"
)

// remoteRepoConfig: the source host a1 is attached to array-a only; the repository is on
// array-b, which b1 and b2 mount and serve over SSH (%[4]s, %[5]s: their connect settings,
// filled in before the harness formats the rest).
const remoteRepoConfig = `
temporal: {address: 127.0.0.1:7233, namespace: default}
storage:
  - {name: array-a, path: %[1]s/storage/array-a}
  - {name: array-b, path: %[1]s/storage/array-b}
hosts:
  - {name: a1, attach: {array-a: %[1]s/storage/array-a}, scripts: %[1]s/scripts, state: %[1]s/hosts/a1}
  - {name: b1, attach: {array-b: %[1]s/storage/array-b}, scripts: %[1]s/scripts, state: %[1]s/hosts/b1%[4]s}
  - {name: b2, attach: {array-b: %[1]s/storage/array-b}, scripts: %[1]s/scripts, state: %[1]s/hosts/b2%[5]s}
jobs:
  - name: orders
    source: {storage: array-a, dataset: orders}
    target: {storage: array-b, dataset: orders}
    application: {host: a1, quiesce: freeze.sh, resume: thaw.sh, timeout: 30s}
    order: {source: [a1], target: [b1, b2]}
    timeouts: {heartbeat: %[2]s, schedule_to_start: %[3]s, start_to_close: 5m}
    repository: {storage: array-b}
`

func sshConnect(s *sshtest.Server) string {
	return fmt.Sprintf(", connect: {ssh: {address: %q, user: %s, key: %s, known_hosts: %s}}", s.Addr, s.User, s.KeyFile, s.KnownHostsFile)
}

// a1 is not attached to the repository's storage: it pushes over SFTP through b1 (first
// in the target order). With b1's sshd down, a restarted a1 pushes through b2. Both
// replicas are byte-identical to the source.
func TestPushOverSFTPToRepositoryOnOtherStorage(t *testing.T) {
	b1, b2 := sshtest.Start(t), sshtest.Start(t)
	cfg := strings.Replace(remoteRepoConfig, "%[4]s", sshConnect(b1), 1)
	cfg = strings.Replace(cfg, "%[5]s", sshConnect(b2), 1)
	e := newEnvWith(t, envOptions{config: cfg})
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
	recordHistory(t, e, run.GetID(), run.GetRunID(), "push-over-sftp")

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
