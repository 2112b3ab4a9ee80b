package dataplane

import (
	"context"
	"errors"
	"os"
	"os/exec"
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

	// Data, then zeros to its end within the same content: the size comes from the
	// truncate after the writes, not from the last write.
	tail := filepath.Join(e.src, "tail.img")
	require.NoError(t, os.WriteFile(tail, append([]byte("abc"), make([]byte, 1<<20)...), 0o644))
	require.NoError(t, os.Chtimes(tail, mt, mt))

	srcData := dataRanges(t, sp)
	if len(srcData) == 0 || allocated(t, sp) > 1<<20 {
		t.Skipf("the file system of %s keeps no holes", e.src)
	}

	img := e.push().ImageID

	for _, verify := range []VerifyMode{VerifyFull, VerifyChanged} {
		rep, took := pullVerify(e, img, verify)
		t.Logf("verify=%s: pull of %d MiB apparent took %v", verify, (size+64<<20)>>20, took)

		got := filepath.Join(rep, "sparse.img")
		require.Equal(t, sha(t, sp), sha(t, got))
		require.Equal(t, int64(size), fileSize(t, got))

		// Every data block of the replica is a data block of the source.
		for _, r := range dataRanges(t, got) {
			s, e := r[0]/holeBlock*holeBlock, (r[1]+holeBlock-1)/holeBlock*holeBlock
			require.True(t, inRanges(srcData, s, min(e, size)), "replica data %v is a hole in the source %v", r, srcData)
		}

		require.LessOrEqual(t, allocated(t, got), int64(64<<10), "replica of %s allocates too much", got)

		gt := filepath.Join(rep, "tail.img")
		require.Equal(t, sha(t, tail), sha(t, gt))
		require.Equal(t, int64(3+1<<20), fileSize(t, gt))

		gh := filepath.Join(rep, "hole.img")
		require.Empty(t, dataRanges(t, gh))
		require.Equal(t, int64(0), allocated(t, gh))
		require.Equal(t, int64(64<<20), fileSize(t, gh))
	}
}

// pullVerify pulls img with that verification as a dataset of its own (so
// every file is written, none linked from an earlier pull) and returns the
// replica's path and how long the pull took.
func pullVerify(e *env, img string, verify VerifyMode) (string, time.Duration) {
	e.t.Helper()

	req := e.pullReq(img, "r1")
	req.Verify, req.SourceDataset, req.Dataset = verify, e.ds, e.ds+"-"+string(verify)
	t0 := time.Now()
	res, err := e.repos.Pull(context.Background(), req, nil)
	require.NoError(e.t, err)
	require.True(e.t, res.Verified)
	require.Zero(e.t, res.Linked, "every file written")
	took := time.Since(t0).Round(time.Millisecond)

	return res.ReplicaPath, took
}

func fileSize(t *testing.T, p string) int64 {
	t.Helper()

	st, err := os.Stat(p)
	require.NoError(t, err)

	return st.Size()
}

// TestMeasureSparse times push and pull of a sparse file with one byte of data
// (issue 15: 3 GiB), skipped unless REPLCTL_MEASURE is set:
//
//	REPLCTL_MEASURE=1 go test ./activities/dataplane -run TestMeasureSparse -v
//
// REPLCTL_MEASURE_SPARSE_MB sets the apparent size (default 3072).
func TestMeasureSparse(t *testing.T) {
	if os.Getenv("REPLCTL_MEASURE") == "" {
		t.Skip("set REPLCTL_MEASURE=1 to run")
	}

	size := int64(envInt("REPLCTL_MEASURE_SPARSE_MB", 3072)) << 20
	e := newEnv(t)
	sp := filepath.Join(e.src, "sparse.img")
	require.NoError(t, os.WriteFile(sp, nil, 0o644))
	require.NoError(t, os.Truncate(sp, size))
	f, err := os.OpenFile(sp, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteAt([]byte{1}, size/2)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	t0 := time.Now()
	img := e.push().ImageID
	t.Logf("push of %d MiB apparent (1 byte of data): %v", size>>20, time.Since(t0).Round(time.Millisecond))

	for _, verify := range []VerifyMode{VerifyFull, VerifyChanged} {
		rep, took := pullVerify(e, img, verify)
		got := filepath.Join(rep, "sparse.img")
		t.Logf("pull, verify=%s: %v, %d bytes allocated", verify, took, allocated(t, got))
	}

	t0 = time.Now()
	cmd := exec.Command("cp", "-a", sp, filepath.Join(e.target, "cp.img"))
	require.NoError(t, cmd.Run())
	t.Logf("cp -a: %v, %d bytes allocated", time.Since(t0).Round(time.Millisecond), allocated(t, filepath.Join(e.target, "cp.img")))
}
