package dataplane

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// pullKeep pulls image as replica name keeping the newest two replicas.
func (e *env) pullKeep(image, name string) PullResult {
	e.t.Helper()

	req := e.pullReq(image, name)
	req.Keep.Last = 2

	res, err := e.repos.Pull(context.Background(), req, nil)
	require.NoError(e.t, err)

	return res
}

// The replica retention retires is brought up to date as the new one: every change of the
// source reaches it (a file turned into a directory and back, deletions, a changed symlink
// and mode), what was done to the retired tree after its publish (a rewritten file, an
// added entry and xattr, a symlink out of the target in place of a directory) is undone,
// nothing is trusted but the current replica's inodes, and the current replica's trust
// record still holds after the unlinks, so the next pull links everything. Both ways of
// telling a kept file: the staged dir's listing (recycle_ino.go) and a stat of each.
func TestPullRecyclesRetiredReplica(t *testing.T) {
	for _, stat := range []bool{false, true} {
		t.Run(fmt.Sprintf("stat=%v", stat), func(t *testing.T) { pullRecyclesRetired(t, stat) })
	}
}

func pullRecyclesRetired(t *testing.T, stat bool) {
	e := newEnv(t)
	e.repos.hooks.noClone = true // recycle on any filesystem (a cloning one would not)
	e.repos.hooks.noListedInos = stat
	makeTree(t, e.src)

	r1 := e.pullKeep(e.push().ImageID, "r1")
	require.Empty(t, r1.Recycled, "nothing to retire yet")

	writeFile(t, filepath.Join(e.src, "top.txt"), []byte("changed once\n"), 0o644, baseTime.Add(time.Hour))
	setTimesDeepestFirst(t, e.src, baseTime.Add(-time.Hour))
	r2 := e.pullKeep(e.push().ImageID, "r2")
	require.Empty(t, r2.Recycled, "keep 2: r1 stays")
	require.NotZero(t, r2.Linked)

	// What happened to r1 on the target since it was published.
	rep1 := r1.ReplicaPath
	tampered := filepath.Join(rep1, "top.txt") // r1's own inode (changed in image 2)
	st, err := os.Lstat(tampered)
	require.NoError(t, err)
	require.NoError(t, os.Chmod(tampered, 0o644))
	require.NoError(t, os.WriteFile(tampered, []byte("HELLO\n"), 0o644))
	require.NoError(t, os.Chtimes(tampered, st.ModTime(), st.ModTime()))
	writeFile(t, filepath.Join(rep1, "a", "intruder"), []byte("not in any image"), 0o644, baseTime)
	require.NoError(t, unix.Lsetxattr(filepath.Join(rep1, "a"), "user.intruder", []byte("x"), 0))
	outside := t.TempDir()
	writeFile(t, filepath.Join(outside, "f00.txt"), []byte("outside the target"), 0o644, baseTime)
	// Moved away whole: removing its files would change the ctime of r2's inodes.
	require.NoError(t, os.Rename(filepath.Join(rep1, "many"), filepath.Join(outside, "many-of-r1")))
	require.NoError(t, os.Symlink(outside, filepath.Join(rep1, "many")))
	require.NoError(t, os.Chmod(filepath.Join(rep1, "bin"), 0o500)) // not writable as is

	// Image 3: top.txt back to image 1's bytes and time (r1's tampered inode matches it by
	// metadata), a file becomes a directory, a directory becomes a file, a deletion, a
	// changed symlink, a chmod, a new file.
	writeFile(t, filepath.Join(e.src, "top.txt"), []byte("hello\n"), 0o644, baseTime)
	require.NoError(t, os.Remove(filepath.Join(e.src, "empty")))
	writeFile(t, filepath.Join(e.src, "empty", "now-a-dir.txt"), []byte("x"), 0o644, baseTime)
	require.NoError(t, os.RemoveAll(filepath.Join(e.src, "a", "b", "c")))
	writeFile(t, filepath.Join(e.src, "a", "b", "c"), []byte("now a file"), 0o644, baseTime)
	require.NoError(t, os.Remove(filepath.Join(e.src, "owned.txt")))
	require.NoError(t, os.Remove(filepath.Join(e.src, "link-rel")))
	require.NoError(t, os.Symlink("top.txt", filepath.Join(e.src, "link-rel")))
	require.NoError(t, os.Chmod(filepath.Join(e.src, "many", "f03.txt"), 0o600))
	writeFile(t, filepath.Join(e.src, "bin", "new.sh"), []byte("#!/bin/sh\n"), 0o755, baseTime)
	setTimesDeepestFirst(t, e.src, baseTime.Add(-time.Hour))

	before2 := walkTree(t, r2.ReplicaPath)
	img3 := e.push().ImageID
	r3 := e.pullKeep(img3, "r3")
	require.Equal(t, "r1", r3.Recycled)
	require.True(t, r3.Verified)
	requireSameTree(t, e.src, e.replicaDir())
	require.NoDirExists(t, rep1, "r1's tree became r3")
	require.Equal(t, before2, walkTree(t, r2.ReplicaPath), "r2 is untouched")
	require.Equal(t, "outside the target", string(must(os.ReadFile(filepath.Join(outside, "f00.txt")))))
	require.Len(t, must(os.ReadDir(outside)), 2)

	names, err := listXattrs(filepath.Join(r3.ReplicaPath, "a"))
	require.NoError(t, err)
	require.Empty(t, names, "the intruder's xattr is gone")

	// Kept: files that were already r2's inode in r1 (big.bin, many/* were not: r1's many
	// was replaced). Written: top.txt (never r1's tampered inode), the new and changed files.
	require.NotZero(t, r3.Kept)
	require.Equal(t, inode(t, filepath.Join(r2.ReplicaPath, "big.bin")), inode(t, filepath.Join(r3.ReplicaPath, "big.bin")))
	require.NotEqual(t, inode(t, filepath.Join(r2.ReplicaPath, "top.txt")), inode(t, filepath.Join(r3.ReplicaPath, "top.txt")))
	require.Equal(t, "hello\n", string(must(os.ReadFile(filepath.Join(r3.ReplicaPath, "top.txt")))))
	require.Zero(t, r3.Distrusted)
	require.NoError(t, e.repos.VerifyReplica(context.Background(), e.cfg, e.job, e.ds, img3, r3.ReplicaPath, 0))

	reps, err := ListReplicas(e.target, e.ds)
	require.NoError(t, err)
	require.Len(t, reps, 2)
	metas := must(os.ReadDir(newLayout(e.target, e.ds).meta))
	require.Len(t, metas, 4, "a meta and a trust record for r2 and r3 only")

	// r3's record holds what recycling left, r2's was carried over the unlinks: the next
	// pull (recycling r2) distrusts nothing and writes nothing.
	r4 := e.pullKeep(e.push().ImageID, "r4")
	require.Equal(t, "r2", r4.Recycled)
	require.Zero(t, r4.Distrusted)
	require.Zero(t, r4.Restored-2, "only the two symlinks are written")
	requireSameTree(t, e.src, e.replicaDir())
}

