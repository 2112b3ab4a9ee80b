package activities

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/replctl/replctl/activities/dataplane"
)

// failbackWorld is a source storage S with a dataset holding the "old" tree, and a
// repository holding an image of a "new" tree, as after a failover.
type failbackWorld struct {
	t     *testing.T
	agent *Agent
	root  string // S
	link  string // S/orders
	repo  RepoLocation
	image string
	epoch int64
}

// writeTree writes a tree whose every file says version: files in nested dirs.
func writeTree(t *testing.T, dir, version string, files int) {
	t.Helper()
	for i := range files {
		p := filepath.Join(dir, fmt.Sprintf("d%d", i%4), fmt.Sprintf("f%03d", i))
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(version), 0o644))
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "VERSION"), []byte(version), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "ALSO"), []byte(version), 0o644))
}

// writeOrdersConfig writes, in base, the config of one host a1 and one job orders from
// S/orders to T/orders with its repository on T, plus extra (lines of the job), and
// returns its path: the agent's own config gives every path the tests' inputs use
// (authority.go).
func writeOrdersConfig(t *testing.T, base, extra string) string {
	t.Helper()
	cfgFile := filepath.Join(base, "replctl.yaml")
	require.NoError(t, os.WriteFile(cfgFile, []byte(fmt.Sprintf(`
storage:
  - {name: primary, path: %[1]s/S}
  - {name: backup, path: %[1]s/T}
hosts:
  - {name: a1, attach: {primary: %[1]s/S, backup: %[1]s/T}}
jobs:
  - name: orders
    source: {storage: primary, dataset: orders}
    target: {storage: backup, dataset: orders}
    application: {host: a1}
    order: {source: [a1], target: [a1]}
    verify: full
    retention: {replicas: 3}
    repository: {storage: backup, path: repo, password_file: %[1]s/repo.password}
`, base)+extra), 0o600))
	return cfgFile
}

func newFailbackWorld(t *testing.T) *failbackWorld {
	t.Helper()
	base := t.TempDir()
	t.Cleanup(dataplane.WaitTrash)
	cfgFile := writeOrdersConfig(t, base, "    failback: {allow: true, primary_stopped: operator}\n")
	a, err := NewAgent("a1", cfgFile, filepath.Join(base, "state"))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, a.Close()) })
	w := &failbackWorld{t: t, agent: a, root: filepath.Join(base, "S"), repo: RepoLocation{Dir: filepath.Join(base, "T", "repo"), PasswordFile: filepath.Join(base, "repo.password")}}
	w.link = filepath.Join(w.root, "orders")
	require.NoError(t, os.WriteFile(w.repo.PasswordFile, []byte("failback-test\n"), 0o600))
	// The image holds the "new" tree (the target's replica after the DR side wrote to it);
	// the source dataset then holds the "old" one.
	writeTree(t, w.link, "new", 300)
	res, err := a.Push(context.Background(), PushInput{Job: "orders", RunID: "r1", Agent: "a1", SourceDir: w.link, Dataset: "orders", Repo: w.repo})
	require.NoError(t, err)
	w.image = res.ImageID
	require.NoError(t, os.RemoveAll(w.link))
	writeTree(t, w.link, "old", 200)
	return w
}

func (w *failbackWorld) pullInput() PullInput {
	w.epoch++
	return PullInput{Job: "orders", RunID: "fb1", Agent: "a1", ImageID: w.image, TargetRoot: w.root, Dataset: "orders",
		Repo: w.repo, ReplicaName: "20261202T120000Z-fb000001", Epoch: w.epoch, Keep: 3, Verify: dataplane.VerifyFull, SourceDataset: "orders", InPlace: true}
}

// reader stats the dataset path in a loop and reads two files of one tree through one
// directory fd: it must never find the path missing, never see a mix of trees, and never go
// back from new to old.
type reader struct {
	stop                     atomic.Bool
	wg                       sync.WaitGroup
	reads, missing, mixed    atomic.Int64
	sawOld, sawNew, wentBack atomic.Bool
}

