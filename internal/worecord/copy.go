package worecord

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/zeebo/blake3"
	"golang.org/x/sys/unix"
)

// Staging is where a write-once copy writes: paths are relative to the staging's tree and
// slash-separated. A target's incoming staging is one, reached through serve-staging's SFTP
// (dataplane.IncomingLink) or through the source host's own mount (RootStaging).
type Staging interface {
	Mkdir(p string) error
	// Create opens p for writing only, created or truncated.
	Create(p string) (io.WriteCloser, error)
}

// RootStaging is a staging reached through a mount of the writing host, confined by an
// os.Root as serve-staging confines a remote writer.
type RootStaging struct{ dirs *dirCache }

// NewRootStaging writes beneath root; Close it when the copy is done.
func NewRootStaging(root *os.Root) *RootStaging { return &RootStaging{dirs: newDirCache(root)} }

// Mkdir makes directory p (0700: the record sets its mode later).
func (s *RootStaging) Mkdir(p string) error {
	r, name, release, err := s.dirs.split(p)
	if err != nil {
		return err
	}
	defer release()
	return r.Mkdir(name, 0o700)
}

// Create opens p for writing, never through a symlink.
func (s *RootStaging) Create(p string) (io.WriteCloser, error) {
	r, name, release, err := s.dirs.split(p)
	if err != nil {
		return nil, err
	}
	defer release()
	return r.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0o600)
}

// Close closes the directories it kept open.
func (s *RootStaging) Close() { s.dirs.close() }

// CopyResult counts what Copy wrote.
type CopyResult struct {
	Dirs, Files, Symlinks int
	Hardlinks, Specials   int
	Bytes                 int64
	// Changed lists the files whose size, mtime or ctime moved while they were read: the
	// staging and the record hold what was read, and a later pass (quiesced) sends them again.
	Changed []string
}

// writebackFrom is the size from which a written file's writeback is started at once.
const writebackFrom = 256 << 10

// ErrCannotKeep means the source holds what a write-once copy cannot keep yet; the copy
// stops rather than drop it (the repository path keeps it).
var ErrCannotKeep = errors.New("write once cannot keep this yet")

// Copy writes the tree src into dst, each file's content once, on workers goroutines fed by
// one walk, and adds every entry to rec (not closed): a file's other names as hard links,
// FIFOs, sockets and devices without content, every entry with its extended attributes. It
// refuses, before writing it, a sparse file.
func Copy(src string, dst Staging, rec *Writer, workers int) (CopyResult, error) {
	c := &copier{src: src, dst: dst, rec: rec}
	files := make(chan fileJob, 1024)
	var wg sync.WaitGroup
	for range max(workers, 1) {
		wg.Go(func() {
			buf := make([]byte, 1<<20)
			for f := range files {
				if c.failed() {
					continue
				}
				c.fail(c.file(f, buf))
			}
		})
	}
	links := map[[2]uint64]string{} // (dev, inode) of a file with several names: its first path
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if c.failed() {
			return filepath.SkipAll
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return &os.PathError{Op: "lstat", Path: p, Err: err}
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			xs, err := readXattrs(p, -1)
			if err != nil {
				return err
			}
			if rel != "." {
				if err := dst.Mkdir(rel); err != nil {
					return fmt.Errorf("staging %q: %w", rel, err)
				}
			}
			return c.add(Entry{Type: Dir, Path: rel, Mode: st.Mode, UID: st.Uid, GID: st.Gid, MtimeNs: st.Mtim.Nano(), Xattrs: xs}, &c.res.Dirs, 0)
		case unix.S_IFREG:
			if st.Nlink > 1 {
				id := [2]uint64{st.Dev, st.Ino}
				if first, ok := links[id]; ok {
					return c.add(Entry{Type: Hardlink, Path: rel, Target: first}, &c.res.Hardlinks, 0)
				}
				links[id] = rel
			}
			files <- fileJob{rel: rel, st: st}
			return nil
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			xs, err := readXattrs(p, -1)
			if err != nil {
				return err
			}
			return c.add(Entry{Type: Symlink, Path: rel, UID: st.Uid, GID: st.Gid, MtimeNs: st.Mtim.Nano(), Target: target, Xattrs: xs}, &c.res.Symlinks, 0)
		}
		t, ok := specials[st.Mode&unix.S_IFMT]
		if !ok {
			return fmt.Errorf("%w: %s has file type %o", ErrCannotKeep, p, st.Mode&unix.S_IFMT)
		}
		xs, err := readXattrs(p, -1)
		if err != nil {
			return err
		}
		return c.add(Entry{Type: t, Path: rel, Mode: st.Mode, UID: st.Uid, GID: st.Gid, MtimeNs: st.Mtim.Nano(), Rdev: st.Rdev, Xattrs: xs}, &c.res.Specials, 0)
	})
	close(files)
	wg.Wait()
	c.fail(err)
	return c.res, c.err
}

