package worecord

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/zeebo/blake3"
	"golang.org/x/sys/unix"
)

// ErrIncomplete means the staging does not hold every entry as its record says; the entries
// that failed were removed, so the next copy writes them again.
var ErrIncomplete = errors.New("the write-once staging does not match its record")

// Result counts what Check found and did.
type Result struct {
	Dirs, Files, Symlinks int
	Hardlinks, Specials   int   // other names of files; FIFOs, sockets, devices
	Bytes                 int64 // content re-hashed
	Removed               int   // entries the record lacks (or that failed), removed
}

// maxListed bounds the failures an error names.
const maxListed = 20

// Check brings the tree in root to exactly what entries (a verified record, Read) say, or
// fails: it removes every entry the record lacks, re-hashes every file against its recorded
// size and BLAKE3 hash, removes those that differ and fails naming them and every recorded
// file or directory the tree lacks; then it creates the recorded symlinks and sets every
// entry's owner, mode and mtime from the record (a file's as soon as its content matched,
// through the descriptor it was read by; nothing is published from a staging that failed). Nothing in the tree is followed through a
// symlink, and root confines every operation.
func Check(root *os.Root, entries []Entry, workers int) (Result, error) {
	var res Result
	byPath := make(map[string]*Entry, len(entries))
	for i := range entries {
		e := &entries[i]
		if _, dup := byPath[e.Path]; dup {
			return res, fmt.Errorf("%w: %q is recorded twice", ErrRecord, e.Path)
		}
		byPath[e.Path] = e
	}
	if e := byPath["."]; e == nil || e.Type != Dir {
		return res, fmt.Errorf("%w: it does not record the tree's root directory", ErrRecord)
	}
	for _, e := range entries {
		if e.Path == "." {
			continue
		}
		if p := byPath[path.Dir(e.Path)]; p == nil || p.Type != Dir {
			return res, fmt.Errorf("%w: %q is recorded without its parent directory", ErrRecord, e.Path)
		}
		if t := byPath[e.Target]; e.Type == Hardlink && (t == nil || t.Type != File) {
			return res, fmt.Errorf("%w: hard link %q names %q, which is not a recorded file", ErrRecord, e.Path, e.Target)
		}
	}

	var failed []string
	seen := make(map[string]bool, len(entries))
	var files []*Entry
	var extra []string
	err := fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == "." {
			return nil
		}
		e := byPath[p]
		if e == nil || !sameType(e.Type, d.Type()) {
			extra = append(extra, p)
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		seen[p] = true
		if e.Type == File {
			files = append(files, e)
		}
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("listing the staging: %w", err)
	}
	for _, p := range extra {
		if err := root.RemoveAll(p); err != nil {
			return res, fmt.Errorf("removing %q, which its record lacks: %w", p, err)
		}
		res.Removed++
	}

	dirs := newDirCache(root)
	defer dirs.close()
	bad, bytes := hashAll(dirs, files, workers)
	res.Bytes = bytes
	for _, f := range bad {
		failed = append(failed, fmt.Sprintf("%q: %s", f.path, f.why))
		if err := root.Remove(f.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return res, fmt.Errorf("removing %q, which differs from its record: %w", f.path, err)
		}
		res.Removed++
	}
	for _, e := range entries {
		if !e.Type.made() && e.Path != "." && !seen[e.Path] {
			failed = append(failed, fmt.Sprintf("%q: missing", e.Path))
		}
	}
	if len(failed) > 0 {
		slices.Sort(failed)
		n := len(failed)
		if n > maxListed {
			failed = append(failed[:maxListed], fmt.Sprintf("and %d more", n-maxListed))
		}
		return res, fmt.Errorf("%w: %d entries: %s", ErrIncomplete, n, strings.Join(failed, "; "))
	}

	if err := makeEntries(root, dirs, entries); err != nil {
		return res, err
	}
	return res, setMeta(root, entries, &res)
}

// makeEntries creates what the writer cannot: symlinks, FIFOs, sockets and devices, then
// the hard links to the files that were checked.
func makeEntries(root *os.Root, dirs *dirCache, entries []Entry) error {
	for _, links := range []bool{false, true} {
		for _, e := range entries {
			if !e.Type.made() || (e.Type == Hardlink) != links {
				continue
			}
			var err error
			switch e.Type {
			case Symlink:
				err = root.Symlink(e.Target, e.Path)
			case Hardlink:
				err = root.Link(e.Target, e.Path)
			default:
				err = mknod(dirs, &e)
			}
			if err != nil {
				return fmt.Errorf("creating %q: %w", e.Path, err)
			}
		}
	}
	return nil
}

// mknod makes a FIFO, socket or device node (mode 0600 until setMeta).
func mknod(dirs *dirCache, e *Entry) error {
	r, name, release, err := dirs.split(e.Path)
	if err != nil {
		return err
	}
	defer release()
	d, err := r.Open(".")
	if err != nil {
		return err
	}
	defer d.Close()
	kind := map[Type]uint32{Fifo: unix.S_IFIFO, Socket: unix.S_IFSOCK, Char: unix.S_IFCHR, Block: unix.S_IFBLK}[e.Type]
	return unix.Mknodat(int(d.Fd()), name, kind|0o600, int(e.Rdev))
}

// sameType reports whether a listed entry of type t can be the recorded one. A symlink is
// never in a staging the writer made (the server refuses them), so one found is extra.
func sameType(want Type, t fs.FileMode) bool {
	switch want {
	case Dir:
		return t == fs.ModeDir
	case File:
		return t.IsRegular()
	}
	return false
}

// failure is a file that differs from its record.
type failure struct{ path, why string }

