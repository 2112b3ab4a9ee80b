package fsjournal

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// open starts a journal, or skips where this process may not mark a filesystem.
func open(t *testing.T) *Journal {
	t.Helper()
	j, err := Open(Options{})
	if errors.Is(err, unix.EPERM) {
		t.Skip("fanotify needs CAP_SYS_ADMIN")
	}
	require.NoError(t, err)
	t.Cleanup(j.Close)
	return j
}

// tree makes root with the given files (and their directories).
func tree(t *testing.T, root string, files ...string) {
	t.Helper()
	for _, f := range files {
		p := filepath.Join(root, f)
		require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
		require.NoError(t, os.WriteFile(p, []byte(f), 0o644))
	}
}

func TestJournalNamesChangedDirectories(t *testing.T) {
	j := open(t)
	base := t.TempDir()
	root := filepath.Join(base, "ds")
	tree(t, root, "a/b/f", "x/y/f", "z/f", "keep/deep/f")
	tree(t, base, "elsewhere/f")

	p, err := j.Begin(root)
	require.NoError(t, err)
	ch, err := j.Since(p)
	require.NoError(t, err)
	require.Empty(t, ch.Dirs, "what happened before Begin is not a change")

	tree(t, root, "a/b/new")                                                                  // created in a/b
	require.NoError(t, unix.Setxattr(filepath.Join(root, "x/y/f"), "user.k", []byte("v"), 0)) // attribute of a file in x/y
	tree(t, root, "a/t/u/v")                                                                  // a new tree in a
	require.NoError(t, os.Rename(filepath.Join(root, "x/y"), filepath.Join(root, "a/b/y2")))
	require.NoError(t, os.Chmod(filepath.Join(root, "z"), 0o700)) // the directory's own attribute
	require.NoError(t, os.WriteFile(filepath.Join(root, "keep/deep/f"), []byte("data only"), 0o644))
	tree(t, base, "elsewhere/g") // outside the tree

	ch, err = j.Since(p)
	require.NoError(t, err)
	require.Equal(t, []string{"a", "a/b", "x", "z"}, ch.Dirs,
		"a (new subdir), a/b (new file, moved in), x (moved out), z (chmod); keep/deep had a data write only; a/t and a/b/y2 are new trees")
	require.Equal(t, []string{"a/b/y2", "a/t"}, ch.Trees, "trees created or moved in")
	require.Equal(t, map[string][]string{"a": {"t"}, "a/b": {"new", "y2"}, "x": {"y"}, "z": nil}, ch.Names,
		"the entries changed in each; z's own mode is not a change of its entries")

	q, err := j.Begin(root)
	require.NoError(t, err)
	ch, err = j.Since(q)
	require.NoError(t, err)
	require.Empty(t, ch.Dirs, "nothing after the second point")
	require.NoError(t, os.Remove(filepath.Join(root, "a/b/new")))
	require.NoError(t, unix.Setxattr(filepath.Join(root, "z/f"), "user.k", []byte("v"), 0))
	require.NoError(t, unix.Setxattr(filepath.Join(root, "keep/deep"), "user.k", []byte("v"), 0))
	ch, err = j.Since(q)
	require.NoError(t, err)
	require.Equal(t, []string{"a/b", "keep/deep", "z"}, ch.Dirs, "a removal; a file's attribute (its directory); a directory's own attribute (itself)")
	require.Empty(t, ch.Trees)
	require.Equal(t, map[string][]string{"a/b": {"new"}, "keep/deep": nil, "z": {"f"}}, ch.Names)
	require.NoError(t, os.Chmod(filepath.Join(root, "z"), 0o755))
	ch, err = j.Since(q)
	require.NoError(t, err)
	require.Equal(t, []string{"f"}, ch.Names["z"], "z's own mode, and f")
	require.NoError(t, os.WriteFile(filepath.Join(root, "new-top"), nil, 0o644))
	ch, err = j.Since(q)
	require.NoError(t, err)
	require.Equal(t, []string{"new-top", "z"}, ch.Names["."], "once the root changed, z's own change is one of its names")
}

