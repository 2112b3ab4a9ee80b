package worecord

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
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
	Create(p string) (StagedFile, error)
}

// StagedFile is a file being written into a staging: written in order, or at offsets with
// holes left between them and extended to its size (a sparse file).
type StagedFile interface {
	io.Writer
	io.WriterAt
	io.Closer
	Truncate(size int64) error
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
func (s *RootStaging) Create(p string) (StagedFile, error) {
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

// Copy writes the tree src into dst, each file's content once (a sparse file's data only,
// its holes left as holes), on workers goroutines fed by
// one walk, and adds every entry to rec (not closed): a file's other names as hard links,
// FIFOs, sockets and devices without content, every entry with its extended attributes.
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

// copySparse copies the data ranges of in (SEEK_DATA/SEEK_HOLE) to the same offsets of
// out, hashes the whole content (the holes as zeros, as they read) and extends out to size.
// It returns the bytes of content, size unless in changed meanwhile.
func copySparse(out StagedFile, in *os.File, h io.Writer, size int64, buf []byte) (int64, error) {
	fd := int(in.Fd())
	zeros := make([]byte, 64<<10)
	var pos int64 // content hashed so far
	for pos < size {
		data, err := unix.Seek(fd, pos, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			data = size // only a hole is left
		} else if err != nil {
			return pos, err
		}
		data = min(data, size)
		for ; pos < data; pos += int64(min(len(zeros), int(data-pos))) {
			h.Write(zeros[:min(len(zeros), int(data-pos))])
		}
		if pos >= size {
			break
		}
		hole, err := unix.Seek(fd, pos, unix.SEEK_HOLE)
		if err != nil {
			return pos, err
		}
		hole = min(hole, size)
		for pos < hole {
			k, err := in.ReadAt(buf[:min(len(buf), int(hole-pos))], pos)
			if k > 0 {
				h.Write(buf[:k])
				if _, werr := out.WriteAt(buf[:k], pos); werr != nil {
					return pos, werr
				}
				pos += int64(k)
			}
			if err == io.EOF {
				return pos, out.Truncate(pos) // it shrank meanwhile: Changed
			}
			if err != nil {
				return pos, err
			}
		}
	}
	return pos, out.Truncate(size)
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
	var n int64
	if before.Size > 0 && before.Blocks*512 < before.Size {
		n, err = copySparse(out, in, h, before.Size, buf)
	} else {
		// A reader of unknown length would make an SFTP file write one packet at a time;
		// a LimitedReader lets it keep many in flight.
		n, err = io.CopyBuffer(out, &io.LimitedReader{R: io.TeeReader(in, h), N: math.MaxInt64}, buf)
	}
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
