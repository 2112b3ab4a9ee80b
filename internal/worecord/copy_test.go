package worecord

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// source makes a tree with what write once keeps: nested directories with odd modes, a
// setuid file, an empty file, a name that is not UTF-8, symlinks, owners and times.
func source(t *testing.T) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	files := map[string]string{"hole": "", "top": "top file", "a/b/deep": string(bytes.Repeat([]byte("x"), 3<<20)),
		"a/empty": "", "a/n\xffme": "not utf-8", "a/suid": "#!/bin/sh\n"}
	for p, c := range files {
		require.NoError(t, os.MkdirAll(filepath.Dir(filepath.Join(src, p)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(src, p), []byte(c), 0o644))
	}
	require.NoError(t, os.Chmod(filepath.Join(src, "a/suid"), 0o4755))
	require.NoError(t, os.Chmod(filepath.Join(src, "a/b"), 0o1770))
	require.NoError(t, os.Symlink("../top", filepath.Join(src, "a/up")))
	require.NoError(t, os.Symlink("/nonexistent/abs", filepath.Join(src, "dangling")))
	// Other names of one file (one of them in another directory), a FIFO, a socket and a
	// device node.
	require.NoError(t, os.Link(filepath.Join(src, "a/b/deep"), filepath.Join(src, "deep-again")))
	require.NoError(t, os.Link(filepath.Join(src, "a/b/deep"), filepath.Join(src, "a/b/deep3")))
	require.NoError(t, unix.Mkfifo(filepath.Join(src, "a/fifo"), 0o640))
	require.NoError(t, unix.Mknod(filepath.Join(src, "a/sock"), unix.S_IFSOCK|0o600, 0))
	// Sparse files: data in the middle and at the end of 8 MiB, and one that is all hole.
	sparse, err := os.Create(filepath.Join(src, "a/sparse"))
	require.NoError(t, err)
	_, err = sparse.WriteAt([]byte("in the middle"), 1<<20)
	require.NoError(t, err)
	_, err = sparse.WriteAt([]byte("at the end"), 8<<20-10)
	require.NoError(t, err)
	require.NoError(t, sparse.Close())
	require.NoError(t, os.Truncate(filepath.Join(src, "hole"), 0))
	require.NoError(t, os.Truncate(filepath.Join(src, "hole"), 4<<20))
	// Extended attributes: user ones on a file and a directory, a POSIX ACL, and (root) a
	// file capability, which a chown would clear.
	require.NoError(t, unix.Setxattr(filepath.Join(src, "top"), "user.replctl", []byte("value"), 0))
	require.NoError(t, unix.Setxattr(filepath.Join(src, "a"), "user.dir", []byte{0, 1, 2}, 0))
	require.NoError(t, unix.Setxattr(filepath.Join(src, "a/b/deep"), "system.posix_acl_access", aclUserRead(1001), 0))
	if os.Geteuid() == 0 {
		require.NoError(t, unix.Setxattr(filepath.Join(src, "a/suid"), "security.capability", capNetBindService(), 0))
		require.NoError(t, unix.Mknod(filepath.Join(src, "a/null"), unix.S_IFCHR|0o620, int(unix.Mkdev(1, 3))))
		require.NoError(t, os.Lchown(filepath.Join(src, "a/up"), 42, 43))
		require.NoError(t, os.Chown(filepath.Join(src, "top"), 44, 45))
	}
	old := time.Unix(1_400_000_000, 987_654_321)
	for _, p := range []string{"top", "a/b/deep", "a/b", "a", "."} {
		require.NoError(t, os.Chtimes(filepath.Join(src, p), old, old))
	}
	ts := []unix.Timespec{unix.NsecToTimespec(old.UnixNano()), unix.NsecToTimespec(old.UnixNano())}
	require.NoError(t, unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(src, "a/up"), ts, unix.AT_SYMLINK_NOFOLLOW))
	return src
}