func TestJournalGaps(t *testing.T) {
	j := open(t)
	base := t.TempDir()
	root := filepath.Join(base, "ds")
	tree(t, root, "a/f")

	t.Run("another journal", func(t *testing.T) {
		other := open(t)
		p, err := other.Begin(root)
		require.NoError(t, err)
		_, err = j.Since(p)
		require.ErrorIs(t, err, ErrGap)
		require.ErrorContains(t, err, "another journal")
	})
	t.Run("root replaced", func(t *testing.T) {
		p, err := j.Begin(root)
		require.NoError(t, err)
		require.NoError(t, os.Rename(root, filepath.Join(base, "old")))
		tree(t, root, "a/f")
		_, err = j.Since(p)
		require.ErrorIs(t, err, ErrGap)
		require.ErrorContains(t, err, "not the directory it was")
	})
	t.Run("root gone", func(t *testing.T) {
		p, err := j.Begin(root)
		require.NoError(t, err)
		require.NoError(t, os.RemoveAll(root))
		_, err = j.Since(p)
		require.ErrorIs(t, err, ErrGap)
		tree(t, root, "a/f")
	})
	t.Run("filesystem mounted inside", func(t *testing.T) {
		p, err := j.Begin(root)
		require.NoError(t, err)
		mnt := filepath.Join(root, "a", "mnt")
		require.NoError(t, os.Mkdir(mnt, 0o755))
		if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
			t.Skipf("mount: %v", err)
		}
		defer unix.Unmount(mnt, 0) //nolint:errcheck
		_, err = j.Since(p)
		require.ErrorIs(t, err, ErrGap)
		require.ErrorContains(t, err, "mounted at a/mnt")
		_, err = j.Begin(root)
		require.ErrorIs(t, err, ErrGap, "a tree with a mount inside cannot be journalled")
	})
	t.Run("events lost", func(t *testing.T) {
		p, err := j.Begin(root)
		require.NoError(t, err)
		j.gap() // what an overflow or a failed read does
		_, err = j.Since(p)
		require.ErrorIs(t, err, ErrGap)
		q, err := j.Begin(root)
		require.NoError(t, err)
		_, err = j.Since(q)
		require.NoError(t, err, "a point taken after the gap is answered")
	})
}

// Forget drops what is older than the points kept, and a point older than those is a gap.
func TestJournalForgets(t *testing.T) {
	j := open(t)
	root := filepath.Join(t.TempDir(), "ds")
	tree(t, root, "a/f", "b/f")
	p, err := j.Begin(root)
	require.NoError(t, err)
	tree(t, root, "a/g")
	q, err := j.Begin(root)
	require.NoError(t, err)
	tree(t, root, "b/g")
	j.Forget([]Point{q})
	j.mu.Lock()
	remembered := len(j.dirs)
	j.mu.Unlock()
	require.Equal(t, 1, remembered, "only b changed after q")
	_, err = j.Since(p)
	require.ErrorIs(t, err, ErrGap, "p was not kept")
	ch, err := j.Since(q)
	require.NoError(t, err)
	require.Equal(t, []string{"b"}, ch.Dirs)
	j.Forget(nil)
	_, err = j.Since(q)
	require.ErrorIs(t, err, ErrGap)
}

// A changed directory whose handle cannot be opened (other than because it is gone) is a
// gap, never a change dropped.
func TestJournalUnresolvableChangeIsAGap(t *testing.T) {
	j := open(t)
	root := filepath.Join(t.TempDir(), "ds")
	tree(t, root, "a/f")
	p, err := j.Begin(root)
	require.NoError(t, err)
	tree(t, root, "a/g")
	j.drain()
	j.mu.Lock()
	require.NotEmpty(t, j.dirs)
	for _, d := range j.dirs {
		d.handle = make([]byte, 200) // longer than any handle (MAX_HANDLE_SZ): EINVAL, not ESTALE
	}
	j.mu.Unlock()
	_, err = j.Since(p)
	require.ErrorIs(t, err, ErrGap)
	require.ErrorContains(t, err, "opening a changed directory by its handle")
}

func TestUnescapeMount(t *testing.T) {
	require.Equal(t, "/mnt/a b", unescapeMount(`/mnt/a\040b`))
	require.Equal(t, "/plain", unescapeMount("/plain"))
	require.Equal(t, `/odd\0`, unescapeMount(`/odd\0`))
}

// TestMeasureJournalCost times what the journal adds to a filesystem's writers: a copy of
// a tree with `cp -a` (creations, then owner, mode, times) with no journal, then with one
// marking the filesystem, alternated twice. Skipped unless REPLCTL_MEASURE is set; the tree
// is REPLCTL_MEASURE_TREE (e.g. the bench's dataset B), else 100,000 files made here:
//
//	REPLCTL_MEASURE=1 REPLCTL_MEASURE_TREE=/tmp/replctl-bench/data/b go test ./internal/fsjournal -run TestMeasureJournalCost -v
func TestMeasureJournalCost(t *testing.T) {
	if os.Getenv("REPLCTL_MEASURE") == "" {
		t.Skip("set REPLCTL_MEASURE=1 to run")
	}
	base := t.TempDir()
	src := os.Getenv("REPLCTL_MEASURE_TREE")
	if src == "" {
		src = filepath.Join(base, "src")
		for d := range 100 {
			for f := range 1000 {
				tree(t, src, fmt.Sprintf("d%03d/f%04d", d, f))
			}
		}
	}
	cp := func(name string) time.Duration {
		t0 := time.Now()
		out, err := exec.Command("cp", "-a", src, filepath.Join(base, name)).CombinedOutput()
		require.NoError(t, err, string(out))
		unix.Sync()
		return time.Since(t0)
	}
	for i := range 2 {
		off := cp(fmt.Sprintf("off%d", i))
		j := open(t)
		_, err := j.Begin(base)
		require.NoError(t, err)
		var before, after unix.Rusage
		require.NoError(t, unix.Getrusage(unix.RUSAGE_SELF, &before))
		on := cp(fmt.Sprintf("on%d", i))
		p, err := j.Begin(base)
		require.NoError(t, err)
		require.NoError(t, unix.Getrusage(unix.RUSAGE_SELF, &after))
		j.Close()
		t.Logf("cp -a of %s: %v without a journal, %v with one (%d events read; the journal's CPU %v)",
			src, off.Round(time.Millisecond), on.Round(time.Millisecond), p.seq,
			time.Duration(after.Utime.Nano()+after.Stime.Nano()-before.Utime.Nano()-before.Stime.Nano()).Round(time.Millisecond))
	}
}

