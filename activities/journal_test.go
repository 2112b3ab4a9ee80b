package activities

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/replctl/replctl/activities/dataplane"
	"github.com/replctl/replctl/internal/testworld"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"golang.org/x/sys/unix"
)

// preflightNames runs a's preflight and returns the unsupported entries it names ("" when
// it passes).
func preflightNames(t *testing.T, a *Agent, in PreflightInput) string {
	t.Helper()
	_, err := a.Preflight(context.Background(), in)
	if err == nil {
		return ""
	}
	var appErr *temporal.ApplicationError
	require.True(t, errors.As(err, &appErr), "want an Unsupported application error, got %v", err)
	require.Equal(t, ErrTypeUnsupported, appErr.Type(), err.Error())
	return appErr.Error()
}

// scans is how a's preflight scans have looked so far: whole trees, changed directories.
func scans(a *Agent) [2]int {
	a.changes.mu.Lock()
	defer a.changes.mu.Unlock()
	return [2]int{a.changes.whole, a.changes.changed}
}

// The preflight looks only at the directories changed since its last clean scan, and still
// finds what was made there; a new agent (what a restart leaves) looks at the whole tree,
// so what changed while no agent watched is found too.
func TestPreflightScanFollowsTheJournal(t *testing.T) {
	a, in, base := preflightWorld(t, "")
	a.ChangeJournal = JournalPreflight
	t.Cleanup(func() { a.Close() }) //nolint:errcheck
	src := filepath.Join(base, "A/app/orders")
	for d := range 10 {
		for f := range 20 {
			p := filepath.Join(src, fmt.Sprintf("d%d/e/f%d", d, f))
			require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
			require.NoError(t, os.WriteFile(p, nil, 0o644))
		}
	}
	require.Empty(t, preflightNames(t, a, in))
	if a.changes.j == nil {
		t.Skip("no change journal here (fanotify needs CAP_SYS_ADMIN)")
	}
	require.Equal(t, [2]int{1, 0}, scans(a), "the first scan is whole")
	require.Empty(t, preflightNames(t, a, in))
	require.Equal(t, [2]int{1, 1}, scans(a), "then only what changed")

	// A new tree, deep down.
	require.NoError(t, os.MkdirAll(filepath.Join(src, "d3/e/new/deeper"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(src, "d3/e/new/deeper/bad-\xff"), nil, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(src, "d3/e/new/deeper/bad-\uf7ff"), nil, 0o644))
	require.Contains(t, preflightNames(t, a, in), `"app/orders/d3/e/new/deeper/bad-\xff"`)
	require.Equal(t, [2]int{1, 2}, scans(a))
	// Fixed: the failed scan left no point, so the next is whole.
	require.NoError(t, os.RemoveAll(filepath.Join(src, "d3/e/new")))
	require.Empty(t, preflightNames(t, a, in))
	require.Equal(t, [2]int{2, 2}, scans(a))

	// An attribute name on an existing file, and a clash made by a rename into a directory.
	require.NoError(t, unix.Setxattr(filepath.Join(src, "d7/e/f3"), "user.\xff", []byte("v"), 0))
	require.NoError(t, os.WriteFile(filepath.Join(src, "d9/e/f1-\uf7ff"), nil, 0o644))
	require.NoError(t, os.Rename(filepath.Join(src, "d9/e/f1"), filepath.Join(src, "d9/e/f1-\xff")))
	names := preflightNames(t, a, in)
	require.Contains(t, names, `app/orders/d7/e/f3 (xattr name "user.\xff")`)
	require.Contains(t, names, `"app/orders/d9/e/f1-\xff"`)
	require.Equal(t, [2]int{2, 3}, scans(a))
	require.NoError(t, unix.Removexattr(filepath.Join(src, "d7/e/f3"), "user.\xff"))
	require.NoError(t, os.Remove(filepath.Join(src, "d9/e/f1-\xff")))
	require.Empty(t, preflightNames(t, a, in))
	require.Empty(t, preflightNames(t, a, in))
	require.Equal(t, [2]int{3, 4}, scans(a))

	// The agent stops; a clash is made while none watches; a new agent finds it.
	require.NoError(t, a.Close())
	require.NoError(t, os.WriteFile(filepath.Join(src, "d5/e/x-\xff"), nil, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(src, "d5/e/x-\uf7ff"), nil, 0o644))
	b := &Agent{Host: a.Host, ConfigFile: a.ConfigFile, ChangeJournal: JournalPreflight}
	t.Cleanup(func() { b.Close() }) //nolint:errcheck
	require.Contains(t, preflightNames(t, b, in), `"app/orders/d5/e/x-\xff"`)
	require.Equal(t, [2]int{1, 0}, scans(b), "a new agent scans whole")
}

// Without --change-journal (the default) every scan is whole.
func TestPreflightWithoutJournal(t *testing.T) {
	a, in, _ := preflightWorld(t, "")
	require.Empty(t, preflightNames(t, a, in))
	require.Empty(t, preflightNames(t, a, in))
	require.Equal(t, [2]int{2, 0}, scans(a))
	require.Nil(t, a.changes.j)
}

// pushWorld is an agent with one job whose source is S/orders and whose repository and
// replica are on T.
type pushWorld struct {
	t           *testing.T
	base, src   string
	cfgFile     string
	repo        RepoLocation
	epoch, runs int64
	keepImages  int // the pulls' image retention (0: 10)
}

func newPushWorld(t *testing.T) *pushWorld {
	t.Helper()
	base := t.TempDir()
	t.Cleanup(dataplane.WaitTrash)
	w := &pushWorld{t: t, base: base, src: filepath.Join(base, "S", "orders"), cfgFile: writeOrdersConfig(t, base, ""),
		repo: RepoLocation{Dir: filepath.Join(base, "T", "repo"), PasswordFile: filepath.Join(base, "repo.password")}}
	require.NoError(t, os.WriteFile(w.repo.PasswordFile, []byte("journal-test\n"), 0o600))
	require.NoError(t, os.MkdirAll(filepath.Join(base, "T"), 0o755))
	return w
}

// agent starts an agent of the world that follows its journal for pushes.
func (w *pushWorld) agent() *Agent {
	a, err := NewAgent("a1", w.cfgFile, filepath.Join(w.base, "state"))
	require.NoError(w.t, err)
	a.ChangeJournal = JournalPush
	w.t.Cleanup(func() { a.Close() }) //nolint:errcheck
	return a
}

// run pushes with a and pulls the image; it returns the push's result and the replica.
func (w *pushWorld) run(a *Agent) (PushResult, string) {
	w.t.Helper()
	w.runs++
	ctx := context.Background()
	run := fmt.Sprintf("r%d", w.runs)
	res, err := a.Push(ctx, PushInput{Job: "orders", RunID: run, Agent: "a1", SourceDir: w.src, Dataset: "orders", Repo: w.repo})
	require.NoError(w.t, err)
	w.epoch++
	keepImages := cmp.Or(w.keepImages, 10)
	_, err = a.Pull(ctx, PullInput{Job: "orders", RunID: run, Agent: "a1", ImageID: res.ImageID, TargetRoot: filepath.Join(w.base, "T"),
		Dataset: "orders", Repo: w.repo, ReplicaName: fmt.Sprintf("20261206T0300%02dZ-%s", w.runs, run), Epoch: w.epoch, Keep: 3, Verify: dataplane.VerifyFull, SourceDataset: "orders", KeepImages: keepImages})
	require.NoError(w.t, err)
	replica, err := filepath.EvalSymlinks(filepath.Join(w.base, "T", "orders"))
	require.NoError(w.t, err)
	return res, replica
}

func readString(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	return string(b)
}

// With --change-journal=push a push lists only the directories changed since the job's
// previous image and its replica holds every reported change, and every write through a
// shared mapping of a file still held for writing. A write made while no agent ran reaches
// the replica through the new agent's first push, which is whole.
func TestPushFollowsTheJournal(t *testing.T) {
	w := newPushWorld(t)
	// The source on a filesystem of its own: a file another test holds open for writing
	// elsewhere, with several links, would make a push whole (heldIn).
	if os.Geteuid() == 0 {
		unmount, err := testworld.MountTmpfs(filepath.Join(w.base, "S"), 64<<20)
		require.NoError(t, err)
		t.Cleanup(unmount)
	}
	writeTree(t, w.src, "v1", 200) // d0..d3
	a := w.agent()
	res, _ := w.run(a)
	if a.changes.j == nil {
		t.Skip("no change journal here (fanotify needs CAP_SYS_ADMIN)")
	}
	require.Zero(t, res.ReusedDirs, "the first push of an agent is whole")

	require.NoError(t, os.WriteFile(filepath.Join(w.src, "d1/f001"), []byte("v2, written"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(w.src, "d2/new"), []byte("v2, new"), 0o644))
	res, replica := w.run(a)
	require.Equal(t, 2, res.ReusedDirs, "d0 and d3 are taken from the previous image")
	require.Equal(t, 2, res.PartialDirs, "d1 and d2: only the entries named are looked at")
	require.Equal(t, "v2, written", readString(t, filepath.Join(replica, "d1/f001")))
	require.Equal(t, "v2, new", readString(t, filepath.Join(replica, "d2/new")))

	// Written through a shared mapping, still held, its file closed: no event, but the push
	// looks at the files held for writing.
	mf, err := os.OpenFile(filepath.Join(w.src, "d3/f003"), os.O_RDWR, 0)
	require.NoError(t, err)
	mem, err := unix.Mmap(int(mf.Fd()), 0, 2, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	require.NoError(t, err)
	require.NoError(t, mf.Close())
	copy(mem, "V3")
	require.NoError(t, unix.Msync(mem, unix.MS_SYNC))
	res, replica = w.run(a)
	require.Equal(t, 3, res.ReusedDirs, "d3 holds a mapped file")
	require.Equal(t, 1, res.PartialDirs)
	require.Equal(t, "V3", readString(t, filepath.Join(replica, "d3/f003")))
	require.NoError(t, unix.Munmap(mem))
	res, _ = w.run(a)
	require.Equal(t, 3, res.ReusedDirs, "the close names d3")
	res, _ = w.run(a)
	require.Equal(t, 4, res.ReusedDirs, "nothing held, nothing reported")

	// Written through a mapping since dropped, the file still open: the push looks at it.
	mf, err = os.OpenFile(filepath.Join(w.src, "d3/f007"), os.O_RDWR, 0)
	require.NoError(t, err)
	mem, err = unix.Mmap(int(mf.Fd()), 0, 2, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	require.NoError(t, err)
	copy(mem, "V5")
	require.NoError(t, unix.Munmap(mem))
	res, replica = w.run(a)
	require.Equal(t, 3, res.ReusedDirs)
	require.Equal(t, "V5", readString(t, filepath.Join(replica, "d3/f007")))
	require.NoError(t, mf.Close())

	// Held for writing through a link outside the source: another of its names may be in
	// the source (this one is), so the push lists the whole tree.
	outside := filepath.Join(w.base, "S", "outside-link")
	require.NoError(t, os.Link(filepath.Join(w.src, "d2/f002"), outside))
	of, err := os.OpenFile(outside, os.O_RDWR, 0)
	require.NoError(t, err)
	t.Cleanup(func() { of.Close() }) //nolint:errcheck
	mem, err = unix.Mmap(int(of.Fd()), 0, 2, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	require.NoError(t, err)
	copy(mem, "V6")
	require.NoError(t, unix.Munmap(mem))
	res, replica = w.run(a)
	require.Zero(t, res.ReusedDirs)
	require.Equal(t, "V6", readString(t, filepath.Join(replica, "d2/f002")))
	require.NoError(t, of.Close())
	require.NoError(t, os.Remove(outside))
	res, _ = w.run(a)
	require.Equal(t, 4, res.ReusedDirs, "the close and the link's removal are outside the source")

	// The agent stops; a file is written while none watches; a new agent pushes whole.
	require.NoError(t, a.Close())
	require.NoError(t, os.WriteFile(filepath.Join(w.src, "d0/f000"), []byte("v4, while no agent ran"), 0o644))
	b := w.agent()
	res, replica = w.run(b)
	require.Zero(t, res.ReusedDirs, "a new agent's first push is whole")
	require.Equal(t, "v4, while no agent ran", readString(t, filepath.Join(replica, "d0/f000")))
	res, _ = w.run(b)
	require.Equal(t, 4, res.ReusedDirs, "then it follows its own journal")

	// Its last whole listing is older than the rescan interval: whole again, then not.
	b.JournalRescan = time.Millisecond
	time.Sleep(2 * time.Millisecond)
	res, _ = w.run(b)
	require.Zero(t, res.ReusedDirs)
	b.JournalRescan = time.Hour
	res, _ = w.run(b)
	require.Equal(t, 4, res.ReusedDirs)
}
