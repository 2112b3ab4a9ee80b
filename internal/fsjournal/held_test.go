package fsjournal

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/replctl/replctl/internal/testworld"
)

// HeldForWrite finds the files mapped shared and writable or open for writing, in this
// process and in another, by their names here (also one the mappings list escapes, and
// one whose directory moved, and one open in a thread with a file table of its own), and
// leaves out files open for reading, private mappings and
// deleted files.
func TestHeldForWrite(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("reading every process's mappings needs root")
	}
	// A filesystem of its own: its held files are no other test's (another package's journal
	// test looks at the files held for writing on its own source's filesystem).
	dir := filepath.Join(t.TempDir(), "fs")
	unmount, err := testworld.MountTmpfs(dir, 16<<20)
	require.NoError(t, err)
	t.Cleanup(unmount)
	tree(t, dir, "rw", "mapped", "ro", "private", "child", "deleted", "old/moved", "line\nbreak", "linked", "unheld", "thread")
	require.NoError(t, os.Link(filepath.Join(dir, "linked"), filepath.Join(dir, "link2")))
	var st unix.Stat_t
	require.NoError(t, unix.Stat(dir, &st))

	open := func(name string, flag int) *os.File {
		f, err := os.OpenFile(filepath.Join(dir, name), flag, 0)
		require.NoError(t, err)
		t.Cleanup(func() { f.Close() }) //nolint:errcheck
		return f
	}
	// mapOnly maps name, then closes it: only the mapping holds the file.
	mapOnly := func(name string, flags int) {
		f := open(name, os.O_RDWR)
		mem, err := unix.Mmap(int(f.Fd()), 0, 2, unix.PROT_READ|unix.PROT_WRITE, flags)
		require.NoError(t, err)
		t.Cleanup(func() { unix.Munmap(mem) }) //nolint:errcheck
		require.NoError(t, f.Close())
	}

	open("rw", os.O_RDWR)
	mapOnly("mapped", unix.MAP_SHARED)
	open("ro", os.O_RDONLY)
	mapOnly("private", unix.MAP_PRIVATE)
	mapOnly("line\nbreak", unix.MAP_SHARED)
	open("old/moved", os.O_WRONLY)
	require.NoError(t, os.Rename(filepath.Join(dir, "old"), filepath.Join(dir, "new")))
	open("deleted", os.O_RDWR)
	require.NoError(t, os.Remove(filepath.Join(dir, "deleted")))
	open("linked", os.O_WRONLY|os.O_APPEND)

	// Another process holds "child" open for writing; this one no longer does.
	f := open("child", os.O_WRONLY)
	cmd := exec.Command("sleep", "60")
	cmd.ExtraFiles = []*os.File{f}
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() }) //nolint:errcheck
	require.NoError(t, f.Close())

	// A thread with a file table of its own holds "thread" open for writing: the process's
	// fd directory (its leader's table) does not list it.
	held, release := make(chan error), make(chan struct{})
	go holdInOwnTable(filepath.Join(dir, "thread"), held, release)
	require.NoError(t, <-held)
	t.Cleanup(func() { close(release) })

	h := HeldForWrite(st.Dev)
	require.Empty(t, h.Unknown)
	for _, p := range h.Unseen {
		require.NotContains(t, p, strconv.Itoa(os.Getpid())+" ", "this process and its child are examined")
		require.NotContains(t, p, strconv.Itoa(cmd.Process.Pid)+" ")
	}
	got := map[string]uint32{}
	for _, f := range h.Files {
		if rel, err := filepath.Rel(dir, f.Path); err == nil && filepath.IsLocal(rel) {
			got[rel] = f.Links
		}
	}
	require.Equal(t, map[string]uint32{"rw": 1, "mapped": 1, "line\nbreak": 1, "new/moved": 1, "child": 1, "linked": 2, "thread": 1}, got)

	// The same, relative to the tree, as the journal names it.
	_, rels, outside, err := HeldIn(dir)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"rw", "mapped", "line\nbreak", "new/moved", "child", "linked", "thread"}, rels)
	require.Empty(t, outside, "the other name of linked is inside the tree")

	// Nothing of another filesystem.
	require.NoError(t, unix.Stat("/proc/self", &st))
	for _, f := range HeldForWrite(st.Dev).Files {
		require.NotContains(t, f.Path, dir)
	}
}

// holdInOwnTable opens path for writing on a thread that unshared its file table, tells
// held, and keeps it open until release is closed. The thread group leader keeps the
// process's table (/proc/self/fd reads the leader's): landed on it, it stays busy and
// another thread unshares.
func holdInOwnTable(path string, held chan<- error, release <-chan struct{}) {
	runtime.LockOSThread()
	if unix.Gettid() == unix.Getpid() {
		go holdInOwnTable(path, held, release)
		<-release
		runtime.UnlockOSThread()
		return
	}
	// Never unlocked: the thread, and its table, end with this goroutine.
	if err := unix.Unshare(unix.CLONE_FILES); err != nil {
		held <- err
		return
	}
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	held <- err
	<-release
	if err == nil {
		unix.Close(fd) //nolint:errcheck
	}
}

// What one look costs on this host: every process's mappings and descriptors, and a kcmp
// per thread (go test -bench HeldForWrite ./internal/fsjournal).
func BenchmarkHeldForWrite(b *testing.B) {
	var st unix.Stat_t
	if err := unix.Stat(b.TempDir(), &st); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if h := HeldForWrite(st.Dev); h.Unknown != "" {
			b.Fatal(h.Unknown)
		}
	}
}
