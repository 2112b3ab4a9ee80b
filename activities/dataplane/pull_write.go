package dataplane

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	kfs "github.com/kopia/kopia/fs"
	"github.com/kopia/kopia/repo/content"
	"github.com/kopia/kopia/repo/object"
	"github.com/kopia/kopia/snapshot"
	"golang.org/x/sys/unix"
)

const copyChunk = 1 << 20

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyChunk); return &b }}

// writeDir writes ents of g through one directory fd.
func (p *puller) writeDir(g *writeGroup, ents []writeEnt) error {
	fd, err := openBeneath(p.stagingFd, g.dir, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return describeRefusal(p.stagingFd, p.staging, g.dir, err)
	}
	defer unix.Close(fd) //nolint:errcheck

	for _, e := range ents {
		if err := p.write(fd, g, e); err != nil {
			return err
		}
	}

	return nil
}

// write creates one file or symlink from the repository directly under its
// final name in the private staging dir (dirFd is its directory). O_EXCL
// (symlink(2) likewise) never opens an existing inode. A file that fails
// half-way is removed; one left by a crash has the wrong mtime or content,
// and a resuming pull checks both.
func (p *puller) write(dirFd int, g *writeGroup, e writeEnt) error {
	if err := p.g.check(true); err != nil {
		return err
	}

	rel := g.rel(e)
	p.rp.setPath(rel)

	var (
		hashed bool
		err    error
	)

	if e.de.Type == snapshot.EntryTypeSymlink {
		err = p.writeSymlink(dirFd, rel, e.de)
	} else {
		hashed, err = p.writeFile(dirFd, rel, e.de)
	}

	if err != nil {
		if !errors.Is(err, fs.ErrExist) { // never remove what another step created
			_ = unix.Unlinkat(dirFd, e.de.Name, 0)
		}

		if gerr := p.g.tripped(); gerr != nil {
			return gerr
		}

		return fmt.Errorf("restoring %s: %w", rel, err)
	}

	if hashed {
		g.dt.flags[e.idx] = trustContent // this file's own byte: no lock
	}

	if xs := p.xattrsOf[rel]; len(xs) > 0 && e.de.Type == snapshot.EntryTypeFile {
		// Before the stamp, so the trust record holds the ctime with them set.
		if err := setXattrs(dirFd, e.de.Name, rel, xs, p.refuse); err != nil {
			return fmt.Errorf("restoring %s: %w", rel, err)
		}
	}

	if e.de.Type == snapshot.EntryTypeFile {
		var st unix.Stat_t
		if unix.Fstatat(dirFd, e.de.Name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
			g.dt.stamps[e.idx] = stampOf(&st)
		}
	}

	n := p.restored.Add(1)
	p.rp.addFile(0)

	if p.hooks.afterFileRestored != nil {
		p.hooks.afterFileRestored(n)
	}

	return nil
}

// errNotPlain: the object has compressed contents, which cannot be hashed
// against their IDs while writing.
var errNotPlain = errors.New("object has compressed contents")