// With Options.Writes a data write names its directory: write(2), truncate(2) and a write
// of a file opened through a hard link in another directory (which names that other
// directory only). A write through a shared mapping is reported only once the mapping is
// gone and the file closed: the price of following the journal for contents, which the
// agent's `--change-journal=push` says.
func TestJournalWrites(t *testing.T) {
	j, err := Open(Options{Writes: true})
	if errors.Is(err, unix.EPERM) {
		t.Skip("fanotify needs CAP_SYS_ADMIN")
	}
	require.NoError(t, err)
	t.Cleanup(j.Close)
	base := t.TempDir()
	root := filepath.Join(base, "ds")
	tree(t, root, "w/f", "t/f", "m/f", "l/f", "quiet/f")
	tree(t, base, "outside/x")
	require.NoError(t, os.Link(filepath.Join(root, "l/f"), filepath.Join(base, "outside/l")))
	require.NoError(t, os.WriteFile(filepath.Join(root, "m/f"), make([]byte, 4096), 0o644))

	p, err := j.Begin(root)
	require.NoError(t, err)
	f, err := os.OpenFile(filepath.Join(root, "w/f"), os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte("data"), 0)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.NoError(t, os.Truncate(filepath.Join(root, "t/f"), 1))
	require.NoError(t, os.WriteFile(filepath.Join(base, "outside/l"), []byte("through the outside link"), 0o644))

	mf, err := os.OpenFile(filepath.Join(root, "m/f"), os.O_RDWR, 0)
	require.NoError(t, err)
	mem, err := unix.Mmap(int(mf.Fd()), 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	require.NoError(t, err)
	copy(mem, "written through mmap")
	require.NoError(t, unix.Msync(mem, unix.MS_SYNC))

	ch, err := j.Since(p)
	require.NoError(t, err)
	require.Equal(t, []string{"t", "w"}, ch.Dirs, "write and truncate; not the write through a mapping still held, nor the one through a link outside")
	require.NoError(t, unix.Munmap(mem))
	require.NoError(t, mf.Close())
	ch, err = j.Since(p)
	require.NoError(t, err)
	require.Equal(t, []string{"m", "t", "w"}, ch.Dirs, "the mapped file is closed")

	q, err := Open(Options{})
	require.NoError(t, err)
	t.Cleanup(q.Close)
	p2, err := q.Begin(root)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(root, "quiet/f"), []byte("unrecorded"), 0o644))
	ch, err = q.Since(p2)
	require.NoError(t, err)
	require.Empty(t, ch.Dirs, "without Writes a data write is not a change")
}

// The journal keeps the events of the trees it was asked about, not those of the rest of
// the filesystem (another writer's thousands of names), and a directory moved in from
// outside is followed from then on.
func TestJournalKeepsOnlyItsTrees(t *testing.T) {
	j := open(t)
	base := t.TempDir()
	root := filepath.Join(base, "ds")
	tree(t, root, "a/f")
	tree(t, base, "other/sub/f")
	p, err := j.Begin(root)
	require.NoError(t, err)
	for i := range 500 {
		tree(t, base, fmt.Sprintf("other/sub/g%03d", i))
	}
	tree(t, root, "a/g")
	ch, err := j.Since(p)
	require.NoError(t, err)
	require.Equal(t, []string{"a"}, ch.Dirs)
	j.mu.Lock()
	dirs, names := len(j.dirs), j.nnames
	j.mu.Unlock()
	require.Equal(t, 1, dirs, "only a is kept")
	require.Equal(t, 1, names)

	require.NoError(t, os.Rename(filepath.Join(base, "other/sub"), filepath.Join(root, "sub")))
	ch, err = j.Since(p)
	require.NoError(t, err)
	require.Equal(t, []string{"sub"}, ch.Trees, "moved in: a new tree")
	q, err := j.Begin(root)
	require.NoError(t, err)
	tree(t, root, "sub/made-in")
	ch, err = j.Since(q)
	require.NoError(t, err)
	require.Equal(t, []string{"sub"}, ch.Dirs, "a directory that was outside is followed once inside")
	require.Equal(t, []string{"made-in"}, ch.Names["sub"])
}
