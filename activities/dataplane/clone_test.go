package dataplane

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// reflinkFS mounts a fresh XFS with reflink (a loop device of 300 MiB) for the rest of the
// test and returns a directory on it. It needs root and mkfs.xfs (`make test-deps`).
func reflinkFS(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a loop device needs root")
	}
	if _, err := exec.LookPath("mkfs.xfs"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("mkfs.xfs missing in CI: make test-deps installs xfsprogs")
		}
		t.Skip("mkfs.xfs missing (make test-deps installs xfsprogs)")
	}
	base := t.TempDir()
	img, dir := filepath.Join(base, "xfs.img"), filepath.Join(base, "mnt")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	var out []byte
	fi, err := os.Create(img)
	require.NoError(t, err)
	require.NoError(t, fi.Truncate(300<<20))
	require.NoError(t, fi.Close())
	out, err = exec.Command("mkfs.xfs", "-q", "-f", "-m", "reflink=1", img).CombinedOutput()
	require.NoError(t, err, "mkfs.xfs: %s", out)
	out, err = exec.Command("mount", "-o", "loop", img, dir).CombinedOutput()
	require.NoError(t, err, "mount %s: %s", img, out)
	t.Cleanup(func() {
		WaitTrash()
		_ = exec.Command("umount", dir).Run()
	})
	return filepath.Join(dir, "target")
}

// TestCloneKeepsReplicasIndependent: on a filesystem that clones (XFS with reflink), an
// unchanged file of the next replica is a clone, not a hard link: its own inode with the
// image's metadata and xattrs, holes kept, so a write into the current replica leaves the
// older one as it was; the next pull still writes the damaged file anew.
func TestCloneKeepsReplicasIndependent(t *testing.T) {
	e := newEnv(t)
	e.target = reflinkFS(t)
	require.NoError(t, os.MkdirAll(e.target, 0o755))
	mt := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	writeFile(t, filepath.Join(e.src, "a.txt"), []byte("the image's content\n"), 0o640, mt)
	writeFile(t, filepath.Join(e.src, "b.bin"), randBytes(t, 200<<10), 0o600, mt)
	sparse := filepath.Join(e.src, "sparse")
	f, err := os.Create(sparse)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte("data"), 8<<20)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	require.NoError(t, os.Chtimes(sparse, mt, mt))
	require.NoError(t, unix.Lsetxattr(filepath.Join(e.src, "a.txt"), "user.tag", []byte("v1"), 0))
	img := e.push().ImageID

	first := e.pull(img, "r1")
	require.Zero(t, first.Cloned)
	r1 := e.replicaDir()
	second := e.pull(img, "r2")
	r2 := e.replicaDir()
	require.Equal(t, int64(3), second.Cloned, "every unchanged file is cloned")
	require.Zero(t, second.Linked)
	require.Zero(t, second.Restored)
	for _, n := range []string{"a.txt", "b.bin", "sparse"} {
		require.NotEqual(t, inode(t, filepath.Join(r1, n)), inode(t, filepath.Join(r2, n)), "%s is its own inode", n)
		require.Equal(t, sha(t, filepath.Join(r1, n)), sha(t, filepath.Join(r2, n)))
	}
	v := make([]byte, 16)
	n, err := unix.Lgetxattr(filepath.Join(r2, "a.txt"), "user.tag", v)
	require.NoError(t, err)
	require.Equal(t, "v1", string(v[:n]))
	var st unix.Stat_t
	require.NoError(t, unix.Stat(filepath.Join(r2, "sparse"), &st))
	require.Less(t, st.Blocks*512, int64(1<<20), "the clone keeps the holes")
	d, err := e.repos.CheckReplica(context.Background(), e.cfg, e.job, e.ds, img, r2, 0, 10)
	require.NoError(t, err)
	require.Zero(t, d.Count, "%v", d.First)

	// A write through T/D changes the current replica only.
	damage := filepath.Join(e.link(), "a.txt")
	require.NoError(t, os.WriteFile(damage, []byte("THE IMAGE'S CONTENT\n"), 0o640))
	require.NoError(t, os.Chtimes(damage, mt, mt))
	got, err := os.ReadFile(filepath.Join(r1, "a.txt"))
	require.NoError(t, err)
	require.True(t, bytes.Equal([]byte("the image's content\n"), got), "the older replica kept its copy")

	third := e.pull(img, "r3")
	require.Equal(t, int64(1), third.Distrusted)
	require.Equal(t, int64(1), third.Restored)
	require.Equal(t, int64(2), third.Cloned)
	got, err = os.ReadFile(filepath.Join(e.replicaDir(), "a.txt"))
	require.NoError(t, err)
	require.Equal(t, "the image's content\n", string(got))

	// Keep 3: r1 retires now. A clone is its own inode, so recycling would keep nothing: a
	// target that clones builds a new tree.
	fourth := e.pull(img, "r4")
	require.Empty(t, fourth.Recycled)
	require.Equal(t, int64(3), fourth.Cloned)
}
