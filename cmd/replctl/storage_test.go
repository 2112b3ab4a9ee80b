package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/replctl/replctl/config"
)

// storageConfig: h1 attaches two real directories, h2 attaches array-b through a symlink to
// array-a's directory, h3's storage is not on this machine. %[1]s is the test dir.
const storageConfig = `storage: [{name: array-a}, {name: array-b}]
hosts:
  - {name: h1, attach: {array-a: %[1]s/a, array-b: %[1]s/b}}
  - {name: h2, attach: {array-a: %[1]s/a, array-b: %[1]s/b-link}}
  - {name: h3, attach: {array-a: /nonexistent/replctl-test/a, array-b: /nonexistent/replctl-test/b}}
`

// `replctl config validate --online` checks the storage of the hosts whose storage this
// machine sees (or the --host given) on disk, says which hosts it checked and which not, and
// refuses a storage that is a symlink to another one naming both storages and both paths.
func TestConfigValidateOnline(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"a", "b"} {
		require.NoError(t, os.Mkdir(filepath.Join(dir, d), 0o755))
	}
	require.NoError(t, os.Symlink(filepath.Join(dir, "a"), filepath.Join(dir, "b-link")))
	cfg := filepath.Join(dir, "replctl.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(storageConfig, dir)), 0o644))

	// Offline (as before): the text is valid.
	out, _, err := runCLI(t, "config", "validate", cfg)
	require.NoError(t, err)
	assert.Contains(t, out, ": ok (")

	out, _, err = runCLI(t, "config", "validate", "--online", cfg)
	require.Error(t, err)
	assert.Equal(t, ExitUsage, exitCode(err))
	assert.ErrorContains(t, err, "host h2: storage array-b at "+dir+"/b-link is a symlink to "+dir+"/a")
	assert.ErrorContains(t, err, "host h2: storage array-b at "+dir+"/b-link is the same directory as storage array-a at "+dir+"/a")
	assert.NotContains(t, err.Error(), "host h1:", "h1 is fine")
	assert.Contains(t, out, "host h1: storage ok (array-a at "+dir+"/a, array-b at "+dir+"/b)")
	assert.Contains(t, out, "host h3: not checked: not all its storage is on this machine (array-a at /nonexistent/replctl-test/a")

	out, _, err = runCLI(t, "config", "validate", "--online", "--host", "h1", cfg)
	require.NoError(t, err)
	assert.Contains(t, out, "host h1: storage ok")
	assert.NotContains(t, out, "h2")
	assert.Contains(t, out, ": ok (")

	// A host named with --host is checked even when its storage is not here.
	_, _, err = runCLI(t, "config", "validate", "--online", "--host", "h3", cfg)
	assert.Equal(t, ExitUsage, exitCode(err))
	assert.ErrorContains(t, err, "host h3: storage array-a at /nonexistent/replctl-test/a does not exist")

	_, _, err = runCLI(t, "config", "validate", "--online", "--host", "h9", cfg)
	assert.Equal(t, ExitUsage, exitCode(err))
	assert.ErrorContains(t, err, "h9")

	_, _, err = runCLI(t, "config", "validate", "--host", "h1", cfg)
	assert.Equal(t, ExitUsage, exitCode(err))
	assert.ErrorContains(t, err, "--host needs --online")
}

// `replctl dev` writes sample datasets only inside its state dir: with a storage path that
// is a symlink out of it (to an "etc" directory here), it refuses before writing anything,
// naming the dataset path and where it leads; with the link gone it writes both samples.
func TestMakeSamplesStaysInStateDir(t *testing.T) {
	base := t.TempDir()
	state := filepath.Join(base, "state")
	etc := filepath.Join(base, "etc")
	require.NoError(t, os.MkdirAll(filepath.Join(state, "storage"), 0o755))
	require.NoError(t, os.Mkdir(etc, 0o755))
	require.NoError(t, os.Symlink(etc, filepath.Join(state, "storage", "array-b")))
	t.Setenv("REPLCTL_STATE", state)
	cfg, err := config.Load("../../config/examples/dev.yaml")
	require.NoError(t, err)

	var errOut bytes.Buffer
	f := NewFactory(&bytes.Buffer{}, &errOut)
	err = makeSamples(f, cfg)
	require.Error(t, err)
	assert.Contains(t, err.Error(), filepath.Join(state, "storage/array-b/media"))
	assert.Contains(t, err.Error(), filepath.Join(etc, "media"))
	assert.Contains(t, err.Error(), "outside the dev state dir "+state)
	entries, err := os.ReadDir(etc)
	require.NoError(t, err)
	assert.Empty(t, entries, "nothing written outside the state dir")
	_, err = os.Lstat(filepath.Join(state, "storage/array-a/orders"))
	assert.True(t, os.IsNotExist(err), "nothing written at all: the check comes before any sample")

	require.NoError(t, os.Remove(filepath.Join(state, "storage", "array-b")))
	require.NoError(t, makeSamples(f, cfg))
	for _, ds := range []string{"storage/array-a/orders", "storage/array-b/media"} {
		fi, err := os.Lstat(filepath.Join(state, ds))
		require.NoError(t, err)
		assert.True(t, fi.IsDir(), ds)
	}
}