// hashAll re-hashes files on workers goroutines and returns those that differ and the
// bytes read.
func hashAll(dirs *dirCache, files []*Entry, workers int) (bad []failure, total int64) {
	var mu sync.Mutex
	next := make(chan *Entry)
	var wg sync.WaitGroup
	for range max(workers, 1) {
		wg.Go(func() {
			buf := make([]byte, 256<<10)
			for e := range next {
				n, why := hashOne(dirs, e, buf)
				mu.Lock()
				total += n
				if why != "" {
					bad = append(bad, failure{e.Path, why})
				}
				mu.Unlock()
			}
		})
	}
	for _, e := range files {
		next <- e
	}
	close(next)
	wg.Wait()
	return bad, total
}

// hashOne checks one file's size and hash and, when they match, sets its owner, mode and
// mtime through the same descriptor; it returns the bytes read and why it differs.
func hashOne(dirs *dirCache, e *Entry, buf []byte) (int64, string) {
	r, name, release, err := dirs.split(e.Path)
	if err != nil {
		return 0, err.Error()
	}
	f, err := r.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	release()
	if err != nil {
		return 0, err.Error()
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err.Error()
	}
	if !st.Mode().IsRegular() {
		return 0, "not a regular file"
	}
	if st.Size() != e.Size {
		return 0, fmt.Sprintf("size %d, recorded %d", st.Size(), e.Size)
	}
	h := blake3.New()
	n, err := io.CopyBuffer(h, f, buf)
	if err != nil {
		return n, err.Error()
	}
	if n != e.Size || [32]byte(h.Sum(nil)) != e.Hash {
		return n, "content differs from its record"
	}
	if err := setOne(int(f.Fd()), "", unix.AT_EMPTY_PATH, e); err != nil {
		return n, "setting its metadata: " + err.Error()
	}
	return n, ""
}

// setMeta sets owner, mode and mtime of the symlinks, then of the directories deepest first,
// so that nothing changes a directory after its mtime is set (hashOne set the files').
func setMeta(root *os.Root, entries []Entry, res *Result) error {
	order := make([]*Entry, 0, len(entries))
	for i := range entries {
		order = append(order, &entries[i])
	}
	depth := func(e *Entry) int {
		if e.Path == "." {
			return 0
		}
		return strings.Count(e.Path, "/") + 1
	}
	slices.SortStableFunc(order, func(a, b *Entry) int {
		if (a.Type == Dir) != (b.Type == Dir) {
			if a.Type == Dir {
				return 1
			}
			return -1
		}
		if a.Type == Dir {
			return cmp.Compare(depth(b), depth(a))
		}
		return cmp.Compare(a.Path, b.Path)
	})
	dirs := map[string]*os.File{}
	defer func() {
		for _, f := range dirs {
			f.Close()
		}
	}()
	for _, e := range order {
		switch e.Type {
		case File: // set by hashOne once its content matched
			res.Files++
			continue
		case Hardlink: // its file's
			res.Hardlinks++
			continue
		}
		dirPath, name := path.Dir(e.Path), path.Base(e.Path)
		flags := unix.AT_SYMLINK_NOFOLLOW
		if e.Path == "." {
			dirPath, name, flags = ".", "", unix.AT_EMPTY_PATH
		}
		d := dirs[dirPath]
		if d == nil {
			var err error
			if d, err = root.OpenFile(dirPath, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0); err != nil {
				return fmt.Errorf("opening %q: %w", dirPath, err)
			}
			dirs[dirPath] = d
		}
		if err := setOne(int(d.Fd()), name, flags, e); err != nil {
			return fmt.Errorf("setting the metadata of %q: %w", e.Path, err)
		}
		switch {
		case e.Type == Dir:
			res.Dirs++
		case e.Type == Symlink:
			res.Symlinks++
		default:
			res.Specials++
		}
	}
	return nil
}

// setOne sets one entry's owner, then its mode (chown clears setuid), its extended
// attributes (chown clears capabilities), then its mtime; atime is left as it is. The entry
// is name in the directory fd dfd, or dfd itself when name is "". A named entry is reached
// through an O_PATH descriptor opened without following a symlink (no device is opened),
// and one that is not of its recorded type is refused.
func setOne(dfd int, name string, flags int, e *Entry) error {
	fd := dfd
	if name != "" {
		o, err := unix.Openat(dfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(o)
		var st unix.Stat_t
		if err := unix.Fstat(o, &st); err != nil {
			return err
		}
		if (st.Mode&unix.S_IFMT == unix.S_IFLNK) != (e.Type == Symlink) {
			return fmt.Errorf("it is of file type %o, not what its record says", st.Mode&unix.S_IFMT)
		}
		fd = o
	}
	if err := unix.Fchownat(fd, "", int(e.UID), int(e.GID), unix.AT_EMPTY_PATH); err != nil {
		return err
	}
	if e.Type == Symlink {
		// Only trusted. and security. attributes exist on symlinks; name is not followed.
		for _, x := range e.Xattrs {
			p := "/proc/self/fd/" + strconv.Itoa(dfd) + "/" + name
			if err := unix.Lsetxattr(p, x.Name, x.Value, 0); err != nil {
				return fmt.Errorf("setting extended attribute %q: %w", x.Name, err)
			}
		}
	} else {
		// fchmod refuses O_PATH descriptors; /proc/self/fd leads to the inode itself.
		if err := unix.Fchmodat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), e.Mode&0o7777, 0); err != nil {
			return err
		}
		if err := setXattrs(fd, e.Xattrs); err != nil {
			return err
		}
	}
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, unix.NsecToTimespec(e.MtimeNs)}
	return unix.UtimesNanoAt(dfd, name, ts, flags)
}