// specials are the file types recorded without content.
var specials = map[uint32]Type{unix.S_IFIFO: Fifo, unix.S_IFSOCK: Socket, unix.S_IFCHR: Char, unix.S_IFBLK: Block}

// fileJob is one regular file the walk found.
type fileJob struct {
	rel string
	st  unix.Stat_t
}

// copier is one Copy's shared state.
type copier struct {
	src string
	dst Staging
	rec *Writer

	mu  sync.Mutex
	res CopyResult
	err error
}

func (c *copier) fail(err error) {
	if err == nil {
		return
	}
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
}

func (c *copier) failed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err != nil
}

// add records e and counts it (and its bytes).
func (c *copier) add(e Entry, count *int, bytes int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	*count++
	c.res.Bytes += bytes
	return c.rec.Add(e)
}

// file copies one regular file, hashing what it reads, and records it.
func (c *copier) file(f fileJob, buf []byte) error {
	p := filepath.Join(c.src, filepath.FromSlash(f.rel))
	if f.st.Size > 0 && f.st.Blocks*512 < f.st.Size {
		return fmt.Errorf("%w: %s is sparse (%d bytes in %d blocks)", ErrCannotKeep, p, f.st.Size, f.st.Blocks)
	}
	in, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	xs, err := readXattrs(p, int(in.Fd()))
	if err != nil {
		return err
	}
	var before, after unix.Stat_t
	if err := unix.Fstat(int(in.Fd()), &before); err != nil {
		return err
	}
	if before.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("%s changed into mode %o while it was copied", p, before.Mode&unix.S_IFMT)
	}
	out, err := c.dst.Create(f.rel)
	if err != nil {
		return fmt.Errorf("staging %q: %w", f.rel, err)
	}
	h := blake3.New()
	n, err := io.CopyBuffer(out, io.TeeReader(in, h), buf)
	if fd, ok := out.(interface{ Fd() uintptr }); ok && err == nil && n >= writebackFrom {
		// Start writing it to disk now, beside the next files, rather than all at the end
		// (the pull does the same: design.md, "A pull starts the writeback").
		_ = unix.SyncFileRange(int(fd.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copying %s into the staging: %w", p, err)
	}
	if err := unix.Fstat(int(in.Fd()), &after); err != nil {
		return err
	}
	if after.Size != before.Size || after.Mtim != before.Mtim || after.Ctim != before.Ctim || n != before.Size {
		c.mu.Lock()
		c.res.Changed = append(c.res.Changed, f.rel)
		c.mu.Unlock()
	}
	e := Entry{Type: File, Path: f.rel, Mode: before.Mode, UID: before.Uid, GID: before.Gid, MtimeNs: before.Mtim.Nano(), Size: n, Xattrs: xs}
	copy(e.Hash[:], h.Sum(nil))
	return c.add(e, &c.res.Files, n)
}
