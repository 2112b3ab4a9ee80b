package test

import (
	"bytes"
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
	"golang.org/x/sys/unix"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/activities/dataplane"
	"github.com/replctl/replctl/activities/hostexec"
	"github.com/replctl/replctl/activities/hostexec/sshtest"
	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/internal/testworld"
	"github.com/replctl/replctl/internal/worecord"
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

// copyOver copies src into the staging's copy/tree through serve-staging, with its record
// in copy/record, and returns the still open link.
func (w *stagingWorld) copyOver(t *testing.T, src string, key []byte, hdr worecord.Header, workers int) (*dataplane.IncomingLink, worecord.CopyResult) {
	t.Helper()
	l, err := w.dial(t, activities.StagingRequest{Job: "orders", Storage: "array-b", Dataset: "orders"}.Command())
	require.NoError(t, err)
	require.NoError(t, l.Mkdir("/copy"))
	require.NoError(t, l.Mkdir("/copy/tree"))
	recf, err := l.Staging("/copy").Create("record")
	require.NoError(t, err)
	rec, err := worecord.NewWriter(recf, key, hdr)
	require.NoError(t, err)
	cres, err := worecord.Copy(src, l.Staging("/copy/tree"), rec, workers)
	require.NoError(t, err)
	require.NoError(t, rec.Close())
	require.NoError(t, recf.Close())
	return l, cres
}

// checkCopy does the target's side: it reads copy/record with key and checks copy/tree.
func (w *stagingWorld) checkCopy(t *testing.T, key []byte, hdr worecord.Header, workers int) (worecord.Result, error) {
	t.Helper()
	r, _, err := dataplane.OpenIncoming(testworld.StoragePath(w.dir, "array-b"), "orders")
	require.NoError(t, err)
	defer r.Close()
	b, err := r.ReadFile("copy/record")
	require.NoError(t, err)
	entries, err := worecord.Read(b, key, hdr)
	require.NoError(t, err)
	tree, err := r.OpenRoot("copy/tree")
	require.NoError(t, err)
	defer tree.Close()
	return worecord.Check(tree, entries, workers)
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
	require.Eventually(t, func() bool {
		logged, _ := os.ReadFile(filepath.Join(w.dir, "hosts", "b1", "serve-staging.log"))
		return strings.Contains(string(logged), `event="granted `+w.incoming("orders")+`"`) && strings.Contains(string(logged), `event="ended"`)
	}, 5*time.Second, 50*time.Millisecond, "the target logs the session's grant and end")
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
	// The target host keeps its own log of every refusal.
	logged, err := os.ReadFile(filepath.Join(w.dir, "hosts", "b1", "serve-staging.log"))
	require.NoError(t, err)
	assert.Equal(t, len(cases), strings.Count(string(logged), `event="refused"`), "%s", logged)
	for _, want := range []string{"does not set write_once", "is not a staging request", `\"dataset\":\"../array-a/orders\"`} {
		assert.Contains(t, string(logged), want)
	}
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

// Steps 1 to 3 of write once, end to end without a run: a source agent copies a tree into
// the target's incoming staging through serve-staging, with its record; the target side
// reads the record with the key from its own password, checks the staging against it and
// gets the source tree. A file the writer changes afterwards fails the next check.
func TestWriteOnceCopyOverServeStagingIsCheckedOnTheTarget(t *testing.T) {
	w := newStagingWorld(t, "a1")
	src := filepath.Join(t.TempDir(), "orders")
	writeDataset(t, src, 60, 96<<10, 21)
	sparse, err := os.Create(filepath.Join(src, "sparse"))
	require.NoError(t, err)
	_, err = sparse.WriteAt([]byte("data after a hole"), 16<<20)
	require.NoError(t, err)
	require.NoError(t, sparse.Close())
	hdr := worecord.Header{Job: "orders", Dataset: "orders", Run: "run-1", Epoch: 1}
	sourceKey, err := worecord.Key([]byte("the repository password"), "orders", "orders")
	require.NoError(t, err)
	l, cres := w.copyOver(t, src, sourceKey, hdr, 4)
	assert.Equal(t, 62, cres.Files)

	// The target host, with its own copy of the password.
	check := func() (worecord.Result, error) {
		targetKey, err := worecord.Key([]byte("the repository password"), "orders", "orders")
		require.NoError(t, err)
		return w.checkCopy(t, targetKey, hdr, 2)
	}
	res, err := check()
	require.NoError(t, err)
	assert.Equal(t, cres.Bytes, res.Bytes)
	assert.Equal(t, treeDigest(t, src), treeDigest(t, filepath.Join(w.incoming("orders"), "copy", "tree")))
	var st unix.Stat_t
	require.NoError(t, unix.Lstat(filepath.Join(w.incoming("orders"), "copy", "tree", "sparse"), &st))
	assert.Less(t, st.Blocks*512, int64(1<<20), "the hole travelled as a hole: %d blocks", st.Blocks)

	// The writer overwrites a file with other bytes of the same size: the check fails on it.
	f, err := l.Staging("/copy/tree").Create("d00/s0/f00000.bin")
	require.NoError(t, err)
	orig, err := os.ReadFile(filepath.Join(src, "d00/s0/f00000.bin"))
	require.NoError(t, err)
	_, err = f.Write(bytes.Repeat([]byte{0x5a}, len(orig)))
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.NoError(t, l.Close())
	_, err = check()
	require.ErrorIs(t, err, worecord.ErrIncomplete)
	assert.Contains(t, err.Error(), `"d00/s0/f00000.bin": content differs from its record`)
}

// TestMeasureWriteOnceOverSSH times the copy of TestWriteOnceCopyOverServeStagingIsCheckedOnTheTarget
// on a tree of one's own, through serve-staging behind the loopback sshd (encryption, the
// SFTP protocol and a second process), then the target's check: beside
// activities/dataplane's TestMeasureWriteOnceRecord (the same copy through a mount), what the
// SSH path costs. Skipped unless REPLCTL_MEASURE_WORECORD_SRC names the tree.
func TestMeasureWriteOnceOverSSH(t *testing.T) {
	src := os.Getenv("REPLCTL_MEASURE_WORECORD_SRC")
	if src == "" {
		t.Skip("set REPLCTL_MEASURE_WORECORD_SRC to a tree to run")
	}
	w := newStagingWorld(t, "a1")
	hdr := worecord.Header{Job: "orders", Dataset: "orders", Run: "r", Epoch: 1}
	key, err := worecord.Key([]byte("measure"), "orders", "orders")
	require.NoError(t, err)
	_ = os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)

	start := time.Now()
	l, cres := w.copyOver(t, src, key, hdr, 8)
	require.NoError(t, l.Close())
	r, _, err := dataplane.OpenIncoming(testworld.StoragePath(w.dir, "array-b"), "orders")
	require.NoError(t, err)
	f, err := r.Open(".")
	require.NoError(t, err)
	require.NoError(t, unix.Syncfs(int(f.Fd())))
	f.Close()
	r.Close()
	t.Logf("copy over ssh: %d files, %d bytes in %v (with syncfs)", cres.Files, cres.Bytes, time.Since(start).Round(time.Millisecond))

	cstart := time.Now()
	res, err := w.checkCopy(t, key, hdr, 8)
	require.NoError(t, err)
	t.Logf("check: %d bytes in %v; total %v", res.Bytes, time.Since(cstart).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}
