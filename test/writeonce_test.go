package test

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/activities/dataplane"
	"github.com/replctl/replctl/activities/hostexec"
	"github.com/replctl/replctl/activities/hostexec/sshtest"
	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/internal/testworld"
)

// stagingWorld is a target host b1 behind a real sshd whose authorized_keys binds the test
// user's key to `replctl serve-staging --host b1 --from from`, with b1's own config in dir:
// job orders sets write_once, job books does not.
type stagingWorld struct {
	dir, cfgFile string
	sshd         *sshtest.Server
	target       hostexec.Target
}

func newStagingWorld(t *testing.T, from string) *stagingWorld {
	t.Helper()
	w := &stagingWorld{dir: t.TempDir(), sshd: sshtest.Start(t)}
	require.NoError(t, testworld.Layout(w.dir, testScript, "array-a", "array-b"))
	cfg := testworld.Config(w.dir, time.Second, 2*time.Second)
	cfg.Hosts[2].Connect = sshConnectTo(w.sshd) // b1
	cfg.Jobs[0].WriteOnce = true
	books := cfg.Jobs[0]
	books.Name, books.WriteOnce = "books", false
	books.Source.Dataset, books.Target.Dataset = "books", "books"
	cfg.Jobs = append(cfg.Jobs, books)
	w.cfgFile = filepath.Join(w.dir, "b1.yaml")
	writeConfig(t, w.cfgFile, cfg)

	authorized := filepath.Join(w.sshd.Dir, "authorized_keys")
	key, err := os.ReadFile(authorized)
	require.NoError(t, err)
	forced := fmt.Sprintf("command=\"%s serve-staging --config %s --host b1 --from %s\",restrict %s", replctlBin, w.cfgFile, from, key)
	require.NoError(t, os.WriteFile(authorized, []byte(forced), 0o600))
	w.target = hostexec.Target{Address: w.sshd.Addr, User: w.sshd.User, KeyFile: w.sshd.KeyFile, KnownHostsFile: w.sshd.KnownHostsFile}
	return w
}

func (w *stagingWorld) incoming(dataset string) string {
	return filepath.Join(testworld.StoragePath(w.dir, "array-b"), ".replctl", "incoming", dataset)
}

func (w *stagingWorld) dial(t *testing.T, command string) (*dataplane.IncomingLink, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return dataplane.DialIncoming(ctx, "b1", w.target, command)
}

// A source agent of a write_once job writes files into the target's incoming staging over
// SFTP through the forced command; what it writes lands there and only there.
func TestServeStagingWritesTheIncomingStaging(t *testing.T) {
	w := newStagingWorld(t, "a1")
	l, err := w.dial(t, activities.StagingRequest{Job: "orders", Storage: "array-b", Dataset: "orders"}.Command())
	require.NoError(t, err)
	require.NoError(t, l.Mkdir("/d"))
	// Create opens read-write, which the staging refuses: the writer never reads back.
	_, err = l.Create("/d/f")
	assert.ErrorIs(t, err, fs.ErrPermission)
	f, err := l.OpenFile("/d/f", os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
	require.NoError(t, err)
	_, err = f.Write([]byte("written once"))
	require.NoError(t, err)
	require.NoError(t, f.Close())
	// A climbing path is cleaned to one beneath the staging.
	f, err = l.OpenFile("/../../../../climbed", os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	// Links and reading are refused.
	assert.Error(t, l.Symlink("/etc/passwd", "/link"))
	_, err = l.Open("/d/f")
	if err == nil {
		_, err = l.ReadLink("/d/f")
	}
	assert.Error(t, err, "reading back is refused")
	require.NoError(t, l.Close())

	got, err := os.ReadFile(filepath.Join(w.incoming("orders"), "d", "f"))
	require.NoError(t, err)
	assert.Equal(t, "written once", string(got))
	_, err = os.Stat(filepath.Join(w.incoming("orders"), "climbed"))
	assert.NoError(t, err, "the climbing path landed in the staging")
	for _, p := range []string{filepath.Join(w.dir, "climbed"), "/climbed", filepath.Join(w.incoming("orders"), "link")} {
		_, err = os.Lstat(p)
		assert.True(t, os.IsNotExist(err), "%s: %v", p, err)
	}
	st, err := os.Stat(w.incoming("orders"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), st.Mode().Perm(), "the staging is closed to others")
}

// Hostile input: every request the target host's own config does not grant is refused with
// a message naming it, before anything is created on the target storage.
func TestServeStagingRefusesWhatTheTargetConfigDoesNotGrant(t *testing.T) {
	w := newStagingWorld(t, "a1")
	cases := []struct {
		name, command, want string
	}{
		{"job without write_once", activities.StagingRequest{Job: "books", Storage: "array-b", Dataset: "books"}.Command(), "does not set write_once"},
		{"unknown job", activities.StagingRequest{Job: "payroll", Storage: "array-b", Dataset: "payroll"}.Command(), "has no such job"},
		{"the source storage", activities.StagingRequest{Job: "orders", Storage: "array-a", Dataset: "orders"}.Command(), "has no target on storage \"array-a\""},
		{"another job's dataset", activities.StagingRequest{Job: "orders", Storage: "array-b", Dataset: "books"}.Command(), "\"books\" is not a dataset of the job's target"},
		{"a climbing dataset", activities.StagingRequest{Job: "orders", Storage: "array-b", Dataset: "../array-a/orders"}.Command(), "is not a dataset of the job's target"},
		{"a shell command", "touch " + filepath.Join(w.dir, "pwned"), "is not a staging request"},
		{"an extra field", `replctl-staging {"job":"orders","storage":"array-b","dataset":"orders","root":"/"}`, "unknown field"},
		{"sftp subsystem", "", "is not a staging request"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l, err := w.dial(t, c.command)
			if err == nil {
				l.Close()
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.want)
			assert.Contains(t, err.Error(), "host b1 refuses source host a1")
		})
	}
	_, err := os.Lstat(filepath.Join(w.dir, "pwned"))
	assert.True(t, os.IsNotExist(err), "the shell command did not run: %v", err)
	_, err = os.Lstat(filepath.Join(testworld.StoragePath(w.dir, "array-b"), ".replctl", "incoming"))
	assert.True(t, os.IsNotExist(err), "no refused request created anything: %v", err)
}

// A key bound to a host that is not in the job's source order (b2 is; b1 is a target host)
// is refused, and so is a key whose forced command names a host the config lacks.
func TestServeStagingRefusesAKeyOfAnotherHost(t *testing.T) {
	for from, want := range map[string]string{"b1": "b1 is not in the job's source order", "z9": "has no host \"z9\""} {
		w := newStagingWorld(t, from)
		_, err := w.dial(t, activities.StagingRequest{Job: "orders", Storage: "array-b", Dataset: "orders"}.Command())
		require.Error(t, err, from)
		assert.Contains(t, err.Error(), want)
		assert.True(t, strings.Contains(err.Error(), "host b1 refuses source host "+from), "%v", err)
	}
}

// The config the test world writes for the target host is valid with write_once.
func TestStagingWorldConfigLoads(t *testing.T) {
	w := newStagingWorld(t, "a1")
	cfg, err := config.Load(w.cfgFile)
	require.NoError(t, err)
	j, err := cfg.Job("orders")
	require.NoError(t, err)
	assert.True(t, j.WriteOnce)
}