// writeFile creates dst with the object's content, owner, mode and mtime. It
// reports whether every byte written was hashed against the image's content
// IDs (with hashWrites, unless the object has compressed contents).
func (p *puller) writeFile(dirFd int, dst string, de *snapshot.DirEntry) (bool, error) {
	// Created with its permissions where the umask keeps them and chown leaves them: then
	// no chmod is needed. The staging dir is private, so they show nothing while it is
	// written. Verification checks the mode as for any entry.
	mode := os.FileMode(de.Permissions) & kfs.ModBits
	perm := uint32(mode & os.ModePerm)
	createMode, chmod := uint32(0o600), true
	if um, ok := processUmask(); ok && mode&^os.ModePerm == 0 && perm&um == 0 {
		createMode, chmod = perm, false
	}

	fd, err := unix.Openat(dirFd, de.Name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, createMode)
	if err != nil {
		return false, &fs.PathError{Op: "create", Path: dst, Err: err}
	}

	// The descriptor itself, not an *os.File: one fcntl and a finalizer fewer a file.
	sf := &sparseFile{fd: fd}

	hashed := p.hashWrites

	n, err := p.writeObject(sf, de.ObjectID, de.FileSize, 0)
	if errors.Is(err, errNotPlain) {
		hashed = false

		if err = unix.Ftruncate(fd, 0); err == nil {
			sf.end = 0
			n, err = p.copyObject(sf, de.ObjectID)
		}
	}

	if err == nil && n != de.FileSize {
		err = fmt.Errorf("image object %v has %d bytes, entry says %d", de.ObjectID, n, de.FileSize)
	}

	// Zeros were skipped, not written: the size makes trailing ones holes. A file that
	// ends in data already has its size (a truncate to it would still update the inode:
	// 1.6 s of a full pull of 200,000 small files; asking the file for its size was
	// another syscall a file).
	if err == nil && sf.end != n {
		if err = unix.Ftruncate(fd, n); err != nil {
			err = fmt.Errorf("truncate %s: %w", dst, err)
		}
	}

	if err == nil && !p.hooks.noEarlyWriteback {
		if sf.end >= writebackMin {
			startWriteback(fd)
		} else {
			p.flush.add(sf.end)
		}
	}

	// Owner and mode through the open fd (no path lookups); chown first, it
	// clears setuid/setgid.
	if err == nil && p.isRoot {
		if err = unix.Fchown(fd, int(de.UserID), int(de.GroupID)); err != nil {
			err = fmt.Errorf("chown %s: %w", dst, err)
		}
	}

	if err == nil && chmod {
		if err = unix.Fchmod(fd, perm|unixModeExtra(mode)); err != nil {
			err = fmt.Errorf("chmod %s: %w", dst, err)
		}
	}

	if cerr := unix.Close(fd); err == nil && cerr != nil {
		err = fmt.Errorf("close %s: %w", dst, cerr)
	}

	if err != nil {
		return false, err
	}

	return hashed, setMtimeAt(dirFd, de.Name, de, false)
}

// processUmask is the agent's umask, read once (the agent never changes it).
var processUmask = sync.OnceValues(readUmask)

// readUmask reads the process's umask from /proc/self/status (umask(2) would set it, for
// every thread, for a moment); ok is false where the kernel does not say it (before Linux
// 4.7).
func readUmask() (uint32, bool) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Umask:"); ok {
			m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32)
			return uint32(m), err == nil
		}
	}
	return 0, false
}

// writeObject writes object oid to f at offset off, content by content; with
// hashWrites it checks that each content's bytes hash to its ID with the
// repository's keyed hash (the same check verification does on a read-back).
// It returns the bytes written, errNotPlain for compressed contents.
func (p *puller) writeObject(f *sparseFile, oid object.ID, limit, off int64) (int64, error) {
	if idx, ok := oid.IndexObjectID(); ok {
		entries, err := object.LoadIndexObject(p.ctx, p.h.cr, idx)
		if err != nil {
			return 0, fmt.Errorf("loading index object %v: %w", idx, err)
		}

		var total int64

		for _, e := range entries {
			if e.Start != total || total+e.Length > limit {
				return 0, fmt.Errorf("index object %v: entry %d+%d does not continue at %d within %d bytes", idx, e.Start, e.Length, total, limit)
			}

			n, err := p.writeObject(f, e.Object, e.Length, off+total)
			if err != nil {
				return 0, err
			}

			total += n
		}

		return total, nil
	}

	cid, compressed, ok := oid.ContentID()
	if !ok {
		return 0, fmt.Errorf("unsupported object ID %v", oid)
	}

	if compressed {
		return 0, errNotPlain
	}

	if err := p.g.check(false); err != nil {
		return 0, err
	}

	// A content known to be zeros: a hole, nothing to read or write (its bytes
	// were hashed against cid when first seen, like any content's).
	if p.zeros.has(cid, limit) {
		p.rp.addBytes(limit)
		return limit, nil
	}

	data, err := p.dr.ContentReader().GetContent(p.ctx, cid)
	if err != nil {
		return 0, fmt.Errorf("reading image content %v: %w", cid, err)
	}

	if int64(len(data)) > limit {
		return 0, fmt.Errorf("image content %v has %d bytes, more than the %d expected", cid, len(data), limit)
	}

	if p.hashWrites {
		got, err := content.IDFromHash(cid.Prefix(), p.h.hash(data))
		if err != nil {
			return 0, fmt.Errorf("hashing: %w", err)
		}

		if got != cid {
			return 0, fmt.Errorf("%w: image content %v hashes to %v", ErrVerify, cid, got)
		}
	}

	if allZero(data) {
		p.zeros.add(cid, int64(len(data)))
	} else {
		if err := waitBytes(p.ctx, p.lim, len(data)); err != nil {
			return 0, err
		}
		if err := f.write(data, off); err != nil {
			return 0, err
		}
	}

	p.rp.addBytes(int64(len(data)))

	return int64(len(data)), nil
}

