package dataplane

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// direntRecord encodes one linux_dirent64 record, padded to 8 bytes as the kernel does.
func direntRecord(name string, typ uint8) []byte {
	n := (19 + len(name) + 1 + 7) &^ 7
	b := make([]byte, n)
	binary.NativeEndian.PutUint64(b[0:], 42)
	binary.NativeEndian.PutUint16(b[16:], uint16(n))
	b[18] = typ
	copy(b[19:], name)
	return b
}

// Records decode to names, types and inode numbers, "." and ".." are left out, and a record that does not
// fit what is left is an error rather than a guess.
func TestParseDirents(t *testing.T) {
	var b []byte
	for _, r := range []struct {
		name string
		typ  uint8
	}{{".", unix.DT_DIR}, {"..", unix.DT_DIR}, {"file", unix.DT_REG}, {"sub", unix.DT_DIR}, {"\xffodd", unix.DT_UNKNOWN}, {"l", unix.DT_LNK}} {
		b = append(b, direntRecord(r.name, r.typ)...)
	}
	got, more, err := parseDirents(b, nil)
	require.NoError(t, err)
	require.True(t, more)
	require.Equal(t, []dirent{{"file", unix.DT_REG, 42}, {"sub", unix.DT_DIR, 42}, {"\xffodd", unix.DT_UNKNOWN, 42}, {"l", unix.DT_LNK, 42}}, got)

	_, _, err = parseDirents(b[:10], nil)
	require.ErrorContains(t, err, "shorter than a record")
	bad := direntRecord("x", unix.DT_REG)
	binary.NativeEndian.PutUint16(bad[16:], 200)
	_, _, err = parseDirents(bad, nil)
	require.ErrorContains(t, err, "record length 200")
}

// The reader lists a real directory in full, in several calls when its buffer is small,
// each entry with its inode number.
func TestDirentReaderListsADirectory(t *testing.T) {
	dir := t.TempDir()
	want := map[string]uint8{}
	for i := range 300 {
		name := filepath.Join(dir, "f"+string(rune('a'+i%26))+string(rune('a'+i/26)))
		require.NoError(t, os.WriteFile(name, nil, 0o644))
		want[filepath.Base(name)] = unix.DT_REG
	}
	require.NoError(t, os.Mkdir(filepath.Join(dir, "sub"), 0o755))
	want["sub"] = unix.DT_DIR
	require.NoError(t, os.Symlink("sub", filepath.Join(dir, "ln")))
	want["ln"] = unix.DT_LNK
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(fd) //nolint:errcheck
	r := newDirentReader(fd)
	r.buf = make([]byte, 512)
	got := map[string]uint8{}
	calls := 0
	for {
		ents, more, err := r.next(nil)
		require.NoError(t, err)
		calls++
		for _, e := range ents {
			var st unix.Stat_t
			require.NoError(t, unix.Fstatat(fd, e.name, &st, unix.AT_SYMLINK_NOFOLLOW))
			require.Equal(t, st.Ino, e.ino, "d_ino of %s", e.name)
			if e.typ == unix.DT_UNKNOWN { // a filesystem without d_type: the scan stats
				e.typ = map[uint32]uint8{unix.S_IFREG: unix.DT_REG, unix.S_IFDIR: unix.DT_DIR, unix.S_IFLNK: unix.DT_LNK}[st.Mode&unix.S_IFMT]
			}
			got[e.name] = e.typ
		}
		if !more {
			break
		}
	}
	require.Equal(t, want, got)
	require.Greater(t, calls, 2, "a 512-byte buffer needs several getdents64 calls")
}

// A summary scan, which no longer stats entries whose type the listing gives, still finds
// what is deep in the tree, descends into a directory whose type the listing did not give,
// and never follows a symlink to a directory, even one holding entries it would refuse.
func TestScanUnsupportedUsesListedTypes(t *testing.T) {
	root := t.TempDir()
	src := filepath.Join(root, "src")
	outside := filepath.Join(root, "outside")
	for _, d := range []string{filepath.Join(src, "a", "b", "c"), outside} {
		require.NoError(t, os.MkdirAll(d, 0o755))
	}
	for _, d := range []string{filepath.Join(src, "a", "b", "c"), outside} {
		writeFile(t, filepath.Join(d, "p\xff"), nil, 0o644, baseTime)
		writeFile(t, filepath.Join(d, "p\uf7ff"), nil, 0o644, baseTime)
	}
	require.NoError(t, os.Symlink(outside, filepath.Join(src, "a", "to-outside")))
	u, err := ScanUnsupported(context.Background(), src, ScanOptions{Name: "ds"})
	require.NoError(t, err)
	require.Equal(t, 1, u.Count, "%v", u)
	require.Equal(t, []string{`"ds/a/b/c/p\xff" (name not valid UTF-8, and its image name is a sibling's)`}, u.First)

	// An entry listed as DT_UNKNOWN is stat'ed, and a directory among them is walked.
	fd, err := unix.Open(filepath.Join(src, "a"), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	defer unix.Close(fd) //nolint:errcheck
	s := newScan(context.Background(), src, ScanOptions{Name: "ds"}, false)
	s.child(fd, filepath.Join(src, "a", "b"), "ds/a/b", "b", unix.DT_UNKNOWN)
	s.child(fd, filepath.Join(src, "a", "to-outside"), "ds/a/to-outside", "to-outside", unix.DT_UNKNOWN)
	s.wg.Wait()
	u, _, err = s.result()
	require.NoError(t, err)
	require.Equal(t, 1, u.Count, "%v", u)
	require.Equal(t, `"ds/a/b/c/p\xff" (name not valid UTF-8, and its image name is a sibling's)`, u.First[0])
}
