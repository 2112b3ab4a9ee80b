package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/replctl/replctl/internal/testworld"
	"golang.org/x/sys/unix"
)

// toolRead labels the floor of a full copy: every file of the source read once from a
// cold cache, nothing written. Any copy of the source does at least this, so a full-copy
// goal below it cannot be met on this machine by reading the files.
const toolRead = "read"

// readFloor times reading every regular file of ds once after the page cache is dropped,
// with one reader per CPU as the push reads, and checks it read as many files and bytes as
// the source's digest holds.
func (b *bench) readFloor(ctx context.Context, ds *Dataset) (*Sample, error) {
	s := &Sample{Dataset: ds.Spec.Name, Mode: "full", Tool: toolRead}
	b.prepareTimed(s)
	t0 := time.Now()
	files, bytes, err := readTree(ctx, ds.Dir, runtime.NumCPU())
	if err != nil {
		return nil, fmt.Errorf("read of %s: %w", ds.Dir, err)
	}
	s.Seconds = time.Since(t0).Seconds()
	wantFiles, wantBytes := digestFiles(b.srcDigest[ds.Spec.Name])
	if files != wantFiles || bytes != wantBytes {
		return nil, fmt.Errorf("read of %s saw %d files (%d bytes), the source's digest has %d (%d bytes)", ds.Dir, files, bytes, wantFiles, wantBytes)
	}
	return s, nil
}

// digestFiles counts the regular files of a digest and their bytes.
func digestFiles(t testworld.Tree) (files, bytes int64) {
	for _, e := range t {
		if e.Kind == testworld.KindFile {
			files++
			bytes += e.Size
		}
	}
	return files, bytes
}

// readTree reads every regular file under root once, on readers goroutines fed by one
// walker in directory order (streamed, so reading overlaps the walk as in a copy, where
// testworld.Parallel would list the whole tree first), and returns how many files and
// bytes it read. Symlinks are not followed.
func readTree(ctx context.Context, root string, readers int) (files, bytes int64, err error) {
	paths := make(chan string, 4*readers)
	var (
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		first = errors.Join(first, err)
		mu.Unlock()
	}
	failed := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return first != nil
	}
	for range max(readers, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1<<20)
			var n, nb int64
			for p := range paths {
				got, err := readFile(p, buf)
				if err != nil {
					fail(err)
					continue
				}
				n++
				nb += got
			}
			mu.Lock()
			files += n
			bytes += nb
			mu.Unlock()
		}()
	}
	werr := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if failed() {
			return filepath.SkipAll
		}
		if d.Type().IsRegular() {
			paths <- p
		}
		return nil
	})
	close(paths)
	wg.Wait()
	return files, bytes, errors.Join(werr, first)
}

// readFile reads the file at p to its end through buf and returns its length.
func readFile(p string, buf []byte) (int64, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var total int64
	for {
		n, err := f.Read(buf)
		total += int64(n)
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, fmt.Errorf("read %s: %w", p, err)
		}
	}
}

// toolWalk labels the floor of an incremental copy without a change source: every entry of
// the source listed and its metadata read once from a cold cache, no file read. A tool that
// finds the change by looking at the source does at least this; only a change source (the
// change journal, a filesystem's snapshot diff) goes below it.
const toolWalk = "walk"

// isFloor tells the floors' samples and rows (toolRead, toolWalk), which copy nothing.
func isFloor(tool string) bool { return tool == toolRead || tool == toolWalk }

// walkFloor times a walk of ds (walkTree, one walker per CPU) after the page cache is
// dropped and checks it saw every entry the source's digest holds. mode is the copies' mode
// it stands beside.
func (b *bench) walkFloor(ctx context.Context, ds *Dataset, mode string) (*Sample, error) {
	s := &Sample{Dataset: ds.Spec.Name, Mode: mode, Tool: toolWalk}
	b.prepareTimed(s)
	t0 := time.Now()
	n, err := walkTree(ctx, ds.Dir, runtime.NumCPU())
	if err != nil {
		return nil, fmt.Errorf("walk of %s: %w", ds.Dir, err)
	}
	s.Seconds = time.Since(t0).Seconds()
	if want := int64(len(b.srcDigest[ds.Spec.Name])) - 1; n != want { // the digest holds the root too
		return nil, fmt.Errorf("walk of %s saw %d entries, the source's digest has %d", ds.Dir, n, want)
	}
	return s, nil
}

// walkTree lists every directory under root and reads the metadata of each entry
// (fstatat beneath the directory's fd, symlinks not followed), on walkers goroutines that
// share a stack of directories, and returns how many entries it saw below root.
func walkTree(ctx context.Context, root string, walkers int) (int64, error) {
	var (
		mu      sync.Mutex
		cond    = sync.NewCond(&mu)
		stack   = []string{root}
		pending = 1 // directories on the stack or being listed
		entries int64
		errs    error
		wg      sync.WaitGroup
	)
	for range max(walkers, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mu.Lock()
			defer mu.Unlock()
			for {
				for len(stack) == 0 && pending > 0 {
					cond.Wait()
				}
				if pending == 0 {
					return
				}
				dir := stack[len(stack)-1]
				stack = stack[:len(stack)-1]
				if errs != nil { // stopping: drain the stack without listing
					pending--
					cond.Broadcast()
					continue
				}
				mu.Unlock()
				subdirs, n, err := statDir(dir)
				if err == nil {
					err = ctx.Err()
				}
				mu.Lock()
				entries += n
				if err != nil {
					errs = errors.Join(errs, err)
				}
				if errs != nil {
					subdirs = nil
				}
				stack = append(stack, subdirs...)
				pending += len(subdirs) - 1
				cond.Broadcast()
			}
		}()
	}
	wg.Wait()
	return entries, errs
}

// statDir lists dir and reads each entry's metadata, returning its subdirectories and how
// many entries it holds.
func statDir(dir string) (subdirs []string, n int64, err error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("open %s: %w", dir, err)
	}
	f := os.NewFile(uintptr(fd), dir)
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, 0, fmt.Errorf("list %s: %w", dir, err)
	}
	var st unix.Stat_t
	for _, name := range names {
		if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return nil, n, fmt.Errorf("stat %s: %w", filepath.Join(dir, name), err)
		}
		n++
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			subdirs = append(subdirs, filepath.Join(dir, name))
		}
	}
	return subdirs, n, nil
}