// copyObject streams object oid into f through kopia's object reader (for
// objects writeObject cannot hash); verification reads such files back.
func (p *puller) copyObject(f *sparseFile, oid object.ID) (int64, error) {
	r, err := p.dr.OpenObject(p.ctx, oid)
	if err != nil {
		return 0, fmt.Errorf("opening image object %v: %w", oid, err)
	}
	defer r.Close()

	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)

	var n int64

	for {
		if err := p.g.check(false); err != nil {
			return n, err
		}

		m, rerr := io.ReadFull(r, *bp)
		if m > 0 {
			if err := waitBytes(p.ctx, p.lim, m); err != nil {
				return n, err
			}
			if err := f.write((*bp)[:m], n); err != nil {
				return n, err
			}

			n += int64(m)
			p.rp.addBytes(int64(m))
		}

		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			return n, nil
		}

		if rerr != nil {
			return n, fmt.Errorf("reading image object %v: %w", oid, rerr)
		}
	}
}

func (p *puller) writeSymlink(dirFd int, rel string, de *snapshot.DirEntry) error {
	target, err := readImageSymlink(p.ctx, p.dr, de)
	if err != nil {
		return err
	}

	if err := unix.Symlinkat(target, dirFd, de.Name); err != nil {
		return &fs.PathError{Op: "symlink", Path: rel, Err: err}
	}

	if p.isRoot {
		if err := unix.Fchownat(dirFd, de.Name, int(de.UserID), int(de.GroupID), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown %s: %w", rel, err)
		}
	}

	return setMtimeAt(dirFd, de.Name, de, true)
}

// setDirAttrs applies owner (when root), mode, and mtime (atime = mtime, as
// kopia does) to directory rel beneath dirFd (at base), through an fd of the
// directory itself. Owner first: chown clears setuid/setgid bits.
func (p *puller) setDirAttrs(dirFd int, base, rel string, de *snapshot.DirEntry) error {
	fd, err := openBeneath(dirFd, rel, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return describeRefusal(dirFd, base, rel, err)
	}
	defer unix.Close(fd) //nolint:errcheck

	full := filepath.Join(base, filepath.FromSlash(rel))

	if p.isRoot {
		if err := unix.Fchown(fd, int(de.UserID), int(de.GroupID)); err != nil {
			return fmt.Errorf("chown %s: %w", full, err)
		}
	}

	if err := unix.Fchmod(fd, uint32(os.FileMode(de.Permissions)&os.ModePerm)|unixModeExtra(os.FileMode(de.Permissions))); err != nil {
		return fmt.Errorf("chmod %s: %w", full, err)
	}

	ts := unix.NsecToTimespec(de.ModTime.ToTime().UnixNano())
	if err := futimens(fd, ts); err != nil {
		return fmt.Errorf("setting times of %s: %w", full, err)
	}

	return nil
}

// futimens sets atime and mtime of the open file fd (utimensat with a NULL path).
func futimens(fd int, ts unix.Timespec) error {
	times := [2]unix.Timespec{ts, ts}
	if _, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&times[0])), 0, 0, 0); errno != 0 {
		return errno
	}

	return nil
}

// setMtimeAt sets atime and mtime of name in dirFd to the entry's mtime, to the nanosecond.
func setMtimeAt(dirFd int, name string, de *snapshot.DirEntry, symlink bool) error {
	ts := unix.NsecToTimespec(de.ModTime.ToTime().UnixNano())

	flags := 0
	if symlink {
		flags = unix.AT_SYMLINK_NOFOLLOW
	}

	if err := unix.UtimesNanoAt(dirFd, name, []unix.Timespec{ts, ts}, flags); err != nil {
		return fmt.Errorf("setting times of %s: %w", name, err)
	}

	return nil
}
