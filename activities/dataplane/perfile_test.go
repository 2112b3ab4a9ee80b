package dataplane

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"
)

// openReader opens p as sourceFile.Open does and reads it as listed with size bytes.
func openReader(t *testing.T, p string, size int64) *sourceReader {
	t.Helper()
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	r := &sourceReader{fd: fd, size: size, f: sourceFile{sourceEntry{rel: filepath.Base(p)}}}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// The reader hands kopia the file as listed: exactly the listed size, the last bytes with
// io.EOF (no read syscall just for the end), seeks within it, and a file that shrank ends
// early.
func TestSourceReaderReadsAsListed(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	require.NoError(t, os.WriteFile(p, []byte("0123456789"), 0o644))

	r := openReader(t, p, 10)
	buf := make([]byte, 64)
	n, err := r.Read(buf[:0])
	require.Zero(t, n)
	require.NoError(t, err, "an empty read is no EOF")
	n, err = r.Read(buf)
	require.Equal(t, 10, n)
	require.ErrorIs(t, err, io.EOF, "the last bytes come with EOF")
	require.Equal(t, "0123456789", string(buf[:n]))
	n, err = r.Read(buf)
	require.Zero(t, n)
	require.ErrorIs(t, err, io.EOF)

	// Grown after the open: taken as listed.
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString("appended")
	require.NoError(t, err)
	require.NoError(t, f.Close())
	off, err := r.Seek(4, io.SeekStart)
	require.NoError(t, err)
	require.EqualValues(t, 4, off)
	got, err := io.ReadAll(r)
	require.NoError(t, err)
	require.Equal(t, "456789", string(got))
	off, err = r.Seek(-3, io.SeekEnd)
	require.NoError(t, err)
	require.EqualValues(t, 7, off)
	_, err = r.Seek(-8, io.SeekCurrent)
	require.Error(t, err, "before the start")
	_, err = r.Seek(0, 7)
	require.Error(t, err, "no such whence")

	// Small reads, as kopia makes for a large file, in order.
	r = openReader(t, p, 10)
	var parts []string
	for {
		n, err := r.Read(buf[:3])
		parts = append(parts, string(buf[:n]))
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
	}
	require.Equal(t, []string{"012", "345", "678", "9"}, parts)

	// Shrunk after the open: ends where the file does.
	r = openReader(t, p, 18)
	require.NoError(t, os.Truncate(p, 5))
	got, err = io.ReadAll(r)
	require.NoError(t, err)
	require.Equal(t, "01234", string(got))

	// Closed: refused, and a second close is no error.
	require.NoError(t, r.Close())
	require.NoError(t, r.Close())
	_, err = r.Read(buf)
	require.ErrorContains(t, err, "read after close")
}

// A push of files of every size boundary of the reader (empty, one read, several reads)
// reads each whole, through a limiter too.
func TestPushReadsEveryByte(t *testing.T) {
	e := newEnv(t)
	sizes := []int{0, 1, 4095, 4096, 64<<10 - 1, 64 << 10, 64<<10 + 1, 5<<20 + 3}
	for _, n := range sizes {
		writeFile(t, filepath.Join(e.src, "fx"+strconv.Itoa(n)), randBytes(t, n), 0o644, baseTime)
	}
	for i, lim := range []Limiter{nil, &countingLimiter{l: rate.NewLimiter(rate.Inf, 1<<20)}} {
		pres, err := e.repos.Push(context.Background(), PushRequest{Repo: e.cfg, Job: e.job, SourceDir: e.src, Dataset: e.ds, Limiter: lim}, nil)
		require.NoError(t, err)
		require.EqualValues(t, len(sizes), pres.Files)
		res, err := e.repos.Pull(context.Background(), e.pullReq(pres.ImageID, "r"+strconv.Itoa(i)), nil)
		require.NoError(t, err)
		requireSameTree(t, e.src, res.ReplicaPath)
		if c, ok := lim.(*countingLimiter); ok {
			var total int
			for _, n := range sizes {
				total += n
			}
			require.EqualValues(t, total, c.n.Load(), "every byte read passed the limiter")
		}
		// The second push is incremental and reads nothing: touch the files so it reads again.
		for _, n := range sizes {
			p := filepath.Join(e.src, "fx"+strconv.Itoa(n))
			require.NoError(t, os.Chtimes(p, baseTime.Add(1e9), baseTime.Add(1e9)))
		}
	}
}

// A pull creates each file with its mode: where the umask keeps the permissions without a
// chmod, and where it would not (group or other write bits, setuid, setgid, sticky, none).
func TestPullKeepsEveryMode(t *testing.T) {
	requireUmaskRead(t)

	e := newEnv(t)
	modes := map[string]uint32{
		"plain": 0o644, "exec": 0o755, "private": 0o600, "none": 0o000, "all": 0o777,
		"group-write": 0o664, "setuid": 0o4755, "setgid": 0o2775, "sticky": 0o1644,
	}
	for name, m := range modes {
		p := filepath.Join(e.src, name)
		writeFile(t, p, []byte(name), 0o644, baseTime)
		require.NoError(t, unix.Chmod(p, m))
	}
	pres, err := e.repos.Push(context.Background(), PushRequest{Repo: e.cfg, Job: e.job, SourceDir: e.src, Dataset: e.ds}, nil)
	require.NoError(t, err)
	res, err := e.repos.Pull(context.Background(), e.pullReq(pres.ImageID, "r1"), nil)
	require.NoError(t, err)
	for name, m := range modes {
		var st unix.Stat_t
		require.NoError(t, unix.Lstat(filepath.Join(res.ReplicaPath, name), &st))
		require.Equalf(t, m, st.Mode&0o7777, "mode of %s", name)
	}
	requireSameTree(t, e.src, res.ReplicaPath)
}

// requireUmaskRead checks that readUmask gives the process's umask.
func requireUmaskRead(t *testing.T) {
	t.Helper()
	um, ok := readUmask()
	require.True(t, ok, "/proc/self/status has Umask")
	old := syscall.Umask(0o022)
	syscall.Umask(old)
	require.EqualValues(t, old, um)
}

// Verification checks files relative to their directory (fileAsImage) and by path only
// where that finds a difference: each kind of difference is still named.
func TestVerifyNamesEachFileDifference(t *testing.T) {
	e := newEnv(t)
	makeTree(t, e.src)
	pres, err := e.repos.Push(context.Background(), PushRequest{Repo: e.cfg, Job: e.job, SourceDir: e.src, Dataset: e.ds}, nil)
	require.NoError(t, err)
	res, err := e.repos.Pull(context.Background(), e.pullReq(pres.ImageID, "r1"), nil)
	require.NoError(t, err)

	p := filepath.Join(res.ReplicaPath, "many", "f03.txt")
	var st unix.Stat_t
	require.NoError(t, unix.Lstat(p, &st))
	mtime := time.Unix(st.Mtim.Unix())
	for _, c := range []struct {
		what      string
		do, undo  func() error
		mustName  string
		ownerOnly bool
	}{
		{"xattr", func() error { return unix.Lsetxattr(p, "user.added", []byte("x"), 0) }, func() error { return unix.Lremovexattr(p, "user.added") }, "many/f03.txt: xattr user.added not in the image", false},
		{"mode", func() error { return unix.Chmod(p, 0o600) }, func() error { return unix.Chmod(p, st.Mode&0o7777) }, "many/f03.txt: mode", false},
		{"mtime", func() error { return os.Chtimes(p, mtime, mtime.Add(time.Second)) }, func() error { return os.Chtimes(p, mtime, mtime) }, "many/f03.txt: mtime", false},
		{"owner", func() error { return unix.Lchown(p, 4321, 4321) }, func() error { return unix.Lchown(p, int(st.Uid), int(st.Gid)) }, "many/f03.txt: owner", true},
	} {
		if c.ownerOnly && os.Geteuid() != 0 {
			continue
		}
		require.NoError(t, c.do(), c.what)
		err := e.repos.VerifyReplica(context.Background(), e.cfg, e.job, e.ds, pres.ImageID, res.ReplicaPath, 0)
		require.ErrorIs(t, err, ErrVerify, c.what)
		require.ErrorContains(t, err, c.mustName, c.what)
		require.NoError(t, c.undo(), c.what)
	}
	require.NoError(t, e.repos.VerifyReplica(context.Background(), e.cfg, e.job, e.ds, pres.ImageID, res.ReplicaPath, 0))
}