// A pull that recycles is cut off by its fence: the next attempt (another epoch) builds from
// what it left, checked by content, and publishes a complete replica.
func TestRecycledPullResumes(t *testing.T) {
	e := newEnv(t)
	e.repos.hooks.noClone = true
	makeManyFiles(t, e.src, 300, 64)

	e.pullKeep(e.push().ImageID, "r1")
	e.pullKeep(e.push().ImageID, "r2")

	makeManyFiles(t, filepath.Join(e.src, "more"), 50, 64)
	img := e.push().ImageID

	req := e.pullReq(img, "r3")
	req.Keep.Last = 2
	res, err := e.repos.Pull(e.cancelAfterRestored(20), req, nil)
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, "r1", res.Recycled)
	require.DirExists(t, res.StagingPath)

	e.repos.hooks.afterFileRestored = nil

	req = e.pullReq(img, "r3")
	req.Keep.Last = 2
	req.ResumeFrom = res.StagingPath
	r3, err := e.repos.Pull(context.Background(), req, nil)
	require.NoError(t, err)
	require.Empty(t, r3.Recycled, "a resumed attempt builds a new tree")
	require.GreaterOrEqual(t, r3.Linked, int64(300), "what the cut-off attempt left is used")
	requireSameTree(t, e.src, e.replicaDir())
}

// The probe that keeps a cloning target from recycling tells XFS with reflink from the
// test's own filesystem, and leaves nothing behind.
func TestProbeClone(t *testing.T) {
	for _, c := range []struct {
		dir   string
		clone bool
	}{{reflinkFS(t), true}, {t.TempDir(), false}} {
		require.NoError(t, os.MkdirAll(c.dir, 0o755))
		fd, err := unix.Open(c.dir, unix.O_PATH|unix.O_DIRECTORY, 0)
		require.NoError(t, err)
		require.Equal(t, c.clone, probeClone(fd), c.dir)
		require.NoError(t, unix.Close(fd))
		require.Empty(t, must(os.ReadDir(c.dir)))
	}
}

// NoRecycle (retention.retire: after_publish): the retired replica stays whole until the new
// one is published, and the new one is built beside it.
func TestPullNoRecycleRetiresAfterPublish(t *testing.T) {
	e := newEnv(t)
	e.repos.hooks.noClone = true
	makeManyFiles(t, e.src, 50, 64)

	r1 := e.pullKeep(e.push().ImageID, "r1")
	e.pullKeep(e.push().ImageID, "r2")
	before1 := walkTree(t, r1.ReplicaPath)

	makeManyFiles(t, filepath.Join(e.src, "more"), 5, 64)
	req := e.pullReq(e.push().ImageID, "r3")
	req.Keep.Last = 2
	req.NoRecycle = true
	seen := false
	e.repos.hooks.beforePublish = func() {
		seen = true
		require.Equal(t, before1, walkTree(t, r1.ReplicaPath), "r1 is whole until the publish")
	}
	r3, err := e.repos.Pull(context.Background(), req, nil)
	require.NoError(t, err)
	require.True(t, seen)
	require.Empty(t, r3.Recycled)
	require.Zero(t, r3.Kept)
	require.NotZero(t, r3.Linked)
	require.NoDirExists(t, r1.ReplicaPath, "retired after the publish")
	requireSameTree(t, e.src, e.replicaDir())
}
