package dataplane

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/kopia/kopia/snapshot"
	"github.com/stretchr/testify/require"
)

func (e *env) precopy(first bool) PushResult {
	e.t.Helper()

	res, err := e.repos.Push(context.Background(), PushRequest{
		Repo: e.cfg, Job: e.job, SourceDir: e.src, Dataset: e.ds, Precopy: true, PrecopyFirst: first,
	}, nil)
	require.NoError(e.t, err)

	return res
}

// repoBytes is the size of every blob in the repository.
func repoBytes(t *testing.T, dir string) int64 {
	t.Helper()

	var n int64

	require.NoError(t, filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}

		st, err := d.Info()
		if err == nil {
			n += st.Size()
		}

		return err
	}))

	return n
}

// manifests counts the snapshot manifests of a source.
func (e *env) manifests(si snapshot.SourceInfo) int {
	e.t.Helper()

	rep, err := e.repos.open(context.Background(), e.cfg, false)
	require.NoError(e.t, err)

	ids, err := snapshot.ListSnapshotManifests(context.Background(), rep, &si, nil)
	require.NoError(e.t, err)

	return len(ids)
}

// A precopy stores the live source's new content but makes no image; the push that follows
// stores no file content again, takes what changed after the precopy, and the replica is
// exact.
func TestPrecopyStoresContentNotImages(t *testing.T) {
	e := newEnv(t)
	makeTree(t, e.src)
	time.Sleep(racyMargin) // files changed within it are read again by a precopy

	// No image yet: the first copy is made ahead of the freeze too, and keeps a view.
	require.False(t, e.precopy(false).Skipped)
	require.Equal(t, 0, e.manifests(sourceInfo(e.job, e.ds)))
	require.Equal(t, 1, e.manifests(precopySourceInfo(e.job, e.ds)), "the precopy's view")

	p1 := e.push()
	require.Equal(t, 0, e.manifests(precopySourceInfo(e.job, e.ds)), "the image took the view's place")
	e.pull(p1.ImageID, "r1")

	big := randBytes(t, 8<<20)
	writeFile(t, filepath.Join(e.src, "new-big.bin"), big, 0o644, baseTime)
	writeFile(t, filepath.Join(e.src, "top.txt"), []byte("written before the precopy\n"), 0o644, baseTime.Add(time.Hour))

	// auto: a tree this small is pushed as fast as a precopy does its bookkeeping.
	require.True(t, e.precopy(false).Skipped)

	pre := e.precopy(true)
	require.False(t, pre.Skipped)
	require.Empty(t, pre.ImageID, "a precopy makes no image")
	require.Greater(t, pre.Reused, int64(20), "unchanged files are not read by the precopy either")
	require.Equal(t, 1, e.manifests(sourceInfo(e.job, e.ds)), "images: only the first push's")
	require.Equal(t, 0, e.manifests(precopySourceInfo(e.job, e.ds)), "the precopy's checkpoints are gone; beside an image it keeps no view")

	// Written after the precopy, while the application still ran: the push must take it.
	writeFile(t, filepath.Join(e.src, "top.txt"), []byte("written after the precopy\n"), 0o644, baseTime.Add(2*time.Hour))

	before := repoBytes(t, e.cfg.Dir)
	p2 := e.push()
	grown := repoBytes(t, e.cfg.Dir) - before
	require.Less(t, grown, int64(1<<20), "the push stored %d bytes: the 8 MiB file's content was stored by the precopy", grown)

	r2 := e.pull(p2.ImageID, "r2")
	requireSameTree(t, e.src, r2.ReplicaPath)
	require.Equal(t, "written after the precopy\n", string(must(os.ReadFile(filepath.Join(r2.ReplicaPath, "top.txt")))))

	// precopy: always copies on the first run too.
	e2 := newEnv(t)
	makeTree(t, e2.src)
	first := e2.precopy(true)
	require.False(t, first.Skipped)
	require.Positive(t, first.Files)
	before = repoBytes(t, e2.cfg.Dir)
	p := e2.push()
	require.Less(t, repoBytes(t, e2.cfg.Dir)-before, int64(1<<20))
	requireSameTree(t, e2.src, e2.pull(p.ImageID, "r1").ReplicaPath)
}