// copyAndCheck copies src into a fresh staging through RootStaging, reads the record back
// and checks the staging against it, as the target would.
func copyAndCheck(t *testing.T, src string) (string, CopyResult, Result) {
	t.Helper()
	staging := filepath.Join(t.TempDir(), "staging")
	require.NoError(t, os.Mkdir(staging, 0o700))
	root, err := os.OpenRoot(staging)
	require.NoError(t, err)
	defer root.Close()
	k := key(t, "pw", "orders", "orders")
	var rec bytes.Buffer
	w, err := NewWriter(&rec, k, header)
	require.NoError(t, err)
	st := NewRootStaging(root)
	cres, err := Copy(src, st, w, 4)
	st.Close()
	require.NoError(t, err)
	require.NoError(t, w.Close())
	entries, err := Read(rec.Bytes(), k, header)
	require.NoError(t, err)
	res, err := Check(root, entries, 2)
	require.NoError(t, err)
	return staging, cres, res
}

func TestCopyThenCheckGivesTheSourceTree(t *testing.T) {
	requireRoot(t)
	src := source(t)
	staging, cres, res := copyAndCheck(t, src)
	assert.Equal(t, 3, cres.Dirs)
	assert.Equal(t, 7, cres.Files)
	assert.Equal(t, 2, cres.Symlinks)
	assert.Equal(t, 2, cres.Hardlinks)
	assert.Equal(t, 3, cres.Specials)
	assert.Equal(t, int64(3<<20+len("top file")+len("not utf-8")+len("#!/bin/sh\n")+8<<20+4<<20), cres.Bytes, "the linked file's content once")
	assert.Empty(t, cres.Changed)
	assert.Equal(t, Result{Dirs: 3, Files: 7, Symlinks: 2, Hardlinks: 2, Specials: 3, Bytes: cres.Bytes}, res)
	assert.Equal(t, sorted(got(t, src)), sorted(got(t, staging)))
	for _, p := range []string{"a/sparse", "hole"} {
		var st unix.Stat_t
		require.NoError(t, unix.Lstat(filepath.Join(staging, p), &st))
		assert.Less(t, st.Blocks*512, int64(1<<20), "%s keeps its holes: %d blocks", p, st.Blocks)
	}
	var a, b, c unix.Stat_t
	require.NoError(t, unix.Lstat(filepath.Join(staging, "a/b/deep"), &a))
	require.NoError(t, unix.Lstat(filepath.Join(staging, "deep-again"), &b))
	require.NoError(t, unix.Lstat(filepath.Join(staging, "a/b/deep3"), &c))
	assert.Equal(t, []uint64{a.Ino, a.Ino, 3}, []uint64{b.Ino, c.Ino, a.Nlink}, "one inode with three names")
	require.NoError(t, unix.Lstat(filepath.Join(staging, "a/null"), &a))
	assert.Equal(t, []uint64{unix.S_IFCHR, unix.Mkdev(1, 3)}, []uint64{uint64(a.Mode & unix.S_IFMT), a.Rdev})
}

// aclUserRead is a POSIX access ACL (the kernel's xattr form) of mode 0644 that also lets
// uid read: user::rw-, user:uid:r--, group::r--, mask::r--, other::r--.
func aclUserRead(uid uint32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 2) // POSIX_ACL_XATTR_VERSION
	for _, e := range [][3]uint32{{0x01, 6, 0xffffffff}, {0x02, 4, uid}, {0x04, 4, 0xffffffff}, {0x10, 4, 0xffffffff}, {0x20, 4, 0xffffffff}} {
		b = binary.LittleEndian.AppendUint16(b, uint16(e[0]))
		b = binary.LittleEndian.AppendUint16(b, uint16(e[1]))
		b = binary.LittleEndian.AppendUint32(b, e[2])
	}
	return b
}

// capNetBindService is a file capability (vfs_cap_data revision 2) of cap_net_bind_service,
// permitted and effective.
func capNetBindService() []byte {
	b := binary.LittleEndian.AppendUint32(nil, 0x02000001)
	for _, v := range []uint32{1 << 10, 0, 0, 0} {
		b = binary.LittleEndian.AppendUint32(b, v)
	}
	return b
}
