package dataplane

import (
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/zeebo/blake3"
	"golang.org/x/sys/unix"
)

// TestMeasureWriteOnce times the floor of a write-once data path (issue 16; design.md,
// "Write once, measured"): each source file read once, hashed (BLAKE3, the repository's
// hash) and written once where the replica will be, with its mode, owner and times, then a
// syncfs, then a verification that reads every written file back and compares its hash. No
// repository, no encryption, no run around it: what a push that streams into the target's
// staging could at best cost, to set beside cp and rsync run on the same tree. Regular files,
// directories and symlinks only (the bench's A and B hold nothing else); the target must not exist.
// Skipped unless REPLCTL_MEASURE_WRITEONCE_SRC names the tree:
//
//	REPLCTL_MEASURE_WRITEONCE_SRC=/tmp/replctl-bench/data/full/b \
//	  REPLCTL_MEASURE_WRITEONCE_DST=/tmp/wo REPLCTL_MEASURE_PARALLEL=8 \
//	  go test ./activities/dataplane -run TestMeasureWriteOnce -v
//
// The page cache is dropped first when the test may (root).
func TestMeasureWriteOnce(t *testing.T) {
	src := os.Getenv("REPLCTL_MEASURE_WRITEONCE_SRC")
	if src == "" {
		t.Skip("set REPLCTL_MEASURE_WRITEONCE_SRC to a tree to run")
	}
	dst := envString("REPLCTL_MEASURE_WRITEONCE_DST", filepath.Join(t.TempDir(), "replica"))
	workers := envInt("REPLCTL_MEASURE_PARALLEL", 8)
	byDir := os.Getenv("REPLCTL_MEASURE_WRITEONCE_BYDIR") != ""
	t.Logf("page cache dropped: %v; workers take whole directories: %v", dropPageCache(), byDir)

	cpu0, start := cpuTime(), time.Now()
	copyTree := writeOnceCopy
	if byDir {
		copyTree = writeOnceCopyByDir
	}
	sums, n := copyTree(t, src, dst, workers)
	fd, err := unix.Open(dst, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	require.NoError(t, err)
	synced := time.Now()
	require.NoError(t, unix.Syncfs(fd))
	require.NoError(t, unix.Close(fd))
	copied := time.Since(start)
	t.Logf("copy: %d files, %d bytes in %v (syncfs %v), CPU %v", len(sums), n, copied.Round(time.Millisecond),
		time.Since(synced).Round(time.Millisecond), (cpuTime() - cpu0).Round(time.Millisecond))

	cpu1, vstart := cpuTime(), time.Now()
	writeOnceVerify(t, dst, sums, workers)
	t.Logf("verify (read back, hash, compare): %v, CPU %v; total %v", time.Since(vstart).Round(time.Millisecond),
		(cpuTime() - cpu1).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// writeOnceCopy copies the tree src to dst (workers files at once, fed by one walk) and
// returns each file's hash and the bytes copied.
func writeOnceCopy(t *testing.T, src, dst string, workers int) (map[string][32]byte, int64) {
	type file struct {
		rel string
		st  unix.Stat_t
	}
	files := make(chan file, 4096)
	c := &writeOnceCopied{sums: map[string][32]byte{}}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			buf := make([]byte, 1<<20)
			for f := range files {
				c.file(t, src, dst, f.rel, &f.st, buf)
			}
		})
	}
	err := walkLstat(src, false, func(p, rel string, d fs.DirEntry, st unix.Stat_t) error {
		switch {
		case d.IsDir():
			return os.Mkdir(filepath.Join(dst, rel), fs.FileMode(st.Mode&0o777))
		case d.Type().IsRegular():
			files <- file{rel, st}
			return nil
		case d.Type()&fs.ModeSymlink != 0:
			return writeOnceSymlink(p, filepath.Join(dst, rel), &st)
		}
		t.Errorf(notMeasured, p)
		return nil
	})
	close(files)
	wg.Wait()
	require.NoError(t, err)
	return c.sums, c.total
}

// notMeasured is the test's error for an entry that is not a regular file, a directory or a
// symlink.
const notMeasured = "%s: only regular files, directories and symlinks are measured"

// writeOnceCopied is what the copy's workers wrote: each file's hash and the bytes in all.
type writeOnceCopied struct {
	mu    sync.Mutex
	sums  map[string][32]byte
	total int64
}

// file copies regular file rel of src to dst (writeOnceFile) and records its hash.
func (c *writeOnceCopied) file(t *testing.T, src, dst, rel string, st *unix.Stat_t, buf []byte) {
	sum, n, err := writeOnceFile(filepath.Join(src, rel), filepath.Join(dst, rel), st, buf)
	if err != nil {
		t.Error(err)
		return
	}
	c.mu.Lock()
	c.sums[rel], c.total = sum, c.total+n
	c.mu.Unlock()
}