// startReader returns once the reader has read the tree at path once.
func startReader(t *testing.T, path string) *reader {
	r := &reader{}
	r.wg.Add(1)
	first := make(chan struct{})
	go func() {
		defer r.wg.Done()
		for i := 0; !r.stop.Load(); i++ {
			if i == 1 {
				close(first)
			}
			if _, err := os.Lstat(path); err != nil {
				r.missing.Add(1)
				continue
			}
			fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY, 0)
			if err != nil {
				r.missing.Add(1)
				continue
			}
			v, verr := readAt(fd, "VERSION")
			also, aerr := readAt(fd, "ALSO")
			unix.Close(fd)
			if verr != nil || aerr != nil {
				r.mixed.Add(1) // a tree without its files: half built or half moved
				continue
			}
			r.reads.Add(1)
			switch {
			case v != also:
				r.mixed.Add(1)
			case v == "old":
				if r.sawNew.Load() {
					r.wentBack.Store(true)
				}
				r.sawOld.Store(true)
			case v == "new":
				r.sawNew.Store(true)
			}
		}
	}()
	t.Cleanup(r.halt)
	<-first
	return r
}

func (r *reader) halt() { r.stop.Store(true); r.wg.Wait() }

func readAt(dirfd int, name string) (string, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	buf := make([]byte, 16)
	n, err := unix.Read(fd, buf)
	return string(buf[:max(n, 0)]), err
}

// treeVersions maps each file under dir to its content.
func treeVersions(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		out[rel] = string(b)
		return err
	}))
	return out
}

func (w *failbackWorld) assertSwitched(res PullResult) {
	t := w.t
	fi, err := os.Lstat(w.link)
	require.NoError(t, err)
	assert.True(t, fi.IsDir(), "the dataset is a plain directory")
	got := treeVersions(t, w.link)
	assert.Len(t, got, 302)
	for p, v := range got {
		require.Equal(t, "new", v, p)
	}
	aside := filepath.Join(w.root, ".replctl/failback/orders/20261202T120000Z-fb000001.before")
	assert.Equal(t, aside, res.SavedPrevious)
	old := treeVersions(t, aside)
	assert.Len(t, old, 202, "the replaced tree is kept whole")
	for p, v := range old {
		require.Equal(t, "old", v, p)
	}
	assert.Equal(t, w.link, res.ReplicaPath)
	assert.Equal(t, w.link, res.LinkPath)
}

// A failback pull rebuilds the dataset beside it and switches it in one atomic step: a
// reader looping on the dataset path never finds it missing and sees whole trees only,
// old then new.
func TestFailbackPullSwitchesAtomically(t *testing.T) {
	w := newFailbackWorld(t)
	r := startReader(t, w.link)
	res, err := w.agent.Pull(context.Background(), w.pullInput())
	require.NoError(t, err)
	require.Eventually(t, r.sawNew.Load, 10*time.Second, time.Millisecond, "the reader reads the new tree after the switch")
	r.halt()
	t.Logf("reader: %d reads, %d missing, %d mixed", r.reads.Load(), r.missing.Load(), r.mixed.Load())
	assert.Zero(t, r.missing.Load(), "the dataset path never disappeared")
	assert.Zero(t, r.mixed.Load(), "every read saw one whole tree")
	assert.True(t, r.sawOld.Load(), "the reader read the old tree before the switch")
	assert.True(t, r.sawNew.Load())
	assert.False(t, r.wentBack.Load())
	w.assertSwitched(res)

	// A retried attempt of the same pull finds the switch done and changes nothing.
	again, err := w.agent.Pull(context.Background(), w.pullInput())
	require.NoError(t, err)
	assert.Equal(t, res.SavedPrevious, again.SavedPrevious)
	w.assertSwitched(again)
}

// An attempt that stops right after the exchange (a crash) leaves the dataset switched; the
// taker's attempt only moves the old tree aside: no second pull, no switch back.
func TestFailbackSwitchFinishedByTaker(t *testing.T) {
	w := newFailbackWorld(t)
	switchHook = func() error { return errors.New("agent died") }
	_, err := w.agent.Pull(context.Background(), w.pullInput())
	switchHook = nil
	require.ErrorContains(t, err, "agent died")
	assert.Equal(t, "new", treeVersions(t, w.link)["VERSION"], "switched before the crash")
	fb, err := newFailbackPaths(w.pullInput())
	require.NoError(t, err)
	assert.Equal(t, "old", treeVersions(t, fb.built)["VERSION"], "the old tree waits at the built tree's place")

	res, err := w.agent.Pull(context.Background(), w.pullInput())
	require.NoError(t, err)
	w.assertSwitched(res)
	_, err = os.Lstat(fb.built)
	assert.ErrorIs(t, err, fs.ErrNotExist)
}

