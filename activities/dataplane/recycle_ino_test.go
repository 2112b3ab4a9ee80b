package dataplane

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/moby/sys/mountinfo"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// requireRoot skips a test that mounts unless it runs as root (CI does).
func requireRoot(t *testing.T) {
	t.Helper()

	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("CI runs the tests as root: this one mounts")
		}

		t.Skip("mounting needs root")
	}
}

// unmountBeneath detaches every mount beneath dir when the test ends (a mount moves with
// the directory renamed over it, so its path at the end is not known in advance).
func unmountBeneath(t *testing.T, dir string) {
	t.Helper()
	t.Cleanup(func() {
		ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
		require.NoError(t, err)

		for _, m := range ms {
			require.NoError(t, unix.Unmount(m.Mountpoint, unix.MNT_DETACH), m.Mountpoint)
		}
	})
}

// Listed inode numbers are used on the test's filesystem and tmpfs, not on procfs, and
// not once anything is mounted beneath the directory.
func TestListedInos(t *testing.T) {
	open := func(dir string) int {
		fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		require.NoError(t, err)
		t.Cleanup(func() { _ = unix.Close(fd) })

		return fd
	}

	dir := t.TempDir()

	var fs unix.Statfs_t
	require.NoError(t, unix.Statfs(dir, &fs))

	if !listedInoFS[int64(fs.Type)] {
		t.Skipf("the test dir is on filesystem %#x, not one of listedInoFS", fs.Type)
	}

	ok, err := listedInos(open(dir))
	require.NoError(t, err)
	require.True(t, ok, "the test's filesystem")

	ok, err = listedInos(open("/proc/self"))
	require.NoError(t, err)
	require.False(t, ok, "procfs")

	requireRoot(t)
	writeFile(t, filepath.Join(dir, "a", "f"), []byte("covered"), 0o644, baseTime)
	shown := filepath.Join(t.TempDir(), "g")
	writeFile(t, shown, []byte("shown"), 0o644, baseTime)
	unmountBeneath(t, dir)
	require.NoError(t, unix.Mount(shown, filepath.Join(dir, "a", "f"), "", unix.MS_BIND, ""))

	ok, err = listedInos(open(dir))
	require.NoError(t, err)
	require.False(t, ok, "a bind mount beneath")

	tmp := filepath.Join(dir, "tmpfs")
	require.NoError(t, os.Mkdir(tmp, 0o755))
	require.NoError(t, unix.Mount("tmpfs", tmp, "tmpfs", 0, "size=1m"))

	ok, err = listedInos(open(tmp))
	require.NoError(t, err)
	require.True(t, ok, "tmpfs, nothing mounted beneath it")
}

// A file of the retired replica that is the current replica's inode, with another file
// bind-mounted over it: its listing names the inode a link would give, but the replica
// would show the mounted file. The pull that recycles it never publishes what the mount
// shows, even when it verifies only what changed: it stats each file when anything is
// mounted beneath, so the covered file is never kept.
func TestRecycledPullMountBeneath(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	e.repos.hooks.noClone = true
	makeManyFiles(t, e.src, 20, 64)

	r1 := e.pullKeep(e.push().ImageID, "r1")
	r2 := e.pullKeep(e.push().ImageID, "r2")
	covered := filepath.Join(r1.ReplicaPath, "d000", "f00003")
	require.Equal(t, inode(t, filepath.Join(r2.ReplicaPath, "d000", "f00003")), inode(t, covered), "r2 linked r1's file")

	foreign := filepath.Join(t.TempDir(), "foreign")
	writeFile(t, foreign, []byte("not from any image"), 0o644, baseTime)
	unmountBeneath(t, e.target)
	require.NoError(t, unix.Mount(foreign, covered, "", unix.MS_BIND, ""))

	writeFile(t, filepath.Join(e.src, "new.txt"), []byte("new"), 0o644, baseTime)
	req := e.pullReq(e.push().ImageID, "r3")
	req.Keep.Last = 2
	req.Verify = VerifyChanged // a kept file is not read again
	r3, err := e.repos.Pull(t.Context(), req, nil)
	if err != nil {
		require.ErrorContains(t, err, "f00003", "an error names the covered file")
		return
	}

	require.Equal(t, "r1", r3.Recycled)
	require.Less(t, r3.Kept, int64(20), "the covered file is not kept")
	requireSameTree(t, e.src, e.replicaDir())
}
