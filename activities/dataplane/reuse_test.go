package dataplane

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/kopia/kopia/snapshot"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// reuseTree makes a source whose every directory has mtime baseTime: a (changed by the
// tests), b/sub, c with an xattr below it and a FIFO deep in it, h with two links of one
// file, and d.
func reuseTree(t *testing.T, src string) {
	t.Helper()
	for _, f := range []string{"a/x", "a/k", "b/y", "b/sub/z", "c/w", "c/deep/v", "h/1", "d/e"} {
		writeFile(t, filepath.Join(src, f), []byte("content of "+f), 0o644, baseTime)
	}
	require.NoError(t, os.Link(filepath.Join(src, "h/1"), filepath.Join(src, "h/2")))
	require.NoError(t, unix.Lsetxattr(filepath.Join(src, "c/w"), "user.k", []byte("kept"), 0))
	require.NoError(t, unix.Lsetxattr(filepath.Join(src, "c/deep"), "user.d", []byte("dir"), 0))
	require.NoError(t, unix.Mkfifo(filepath.Join(src, "c/deep/fifo"), 0o640))
	setTimesDeepestFirst(t, src, baseTime)
}

// listedBy records the source directories a push lists.
func listedBy(e *env) func() []string { return recorder(&e.repos.hooks.afterSourceList) }

// openedBy records the source files a push opens.
func openedBy(e *env) func() []string { return recorder(&e.repos.hooks.beforeSourceOpen) }

// recorder sets hook to record the paths it is called with; the function it returns gives
// them sorted and forgets them.
func recorder(hook *func(rel string)) func() []string {
	var mu sync.Mutex
	var got []string
	*hook = func(rel string) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, rel)
	}
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		out := append([]string(nil), got...)
		got = nil
		sort.Strings(out)
		return out
	}
}

func (e *env) pushChanged(ch *ChangedSince) PushResult {
	e.t.Helper()
	res, err := e.repos.Push(context.Background(), PushRequest{
		Repo: e.cfg, Job: e.job, SourceDir: e.src, Dataset: e.ds,
		Tags: map[string]string{"run": "r1", "agent": "a1"}, Changed: ch,
	}, nil)
	require.NoError(e.t, err)
	return res
}

// A push told what changed lists only that (and what it must: the root, the ancestors, the
// directory of hard-linked files) and makes the image a whole push makes: the same root
// object, the same extras (those below reused directories come from the previous record),
// a reused directory's own new mode. The pull of it verifies.
func TestPushReusesUnchangedDirectories(t *testing.T) {
	e := newEnv(t)
	reuseTree(t, e.src)
	listed := listedBy(e)
	first := e.push()
	require.Len(t, listed(), 8)

	writeFile(t, filepath.Join(e.src, "a/x"), []byte("new content of a/x, longer"), 0o644, baseTime.Add(1e9))
	require.NoError(t, os.Chmod(filepath.Join(e.src, "d"), 0o700))
	setTimesDeepestFirst(t, e.src, baseTime)

	got := e.pushChanged(&ChangedSince{Image: first.ImageID, Dirs: []string{"a"}})
	require.Equal(t, []string{".", "a", "h"}, listed(), "only the root, the changed dir and the linked files' dir are listed")
	require.Equal(t, 3, got.ReusedDirs, "b, c and d are reused")

	whole := e.push()
	require.Len(t, listed(), 8)
	require.Equal(t, whole.RootID, got.RootID, "the reusing push's image is the whole push's")
	require.Equal(t, loadExtrasOf(t, e, whole.ImageID), loadExtrasOf(t, e, got.ImageID))
	require.Len(t, loadExtrasOf(t, e, got.ImageID).Entries, 3, "c/w, c/deep and its FIFO")

	e.pull(got.ImageID, "r2")
	fi, err := os.Stat(filepath.Join(e.replicaDir(), "d"))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o700), fi.Mode().Perm())
	b, err := os.ReadFile(filepath.Join(e.replicaDir(), "a/x"))
	require.NoError(t, err)
	require.Equal(t, "new content of a/x, longer", string(b))
}

