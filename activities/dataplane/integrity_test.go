package dataplane

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestPullRepairsTamperedReplica: a write into the published replica with its
// mtime restored afterwards is not carried into the next replica.
func TestPullRepairsTamperedReplica(t *testing.T) {
	e := newEnv(t)
	mt := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	good := []byte("the image's content\n")
	writeFile(t, filepath.Join(e.src, "a.txt"), good, 0o644, mt)
	writeFile(t, filepath.Join(e.src, "same.txt"), []byte("never touched\n"), 0o644, mt)
	img := e.push().ImageID

	e.pull(img, "r1")
	r1 := e.replicaDir()
	damaged := filepath.Join(r1, "a.txt")
	// Same size, mtime restored: size, mtime, mode and owner all still match.
	require.NoError(t, os.WriteFile(damaged, []byte("THE IMAGE'S CONTENT\n"), 0o644))
	require.NoError(t, os.Chtimes(damaged, mt, mt))

	req := e.pullReq(img, "r2")
	req.Verify = VerifyChanged
	res, err := e.repos.Pull(context.Background(), req, nil)
	require.NoError(t, err)
	require.True(t, res.Verified)

	r2 := e.replicaDir()
	require.Equal(t, filepath.Join(e.target, ".replctl", "replicas", "data%2Fset1", "r2"), r2)
	got, err := os.ReadFile(filepath.Join(r2, "a.txt"))
	require.NoError(t, err)
	require.Equal(t, string(good), string(got), "the damage was carried into r2")
	require.NotEqual(t, inode(t, damaged), inode(t, filepath.Join(r2, "a.txt")))
	require.Equal(t, int64(1), res.Distrusted)
	require.Equal(t, int64(1), res.Linked)

	// The untouched file is still shared: the incremental cost stays.
	require.Equal(t, inode(t, filepath.Join(r1, "same.txt")), inode(t, filepath.Join(r2, "same.txt")))
}

// TestTrustSurvivesOwnLinksAndUnlinks: our own links (a pull that fails after
// linking) and unlinks (retention's trash sweep, reclaim) change ctimes too;
// they never cost a restore, while a write after them is still caught.
func TestTrustSurvivesOwnLinksAndUnlinks(t *testing.T) {
	e := newEnv(t)
	mt := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, n := range []string{"a", "b", "c"} {
		writeFile(t, filepath.Join(e.src, n), []byte("content of "+n), 0o644, mt)
	}
	img := e.push().ImageID

	e.pull(img, "r1")

	// A pull that links everything, then fails: its staging is reclaimed by the next.
	ctx, cancel := context.WithCancel(context.Background())
	e.repos.hooks.beforeVerify = func(string) { cancel() }
	_, err := e.repos.Pull(ctx, e.pullReq(img, "r-failed"), nil)
	require.Error(t, err)
	e.repos.hooks.beforeVerify = nil

	// Keep 2: every pull from r3 on retires one replica (swept in the background).
	for _, name := range []string{"r2", "r3", "r4", "r5"} {
		req := e.pullReq(img, name)
		req.Keep.Last, req.Verify = 2, VerifyChanged
		res, err := e.repos.Pull(context.Background(), req, nil)
		require.NoError(t, err)
		require.Equal(t, int64(3), res.Linked, name)
		require.Zero(t, res.Distrusted, name)
		WaitTrash()
	}

	// A write after all that is still caught.
	f := filepath.Join(e.replicaDir(), "b")
	require.NoError(t, os.WriteFile(f, []byte("CONTENT OF B"), 0o644))
	require.NoError(t, os.Chtimes(f, mt, mt))

	req := e.pullReq(img, "r6")
	req.Keep.Last, req.Verify = 2, VerifyChanged
	res, err := e.repos.Pull(context.Background(), req, nil)
	require.NoError(t, err)
	require.Equal(t, int64(1), res.Distrusted)
	require.Equal(t, int64(2), res.Linked)
	got, err := os.ReadFile(filepath.Join(e.replicaDir(), "b"))
	require.NoError(t, err)
	require.Equal(t, "content of b", string(got))
}