// builtTree is a failback's paths with a "new" tree built, as the pull leaves it.
func builtTree(t *testing.T, in PullInput) failbackPaths {
	t.Helper()
	p, err := newFailbackPaths(in)
	require.NoError(t, err)
	writeTree(t, p.built, "new", 3)
	return p
}

// An attempt overtaken by a newer one (its epoch is older than the fence) does not switch.
func TestFailbackStaleAttemptDoesNotSwitch(t *testing.T) {
	root := t.TempDir()
	in := PullInput{Agent: "a1", TargetRoot: root, Dataset: "orders", ReplicaName: "r1", Epoch: 5, InPlace: true}
	p := builtTree(t, in)
	writeTree(t, p.link, "old", 3)
	require.NoError(t, dataplane.OpenFence(p.build, "orders").Advance(6, "a2"))
	_, err := switchInPlace(in, p)
	require.ErrorIs(t, err, dataplane.ErrFenced)
	assert.Equal(t, "old", treeVersions(t, p.link)["VERSION"])
	assert.Equal(t, "new", treeVersions(t, p.built)["VERSION"])
}

// Read-only tree roots (replicas keep the image's modes) are switched by a non-root agent
// and keep their modes; with no dataset directory yet, the built tree is renamed in.
func TestFailbackSwitchModesAndMissingDataset(t *testing.T) {
	root := t.TempDir()
	in := PullInput{Agent: "a1", TargetRoot: root, Dataset: "app/orders", ReplicaName: "r1", Epoch: 1, InPlace: true}
	p := builtTree(t, in)
	writeTree(t, p.link, "old", 3)
	require.NoError(t, os.Chmod(p.link, 0o555))
	require.NoError(t, os.Chmod(p.built, 0o550))
	saved, err := switchInPlace(in, p)
	require.NoError(t, err)
	assert.Equal(t, p.aside, saved)
	for dir, mode := range map[string]fs.FileMode{p.link: 0o550, p.aside: 0o555} {
		fi, err := os.Stat(dir)
		require.NoError(t, err)
		assert.Equal(t, mode, fi.Mode().Perm(), dir)
		require.NoError(t, os.Chmod(dir, 0o755)) // for the temp dir's removal
	}

	in.Dataset, in.ReplicaName = "fresh", "r2"
	p = builtTree(t, in)
	saved, err = switchInPlace(in, p)
	require.NoError(t, err)
	assert.Empty(t, saved, "nothing was replaced")
	assert.Equal(t, "new", treeVersions(t, p.link)["VERSION"])

	// A symlink at the dataset path is not a dataset directory: refused, untouched.
	in.Dataset, in.ReplicaName = "linked", "r3"
	p = builtTree(t, in)
	require.NoError(t, os.Symlink("fresh", p.link))
	_, err = switchInPlace(in, p)
	require.ErrorIs(t, err, dataplane.ErrBadInput)
	assert.True(t, strings.Contains(err.Error(), "failback replaces a plain directory"), err.Error())
	target, err := os.Readlink(p.link)
	require.NoError(t, err)
	assert.Equal(t, "fresh", target)

	// A source storage that is not mounted: refused, nothing created.
	in.TargetRoot = filepath.Join(root, "not-mounted")
	p, err = newFailbackPaths(in)
	require.NoError(t, err)
	_, err = failbackStart(in, p)
	require.ErrorIs(t, err, dataplane.ErrBadInput)
	_, err = os.Stat(in.TargetRoot)
	assert.ErrorIs(t, err, fs.ErrNotExist)
}

// A S/.replctl planted as a symlink to a world-writable dir is refused before anything is
// built there, and nothing is replaced.
func TestFailbackRefusesSymlinkedControlDir(t *testing.T) {
	w := newFailbackWorld(t)
	evil := filepath.Join(t.TempDir(), "evil")
	require.NoError(t, os.MkdirAll(evil, 0o777))
	require.NoError(t, os.Chmod(evil, 0o777))
	require.NoError(t, os.RemoveAll(filepath.Join(w.root, ".replctl")))
	require.NoError(t, os.Symlink(evil, filepath.Join(w.root, ".replctl")))
	_, err := w.agent.Pull(context.Background(), w.pullInput())
	require.Error(t, err)
	assert.Contains(t, err.Error(), ".replctl is a symlink")
	left, err := os.ReadDir(evil)
	require.NoError(t, err)
	assert.Empty(t, left, "nothing built through the link")
	for p, v := range treeVersions(t, w.link) {
		require.Equal(t, "old", v, p)
	}
}