// What the journal did not report reaches the image where the push can tell: another
// image than the journal's, a directory whose mtime moved, a new tree that reuses an old
// name, a file linked into a reused directory. Where it cannot (a write in place, the
// opt-in's price), the reused directory keeps the previous content.
func TestPushReuseFallsBackWhereItCannotTell(t *testing.T) {
	e := newEnv(t)
	reuseTree(t, e.src)
	listed := listedBy(e)
	first := e.push()
	listed()

	t.Run("an image not the newest", func(t *testing.T) {
		e.pushChanged(&ChangedSince{Image: "not-an-image", Dirs: []string{"a"}})
		require.Len(t, listed(), 8)
		e.pushChanged(&ChangedSince{Image: first.ImageID, Dirs: []string{"a"}})
		require.Len(t, listed(), 8, "another push made an image since")
	})

	t.Run("a directory's mtime moved", func(t *testing.T) {
		before := e.push()
		listed()
		writeFile(t, filepath.Join(e.src, "b/new"), []byte("new"), 0o644, baseTime)
		got := e.pushChanged(&ChangedSince{Image: before.ImageID, Dirs: []string{"a"}})
		require.Equal(t, []string{".", "a", "b", "h"}, listed())
		requireInImage(t, e, got.ImageID, "b/new")
		require.NoError(t, os.Remove(filepath.Join(e.src, "b/new")))
		setTimesDeepestFirst(t, e.src, baseTime)
	})

	t.Run("a new tree with an old name", func(t *testing.T) {
		before := e.push()
		listed()
		require.NoError(t, os.RemoveAll(filepath.Join(e.src, "c")))
		writeFile(t, filepath.Join(e.src, "c/w"), []byte("new w"), 0o644, baseTime)
		writeFile(t, filepath.Join(e.src, "c/deep/v"), []byte("new v"), 0o644, baseTime)
		setTimesDeepestFirst(t, e.src, baseTime)
		got := e.pushChanged(&ChangedSince{Image: before.ImageID, Dirs: []string{"."}, Trees: []string{"c"}})
		require.Equal(t, []string{".", "c", "c/deep", "h"}, listed())
		whole := e.push()
		listed()
		require.Equal(t, whole.RootID, got.RootID)
	})

	t.Run("a file linked into a reused directory", func(t *testing.T) {
		before := e.push()
		listed()
		require.NoError(t, os.Link(filepath.Join(e.src, "b/y"), filepath.Join(e.src, "a/y2")))
		setTimesDeepestFirst(t, e.src, baseTime)
		got := e.pushChanged(&ChangedSince{Image: before.ImageID, Dirs: []string{"a"}})
		all := listed()
		require.Contains(t, all, "b", "the push listed again, whole")
		require.Contains(t, loadExtrasOf(t, e, got.ImageID).Links, []string{"a/y2", "b/y"})
		require.NoError(t, os.Remove(filepath.Join(e.src, "a/y2")))
		setTimesDeepestFirst(t, e.src, baseTime)
	})

	t.Run("a write the journal did not report", func(t *testing.T) {
		before := e.push()
		listed()
		writeFile(t, filepath.Join(e.src, "d/e"), []byte("written in place, unreported"), 0o644, baseTime.Add(2e9))
		setTimesDeepestFirst(t, e.src, baseTime)
		got := e.pushChanged(&ChangedSince{Image: before.ImageID, Dirs: []string{"a"}})
		require.NotContains(t, listed(), "d")
		require.Equal(t, before.RootID, got.RootID, "the reused directory keeps what the previous image held")
	})
}