// TestPrecopyFollowsWhatThePushRead: a precopy (config auto) runs only when the newest
// image's push read at least PrecopyReadPerEntry bytes per entry: after a push that read
// the whole tree it runs, after one that read nothing it is skipped (its walk would cost
// more than it saves); precopy: always still runs.
func TestPrecopyFollowsWhatThePushRead(t *testing.T) {
	e := newEnv(t)
	makeManyFiles(t, e.src, PrecopyMinFiles, 2*PrecopyReadPerEntry)
	time.Sleep(racyMargin) // files changed within it are read again by a precopy
	first := e.push()
	require.Equal(t, int64(PrecopyMinFiles)*2*PrecopyReadPerEntry, readOf(t, e, first.ImageID), "the first push read every byte")
	require.False(t, e.precopy(false).Skipped)

	again := e.push()
	require.Zero(t, readOf(t, e, again.ImageID), "nothing changed: nothing read")
	require.True(t, e.precopy(false).Skipped)
	require.False(t, e.precopy(true).Skipped, "precopy: always")
}

// readOf is the image's "read" tag.
func readOf(t *testing.T, e *env, image string) int64 {
	t.Helper()
	rep, err := e.repos.open(context.Background(), e.cfg, false)
	require.NoError(t, err)
	man, err := loadImage(context.Background(), rep, image, e.job, e.ds)
	require.NoError(t, err)
	n, err := strconv.ParseInt(man.Tags[readTag], 10, 64)
	require.NoError(t, err, "tag %q", man.Tags[readTag])
	return n
}

// The quiesced push takes from the precopy's view every file the precopy read that has not
// changed since, and reads the rest: a file changed after the precopy, and a racy one (changed
// within racyMargin of the precopy's start) even when a write left its size and mtime as the
// view has them, as a second write within one timestamp tick does. The view is gone once the
// image is saved, and the image's read tag counts the precopy's reads.
func TestPrecopyViewSparesTheFreeze(t *testing.T) {
	e := newEnv(t)
	makeTree(t, e.src)
	time.Sleep(racyMargin)
	// Written just before the precopy: racy. Its mtime is set back to an old time, as a
	// copy tool would, so only its ctime tells.
	hot := filepath.Join(e.src, "hot.txt")
	writeFile(t, hot, []byte("hot: the precopy\n"), 0o644, baseTime)

	pre := e.precopy(false)
	require.False(t, pre.Skipped, "the first copy is made ahead of the freeze")
	rep, err := e.repos.open(context.Background(), e.cfg, false)
	require.NoError(t, err)
	views, err := precopyViews(context.Background(), rep, PushRequest{Job: e.job, Dataset: e.ds, SourceDir: e.src})
	require.NoError(t, err)
	require.Len(t, views, 1)
	preRead := viewRead(views)
	require.GreaterOrEqual(t, preRead, pre.Bytes, "the first copy's precopy read every file")

	// After the precopy, while the application still runs: the same size and mtime for the
	// racy file, a new mtime for another.
	writeFile(t, hot, []byte("hot: the freeze!\n"), 0o644, baseTime)
	writeFile(t, filepath.Join(e.src, "a", "b", "sibling.txt"), []byte("SIB"), 0o644, baseTime.Add(time.Hour))

	opened := openedBy(e)
	p := e.push()
	e.repos.hooks.beforeSourceOpen = nil
	require.Equal(t, []string{"a/b/sibling.txt", "hot.txt"}, opened(), "the freeze reads what changed since the precopy, and the racy file")
	require.Equal(t, 0, e.manifests(precopySourceInfo(e.job, e.ds)), "the image took the view's place")

	r := e.pull(p.ImageID, "r1")
	requireSameTree(t, e.src, r.ReplicaPath)
	require.Equal(t, "hot: the freeze!\n", string(must(os.ReadFile(filepath.Join(r.ReplicaPath, "hot.txt")))))
	require.Equal(t, "SIB", string(must(os.ReadFile(filepath.Join(r.ReplicaPath, "a", "b", "sibling.txt")))))

	require.Equal(t, preRead+int64(len("hot: the freeze!\n")+len("SIB")), readOf(t, e, p.ImageID),
		"the run read what the precopy read and what the freeze read")
}

// A filesystem that stamps times from another clock keeps no view: procfs stands for one here.
func TestPrecopyViewNeedsLocalTimes(t *testing.T) {
	require.True(t, localTimes(-1, t.TempDir()), "the test's temp dir is on a local filesystem")
	require.False(t, localTimes(-1, "/proc"))
	require.False(t, localTimes(-1, "/nonexistent"))
}