// TestTrustRecordRoundTrip: a record of 200,000 files encodes compactly and
// decodes to itself; damaged records are refused.
func TestTrustRecordRoundTrip(t *testing.T) {
	const n = 200000

	stamps := make([]stamp, n)
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano()
	for i := range stamps {
		// Inodes as a file system hands them out (dense, shuffled), ctimes within minutes.
		stamps[i] = stamp{ino: uint64(1000 + (i*7919)%n), ctime: base + int64(i%5000)*1e6 + int64(i)}
	}

	t0 := time.Now()
	r := newTrustRecord(stamps)
	b := r.encode()
	enc := time.Since(t0)

	t0 = time.Now()
	got, err := decodeTrust(b)
	require.NoError(t, err)
	t.Logf("%d files: %d bytes (%.1f a file), sort+encode %v, decode %v", n, len(b), float64(len(b))/n, enc.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
	require.Equal(t, r, got)
	require.Less(t, len(b), 10*n)

	require.True(t, got.carry(1000, got.ctime[0], 42))
	require.False(t, got.carry(1000, got.ctime[0]+1, 43), "a carry must meet the recorded ctime")
	require.Equal(t, -1, got.find(999))

	for _, bad := range [][]byte{nil, []byte("nonsense"), b[:len(b)-1], append(append([]byte{}, b...), 0)} {
		_, err := decodeTrust(bad)
		require.Error(t, err)
	}
}

// TestMeasureSweepJournal times removing a tree of shared files (as the trash
// sweep removes a retired replica) with and without noting ctimes. Skipped
// unless REPLCTL_MEASURE is set:
//
//	REPLCTL_MEASURE=1 go test ./activities/dataplane -run TestMeasureSweepJournal -v
func TestMeasureSweepJournal(t *testing.T) {
	if os.Getenv("REPLCTL_MEASURE") == "" {
		t.Skip("set REPLCTL_MEASURE=1 to run")
	}

	n := envInt("REPLCTL_MEASURE_FILES", 20000)
	base := t.TempDir()
	src := filepath.Join(base, "src")
	makeManyFiles(t, src, n, 100)

	for round := range 2 {
		for _, journal := range []bool{false, true} {
			cp := filepath.Join(base, "copy")
			require.NoError(t, filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
				require.NoError(t, err)
				rel, _ := filepath.Rel(src, p)
				if d.IsDir() {
					return os.MkdirAll(filepath.Join(cp, rel), 0o755)
				}

				return os.Link(p, filepath.Join(cp, rel))
			}))

			var j *unlinkJournal
			if journal {
				j = &unlinkJournal{}
			}

			t0 := time.Now()
			require.NoError(t, removeAllAtJ(unix.AT_FDCWD, cp, j))
			t.Logf("round %d: removing %d shared files, journal %t: %v", round, n, journal, time.Since(t0).Round(time.Millisecond))

			if journal {
				require.Len(t, j.carries, n)
			}
		}
	}
}