// walkLstat walks the tree src in one goroutine and hands fn each entry's path (each
// directory's only, with dirsOnly), its path relative to src and its lstat.
func walkLstat(src string, dirsOnly bool, fn func(p, rel string, d fs.DirEntry, st unix.Stat_t) error) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || (dirsOnly && !d.IsDir()) {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		return fn(p, rel, d, st)
	})
}

// writeOnceCopyByDir copies the tree src to dst as writeOnceCopy does, but each worker
// takes a whole directory: it lists it, stats its entries and copies its files, so the
// source's metadata is read on every worker rather than by the one walk, and no two workers
// create files in one directory at once. The directories are made first, in one walk.
func writeOnceCopyByDir(t *testing.T, src, dst string, workers int) (map[string][32]byte, int64) {
	var dirs []string
	err := walkLstat(src, true, func(_, rel string, _ fs.DirEntry, st unix.Stat_t) error {
		dirs = append(dirs, rel)
		return os.Mkdir(filepath.Join(dst, rel), fs.FileMode(st.Mode&0o777))
	})
	require.NoError(t, err)

	c := &writeOnceCopied{sums: map[string][32]byte{}}
	next := make(chan string)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			buf := make([]byte, 1<<20)
			for dir := range next {
				ents, err := os.ReadDir(filepath.Join(src, dir))
				if err != nil {
					t.Error(err)
					continue
				}
				for _, e := range ents {
					rel := filepath.Join(dir, e.Name())
					from := filepath.Join(src, rel)
					var st unix.Stat_t
					if err := unix.Lstat(from, &st); err != nil {
						t.Error(err)
						continue
					}
					switch st.Mode & unix.S_IFMT {
					case unix.S_IFREG:
						c.file(t, src, dst, rel, &st, buf)
					case unix.S_IFLNK:
						if err := writeOnceSymlink(from, filepath.Join(dst, rel), &st); err != nil {
							t.Error(err)
						}
					case unix.S_IFDIR: // made by the walk
					default:
						t.Errorf(notMeasured, from)
					}
				}
			}
		})
	}
	for _, dir := range dirs {
		next <- dir
	}
	close(next)
	wg.Wait()
	return c.sums, c.total
}

// writeOnceFile copies one regular file: reads it once, hashes and writes what it read,
// then sets owner and times, and starts the writeback of a large file (as the pull does).
func writeOnceFile(from, to string, st *unix.Stat_t, buf []byte) (sum [32]byte, n int64, err error) {
	in, err := unix.Open(from, unix.O_RDONLY|unix.O_NOATIME|unix.O_CLOEXEC, 0)
	if err != nil {
		return sum, 0, err
	}
	defer unix.Close(in) //nolint:errcheck // read only
	out, err := unix.Open(to, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, st.Mode&0o7777)
	if err != nil {
		return sum, 0, err
	}
	defer unix.Close(out) //nolint:errcheck // durability comes from the syncfs
	h := blake3.New()
	for {
		k, err := unix.Read(in, buf)
		if err != nil {
			return sum, n, err
		}
		if k == 0 {
			break
		}
		_, _ = h.Write(buf[:k])
		if _, err := unix.Write(out, buf[:k]); err != nil {
			return sum, n, err
		}
		n += int64(k)
	}
	if err := unix.Fchown(out, int(st.Uid), int(st.Gid)); err != nil {
		return sum, n, err
	}
	if err := unix.UtimesNanoAt(out, "", []unix.Timespec{st.Atim, st.Mtim}, unix.AT_EMPTY_PATH); err != nil {
		return sum, n, err
	}
	if n >= writebackMin {
		_ = unix.SyncFileRange(out, 0, 0, unix.SYNC_FILE_RANGE_WRITE)
	}
	copy(sum[:], h.Sum(nil))
	return sum, n, nil
}

// writeOnceSymlink copies a symlink with its owner and times.
func writeOnceSymlink(from, to string, st *unix.Stat_t) error {
	target, err := os.Readlink(from)
	if err != nil {
		return err
	}
	if err := unix.Symlink(target, to); err != nil {
		return err
	}
	if err := unix.Lchown(to, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	return unix.UtimesNanoAt(unix.AT_FDCWD, to, []unix.Timespec{st.Atim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW)
}

// writeOnceVerify reads back every file of sums under dst and fails the test on a hash
// that differs.
func writeOnceVerify(t *testing.T, dst string, sums map[string][32]byte, workers int) {
	rels := make(chan string, 4096)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			buf := make([]byte, 1<<20)
			for rel := range rels {
				b, err := os.ReadFile(filepath.Join(dst, rel)) //nolint:gosec // the test's own tree
				if err != nil {
					t.Error(err)
					continue
				}
				h := blake3.New()
				_, _ = h.Write(b)
				if want := sums[rel]; string(h.Sum(buf[:0])) != string(want[:]) {
					t.Errorf("%s: written content differs from what was read", rel)
				}
			}
		})
	}
	for rel := range sums {
		rels <- rel
	}
	close(rels)
	wg.Wait()
}
