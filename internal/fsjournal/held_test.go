package fsjournal

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/replctl/replctl/internal/testworld"
)

// HeldForWrite finds the files mapped shared and writable or open for writing, in this
// process and in another, by their names here (also one the mappings list escapes, and
// one whose directory moved), and leaves out files open for reading, private mappings and
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
	tree(t, dir, "rw", "mapped", "ro", "private", "child", "deleted", "old/moved", "line\nbreak", "linked", "unheld")
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
	require.Equal(t, map[string]uint32{"rw": 1, "mapped": 1, "line\nbreak": 1, "new/moved": 1, "child": 1, "linked": 2}, got)

	// The same, relative to the tree, as the journal names it.
	_, rels, outside, err := HeldIn(dir)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"rw", "mapped", "line\nbreak", "new/moved", "child", "linked"}, rels)
	require.Empty(t, outside, "the other name of linked is inside the tree")

	// Nothing of another filesystem.
	require.NoError(t, unix.Stat("/proc/self", &st))
	for _, f := range HeldForWrite(st.Dev).Files {
		require.NotContains(t, f.Path, dir)
	}
}
