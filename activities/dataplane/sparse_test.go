package dataplane

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// dataRanges lists the [start, end) data ranges of a file (SEEK_DATA/SEEK_HOLE).
func dataRanges(t *testing.T, p string) [][2]int64 {
	t.Helper()

	f, err := os.Open(p)
	require.NoError(t, err)
	defer f.Close()

	var rs [][2]int64

	for off := int64(0); ; {
		d, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return rs
		}
		require.NoError(t, err)

		h, err := unix.Seek(int(f.Fd()), d, unix.SEEK_HOLE)
		require.NoError(t, err)
		rs = append(rs, [2]int64{d, h})
		off = h
	}
}

// inRanges reports whether [s, e) lies within one of rs.
func inRanges(rs [][2]int64, s, e int64) bool {
	for _, r := range rs {
		if s >= r[0] && e <= r[1] {
			return true
		}
	}

	return false
}

func allocated(t *testing.T, p string) int64 {
	t.Helper()

	st, err := os.Stat(p)
	require.NoError(t, err)

	return st.Sys().(*syscall.Stat_t).Blocks * 512
}

// TestPullKeepsHoles: a sparse source becomes a sparse replica (never more data
// than the source at block granularity), with equal content, under both kinds
// of verification.
func TestPullKeepsHoles(t *testing.T) {
	const size = 256 << 20

	e := newEnv(t)
	mt := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

	sp := filepath.Join(e.src, "sparse.img")
	f, err := os.Create(sp)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(size))

	for _, at := range []int64{12345, 100<<20 + 7, size - 3} {
		_, err := f.WriteAt([]byte("abc"), at)
		require.NoError(t, err)
	}
	require.NoError(t, f.Close())
	require.NoError(t, os.Chtimes(sp, mt, mt))

	hole := filepath.Join(e.src, "hole.img")
	require.NoError(t, os.WriteFile(hole, nil, 0o644))
	require.NoError(t, os.Truncate(hole, 64<<20))
	require.NoError(t, os.Chtimes(hole, mt, mt))

	srcData := dataRanges(t, sp)
	if len(srcData) == 0 || allocated(t, sp) > 1<<20 {
		t.Skipf("the file system of %s keeps no holes", e.src)
	}

	img := e.push().ImageID

	for _, verify := range []string{"full", "changed"} {
		req := e.pullReq(img, "r-"+verify)
		req.Verify = verify
		t0 := time.Now()
		res, err := e.repos.Pull(context.Background(), req, nil)
		require.NoError(t, err)
		require.True(t, res.Verified)
		t.Logf("verify=%s: pull of %d MiB apparent took %v", verify, (size+64<<20)>>20, time.Since(t0).Round(time.Millisecond))

		rep := e.replicaDir()
		got := filepath.Join(rep, "sparse.img")
		require.Equal(t, sha(t, sp), sha(t, got))
		require.Equal(t, int64(size), fileSize(t, got))

		// Every data block of the replica is a data block of the source.
		for _, r := range dataRanges(t, got) {
			s, e := r[0]/holeBlock*holeBlock, (r[1]+holeBlock-1)/holeBlock*holeBlock
			require.True(t, inRanges(srcData, s, min(e, size)), "replica data %v is a hole in the source %v", r, srcData)
		}

		require.LessOrEqual(t, allocated(t, got), int64(64<<10), "replica of %s allocates too much", got)

		gh := filepath.Join(rep, "hole.img")
		require.Empty(t, dataRanges(t, gh))
		require.Equal(t, int64(0), allocated(t, gh))
		require.Equal(t, int64(64<<20), fileSize(t, gh))
	}
}

func fileSize(t *testing.T, p string) int64 {
	t.Helper()

	st, err := os.Stat(p)
	require.NoError(t, err)

	return st.Size()
}