// A directory whose changed entries the journal names is not listed: only those are
// stat'ed, and its other entries, their extras and its FIFO come from the previous image.
// The image is the whole push's; an entry written without a report keeps its previous
// content (which shows that it was not looked at); a name that could be an image name
// makes the push list the directory whole.
func TestPushStatsOnlyTheNamedEntries(t *testing.T) {
	e := newEnv(t)
	reuseTree(t, e.src)
	listedBy(e)
	before := e.push()

	writeFile(t, filepath.Join(e.src, "a/x"), []byte("a/x again, longer"), 0o644, baseTime.Add(3e9))
	writeFile(t, filepath.Join(e.src, "c/deep/new"), []byte("new"), 0o600, baseTime)
	require.NoError(t, os.Remove(filepath.Join(e.src, "c/deep/v")))
	require.NoError(t, unix.Lsetxattr(filepath.Join(e.src, "b/y"), "user.y", []byte("set"), 0))
	setTimesDeepestFirst(t, e.src, baseTime)
	got := e.pushChanged(&ChangedSince{Image: before.ImageID, Dirs: []string{"a", "b", "c/deep"},
		Names: map[string][]string{"a": {"x"}, "b": {"y"}, "c/deep": {"new", "v"}}})
	require.Equal(t, 3, got.PartialDirs, "a, b and c/deep")
	whole := e.push()
	require.Equal(t, whole.RootID, got.RootID, "the same image as a whole push")
	require.Equal(t, loadExtrasOf(t, e, whole.ImageID), loadExtrasOf(t, e, got.ImageID), "c/deep's FIFO and xattr kept, b/y's new one read")

	before = whole
	writeFile(t, filepath.Join(e.src, "a/k"), []byte("a/k written, unreported"), 0o644, baseTime.Add(4e9))
	writeFile(t, filepath.Join(e.src, "a/x"), []byte("a/x once more"), 0o644, baseTime.Add(5e9))
	setTimesDeepestFirst(t, e.src, baseTime)
	got = e.pushChanged(&ChangedSince{Image: before.ImageID, Dirs: []string{"a"}, Names: map[string][]string{"a": {"x"}}})
	require.Equal(t, 1, got.PartialDirs)
	whole = e.push()
	require.NotEqual(t, whole.RootID, got.RootID, "a/k was not looked at")

	before = whole
	got = e.pushChanged(&ChangedSince{Image: before.ImageID, Dirs: []string{"a"}, Names: map[string][]string{"a": {"x"}}})
	require.Zero(t, got.PartialDirs, "a name that could be an image name: listed whole")
	require.Equal(t, before.RootID, got.RootID)

	// A subdirectory of a directory listed in part is stat'ed all the same: its mtime moved
	// (a name the journal did not report), so it is listed.
	before = e.push()
	writeFile(t, filepath.Join(e.src, "b/sub/unreported"), []byte("new"), 0o644, baseTime)
	writeFile(t, filepath.Join(e.src, "b/y"), []byte("b/y again"), 0o644, baseTime.Add(6e9))
	got = e.pushChanged(&ChangedSince{Image: before.ImageID, Dirs: []string{"b"}, Names: map[string][]string{"b": {"y"}}})
	require.Equal(t, 1, got.PartialDirs, "b")
	requireInImage(t, e, got.ImageID, "b/sub/unreported")
	require.Equal(t, e.push().RootID, got.RootID)
}

// Bad paths from the journal are refused before anything is read.
func TestPushChangedRefusesBadPaths(t *testing.T) {
	e := newEnv(t)
	reuseTree(t, e.src)
	for _, ch := range []*ChangedSince{
		{Image: "", Dirs: []string{"a"}},
		{Image: "x", Dirs: []string{"../a"}},
		{Image: "x", Dirs: []string{"/etc"}},
		{Image: "x", Trees: []string{"a/../b"}},
		{Image: "x", Trees: []string{""}},
		{Image: "x", Names: map[string][]string{"../a": {"x"}}},
		{Image: "x", Names: map[string][]string{"a": {"x/y"}}},
		{Image: "x", Names: map[string][]string{"a": {".."}}},
	} {
		_, err := e.repos.Push(context.Background(), PushRequest{Repo: e.cfg, Job: e.job, SourceDir: e.src, Dataset: e.ds, Changed: ch}, nil)
		require.ErrorIs(t, err, ErrBadInput, "%+v", ch)
	}
}

// requireInImage fails unless the image holds the entry rel.
func requireInImage(t *testing.T, e *env, image, rel string) {
	t.Helper()
	ctx := context.Background()
	rep, man := e.image(image)
	dir := man.RootEntry
	for _, name := range strings.Split(rel, "/") {
		ents, err := readImageDir(ctx, rep, dir.ObjectID)
		require.NoError(t, err)
		i := slices.IndexFunc(ents, func(c *snapshot.DirEntry) bool { return c.Name == name })
		require.GreaterOrEqual(t, i, 0, "%s is not in image %s", rel, image)
		dir = ents[i]
	}
}