// CheckReplica lists every difference of a replica from its image, not just the first: a
// changed content, a changed mode, an entry added and one removed.
func TestCheckReplicaListsEveryDifference(t *testing.T) {
	e := newEnv(t)
	makeTree(t, e.src)
	res := e.push()
	pres := e.pull(res.ImageID, "r1")
	ctx := context.Background()
	d, err := e.repos.CheckReplica(ctx, e.cfg, e.job, e.ds, res.ImageID, pres.ReplicaPath, 2, 10)
	require.NoError(t, err)
	require.Zero(t, d.Count, "a fresh replica: %v", d.First)

	var files []string
	require.NoError(t, filepath.WalkDir(pres.ReplicaPath, func(p string, de os.DirEntry, err error) error {
		if err == nil && de.Type().IsRegular() {
			files = append(files, p)
		}
		return err
	}))
	require.GreaterOrEqual(t, len(files), 3)
	keepTimes := func(p string, fn func()) {
		dirFi, err := os.Lstat(filepath.Dir(p))
		require.NoError(t, err)
		fi, ferr := os.Lstat(p) // absent for an entry added
		fn()
		if _, err := os.Lstat(p); err == nil && ferr == nil {
			require.NoError(t, os.Chtimes(p, fi.ModTime(), fi.ModTime()))
		}
		require.NoError(t, os.Chtimes(filepath.Dir(p), dirFi.ModTime(), dirFi.ModTime()))
	}
	keepTimes(files[0], func() {
		f, err := os.OpenFile(files[0], os.O_WRONLY, 0)
		require.NoError(t, err)
		_, err = f.WriteAt([]byte{'!'}, 0)
		require.NoError(t, err)
		require.NoError(t, f.Close())
	})
	keepTimes(files[1], func() { require.NoError(t, os.Chmod(files[1], 0o600)) })
	keepTimes(files[2], func() { require.NoError(t, os.Remove(files[2])) })
	added := filepath.Join(pres.ReplicaPath, "added-later")
	keepTimes(added, func() { require.NoError(t, os.WriteFile(added, nil, 0o644)) })

	d, err = e.repos.CheckReplica(ctx, e.cfg, e.job, e.ds, res.ImageID, pres.ReplicaPath, 2, 10)
	require.NoError(t, err)
	t.Logf("differences: %q", d.First)
	require.Equal(t, 4, d.Count)
	all := strings.Join(d.First, "\n")
	rel := func(p string) string { r, _ := filepath.Rel(pres.ReplicaPath, p); return r }
	require.Contains(t, all, rel(files[0]))
	require.Contains(t, all, rel(files[1])+": mode")
	require.Contains(t, all, rel(files[2]))
	require.Contains(t, all, "added-later: unexpected entry not in the image")

	d, err = e.repos.CheckReplica(ctx, e.cfg, e.job, e.ds, res.ImageID, pres.ReplicaPath, 2, 2)
	require.NoError(t, err)
	require.Equal(t, 4, d.Count)
	require.Len(t, d.First, 2, "names at most the limit, counts all")
}

// The entries of a directory are checked on several goroutines (entryDiffs), and the
// differences are still named in image order: in a directory of 300 files (five chunks),
// four changed modes come back in name order, and a verification names the first.
func TestCheckReplicaNamesDifferencesInOrder(t *testing.T) {
	e := newEnv(t)
	big := filepath.Join(e.src, "big")
	require.NoError(t, os.Mkdir(big, 0o755))
	for i := range 300 {
		writeFile(t, filepath.Join(big, fmt.Sprintf("f%03d", i)), []byte(strconv.Itoa(i)), 0o644, baseTime)
	}
	require.NoError(t, os.Chtimes(big, baseTime, baseTime))
	res := e.push()
	pres := e.pull(res.ImageID, "r1")
	ctx := context.Background()

	damaged := []string{"f010", "f100", "f150", "f290"}
	for _, n := range damaged {
		require.NoError(t, os.Chmod(filepath.Join(pres.ReplicaPath, "big", n), 0o600))
	}

	for range 5 {
		d, err := e.repos.CheckReplica(ctx, e.cfg, e.job, e.ds, res.ImageID, pres.ReplicaPath, 4, 10)
		require.NoError(t, err)
		require.Equal(t, len(damaged), d.Count, "differences: %q", d.First)
		for i, n := range damaged {
			require.Contains(t, d.First[i], "big/"+n+": mode", "difference %d of %q", i, d.First)
		}

		err = e.repos.VerifyReplica(ctx, e.cfg, e.job, e.ds, res.ImageID, pres.ReplicaPath, 4)
		require.ErrorIs(t, err, ErrVerify)
		require.Contains(t, err.Error(), "big/f010: mode")
	}
}
