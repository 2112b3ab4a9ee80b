package dataplane

// The push's view of the source tree: kopia's fs interfaces implemented over directory fds,
// in place of kopia's localfs. localfs lists a directory by its full path, lstats every
// entry by full path and opens files by full path, following symlinks: a file swapped for a
// symlink between the listing and the open would be followed, and the content of a file
// outside the dataset would enter the image (the class of rsync's CVE-2024-12747); it also
// takes a name ending in ".kopia-entry" for one of its placeholders (a file so named could
// not be pushed). Here every directory is opened beneath the source root's fd with no
// symlink in any component (openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, or a walk by
// O_NOFOLLOW components) and listed from that fd, every entry is stat'ed relative to it,
// and every file is opened the same way beneath the root, must still be a regular file and
// have the device, size and mtime that were listed. A name that is not valid UTF-8 is given
// to kopia as its image name (names.go); one whose image name is a sibling's real name is
// left out (KindName). A quiesced push's scan (unsupported.go) is fed from this listing, so
// the tree is walked once, not twice.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/kopia/kopia/fs"
	"github.com/kopia/kopia/snapshot"
	"golang.org/x/sys/unix"
)

// ErrSourceChanged means an entry of the source is no longer what the push listed: a
// regular file or directory became a symlink or something else, or left the tree.
var ErrSourceChanged = errors.New("source changed during the push")

// sourceRoot is the source tree of one push.
type sourceRoot struct {
	fd    int    // the source dir, O_PATH; closed by the push
	path  string // the source dir, for messages
	hooks *testHooks
	// lim bounds what the push reads from the source (nil: unlimited); ctx ends its waits.
	lim Limiter
	ctx context.Context
	// scan, when set, is fed every entry listed (the quiesced push's extras and findings);
	// listed holds the directories already fed to it, so none is counted twice.
	scan   *scan
	mu     sync.Mutex
	listed map[string]bool
	// reuse, when set, takes unchanged directories from the previous image (reuse.go);
	// prev is the previous image's root.
	reuse *reusePlan
	prev  *snapshot.DirEntry
	dev   uint64 // the root's device: the entries a push takes from the previous image
	// racyFrom, when not 0, makes this a precopy that keeps a view: a regular file changed
	// at or after it (ns) is listed with racyMtime (precopy_view.go).
	racyFrom int64
}

// openSourceRoot opens dir (never through a symlink in its last component).
func openSourceRoot(dir string, hooks *testHooks) (*sourceRoot, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening source %s: %w", dir, err)
	}
	return &sourceRoot{fd: fd, path: dir, hooks: hooks}, nil
}

func (s *sourceRoot) close() { unix.Close(s.fd) } //nolint:errcheck

// dir is the source root as a kopia directory.
func (s *sourceRoot) dir() (fs.Directory, error) {
	var st unix.Stat_t
	if err := unix.Fstat(s.fd, &st); err != nil {
		return nil, fmt.Errorf("opening source %s: %w", s.path, err)
	}
	s.dev = st.Dev
	return sourceDir{sourceEntry: s.entry(".", filepath.Base(s.path), &st), prev: s.prev}, nil
}

// entry is the entry at rel (raw names) with stat st, named name in the image.
func (s *sourceRoot) entry(rel, name string, st *unix.Stat_t) sourceEntry {
	e := sourceEntry{s: s, rel: rel, name: name, mode: st.Mode, size: st.Size, mtime: st.Mtim.Nano(),
		uid: st.Uid, gid: st.Gid, dev: st.Dev, rdev: st.Rdev}
	e.racy = s.racyFrom != 0 && s.racy(st)
	return e
}

// typed is e as the kopia entry its type makes it: FIFOs, sockets and devices are unknown
// to kopia (its uploader skips them; the extras keep them).
func (e sourceEntry) typed() fs.Entry {
	switch e.mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return sourceDir{sourceEntry: e}
	case unix.S_IFREG:
		return sourceFile{e}
	case unix.S_IFLNK:
		return sourceSymlink{e}
	}
	return sourceError{e, fs.ErrUnknown}
}

// firstListing reports whether directory rel is listed for the first time (kopia lists each
// once; a second listing must not feed the scan again).
func (s *sourceRoot) firstListing(rel string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.listed == nil {
		s.listed = map[string]bool{}
	}
	if s.listed[rel] {
		return false
	}
	s.listed[rel] = true
	return true
}

// sourceEntry is one listed entry: what fstatat said of it when its directory was listed.
type sourceEntry struct {
	s         *sourceRoot
	rel       string // raw names below the root
	name      string // in the image
	mode      uint32
	size      int64
	mtime     int64
	uid, gid  uint32
	dev, rdev uint64
	racy      bool // a precopy's view records racyMtime for it (precopy_view.go)
}

func (e sourceEntry) Name() string      { return e.name }
func (e sourceEntry) Size() int64       { return e.size }
func (e sourceEntry) Mode() os.FileMode { return fileMode(e.mode) }
func (e sourceEntry) ModTime() time.Time {
	if e.racy {
		return time.Unix(0, racyMtime)
	}
	return time.Unix(0, e.mtime)
}
func (e sourceEntry) IsDir() bool { return e.mode&unix.S_IFMT == unix.S_IFDIR }
func (e sourceEntry) Sys() any    { return nil }
func (e sourceEntry) Close()      {}

func (e sourceEntry) Owner() fs.OwnerInfo   { return fs.OwnerInfo{UserID: e.uid, GroupID: e.gid} }
func (e sourceEntry) Device() fs.DeviceInfo { return fs.DeviceInfo{Dev: e.dev, Rdev: e.rdev} }

func (e sourceEntry) LocalFilesystemPath() string { return filepath.Join(e.s.path, e.rel) }

// fileMode is st_mode as Go's os package gives it (and kopia's localfs took it).
func fileMode(m uint32) os.FileMode {
	fm := os.FileMode(m & 0o777)
	switch m & unix.S_IFMT {
	case unix.S_IFBLK:
		fm |= os.ModeDevice
	case unix.S_IFCHR:
		fm |= os.ModeDevice | os.ModeCharDevice
	case unix.S_IFDIR:
		fm |= os.ModeDir
	case unix.S_IFIFO:
		fm |= os.ModeNamedPipe
	case unix.S_IFLNK:
		fm |= os.ModeSymlink
	case unix.S_IFSOCK:
		fm |= os.ModeSocket
	}
	return fm | modeExtra(m)
}

// changed names rel and what openBeneath said about it.
func changed(rel string, err error) error {
	switch {
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.EXDEV), errors.Is(err, unix.ENOTDIR):
		return fmt.Errorf("%w: %s is reached through a symlink now", ErrSourceChanged, ShowPath(rel))
	case errors.Is(err, unix.ENOENT):
		return fmt.Errorf("%w: %s is gone", ErrSourceChanged, ShowPath(rel))
	}
	return fmt.Errorf("opening source %s: %w", ShowPath(rel), err)
}

type sourceDir struct {
	sourceEntry
	// prev is the directory's entry in the previous image of a push with a reuse plan (nil:
	// none, or no plan); reuse says the push takes it as it is.
	prev  *snapshot.DirEntry
	reuse bool
}

// Size is 0 for a directory, as kopia's localfs has it.
func (d sourceDir) Size() int64                      { return 0 }
func (d sourceDir) SupportsMultipleIterations() bool { return true }

func (d sourceDir) Child(_ context.Context, name string) (fs.Entry, error) {
	fd, err := openBeneath(d.s.fd, d.rel, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return nil, changed(d.rel, err)
	}
	defer unix.Close(fd) //nolint:errcheck
	var st unix.Stat_t
	if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, fs.ErrEntryNotFound
		}
		return nil, fmt.Errorf("source %s: %w", ShowPath(path.Join(d.rel, name)), err)
	}
	return d.s.entry(path.Join(d.rel, name), imageName(name), &st).typed(), nil
}

// Iterate lists the directory from an fd opened beneath the root (no symlink followed).
func (d sourceDir) Iterate(ctx context.Context) (fs.DirectoryIterator, error) {
	fd, err := openBeneath(d.s.fd, d.rel, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, changed(d.rel, err)
	}
	it := &sourceIter{d: d, fd: fd, f: os.NewFile(uintptr(fd), d.LocalFilesystemPath())}
	if it.prev, err = d.s.previousOf(ctx, d); err != nil {
		it.Close()
		return nil, err
	}
	if names, named, ok := d.s.reuse.partialNames(d.rel, it.prev); ok {
		// Only the named entries are stat'ed; the others are the previous image's.
		it.names, it.partial = slices.Clone(names), true
		for name, de := range it.prev {
			if !named[name] {
				it.kept = append(it.kept, de)
			}
		}
	}
	if h := d.s.hooks; h != nil && h.afterSourceList != nil {
		h.afterSourceList(d.rel)
	}
	if d.s.scan != nil && d.s.firstListing(d.rel) {
		it.scan = d.s.scan
		if d.rel == "." {
			it.scan.rootXattrs(fd)
		}
	}
	return it, nil
}

// sourceIter lists one directory: a batch of names at a time, each stat'ed relative to the
// directory's fd.
type sourceIter struct {
	d     sourceDir
	fd    int
	f     *os.File // owns fd
	names []string
	scan  *scan // nil: not fed to the scan
	// prev is the directory's entries in the previous image, by image name (nil: no reuse).
	prev map[string]*snapshot.DirEntry
	// partial: the directory is not listed; names holds the entries to stat and kept the
	// previous image's entries of the others.
	partial bool
	kept    []*snapshot.DirEntry
}

func (i *sourceIter) Close() { i.f.Close() } //nolint:errcheck

func (i *sourceIter) Next(context.Context) (fs.Entry, error) {
	for {
		if len(i.kept) > 0 {
			de := i.kept[0]
			i.kept = i.kept[1:]
			e, err := i.d.s.previousEntry(i.d, de)
			if err != nil {
				return nil, err
			}
			return i.d.s.withPrevious(e, i.prev), nil
		}
		if len(i.names) == 0 {
			if i.partial {
				return nil, nil
			}
			names, err := i.f.Readdirnames(256)
			if len(names) == 0 {
				if err == nil || errors.Is(err, io.EOF) {
					return nil, nil
				}
				return nil, fmt.Errorf("listing source %s: %w", ShowPath(i.d.rel), err)
			}
			i.names = names
		}
		n := i.names[0]
		i.names = i.names[1:]
		rel := path.Join(i.d.rel, n)
		var st unix.Stat_t
		if err := unix.Fstatat(i.fd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			switch {
			case errors.Is(err, unix.ENOENT):
				continue // gone since the listing
			case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
				// An entry kopia records as an error (the push fails on it).
				return sourceError{sourceEntry{s: i.d.s, rel: rel, name: imageName(n)}, err}, nil
			}
			return nil, fmt.Errorf("source %s: %w", ShowPath(rel), err)
		}
		if i.scan != nil {
			i.scan.listed(i.fd, rel, n, &st)
		}
		img := imageName(n)
		if img != n && i.taken(img) {
			continue // its image name is a sibling's: left out (KindName)
		}
		return i.d.s.withPrevious(i.d.s.entry(rel, img, &st).typed(), i.prev), nil
	}
}

// taken reports whether the directory has an entry named img.
func (i *sourceIter) taken(img string) bool {
	var st unix.Stat_t
	return unix.Fstatat(i.fd, img, &st, unix.AT_SYMLINK_NOFOLLOW) == nil
}

// sourceError is an entry kopia records as an error, or skips (fs.ErrUnknown: FIFOs,
// sockets and devices, which the extras keep).
type sourceError struct {
	sourceEntry
	err error
}

func (e sourceError) ErrorInfo() error { return e.err }

type sourceSymlink struct{ sourceEntry }

// Readlink reads the link through its parent opened beneath the root.
func (l sourceSymlink) Readlink(context.Context) (string, error) {
	fd, err := openBeneath(l.s.fd, path.Dir(l.rel), unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return "", changed(path.Dir(l.rel), err)
	}
	defer unix.Close(fd) //nolint:errcheck
	for n := 256; ; n *= 2 {
		buf := make([]byte, n)
		m, err := unix.Readlinkat(fd, path.Base(l.rel), buf)
		switch {
		case errors.Is(err, unix.EINVAL):
			return "", fmt.Errorf("%w: %s is no longer a symlink", ErrSourceChanged, ShowPath(l.rel))
		case errors.Is(err, unix.ENOENT):
			return "", changed(l.rel, err)
		case err != nil:
			return "", fmt.Errorf("source %s: %w", ShowPath(l.rel), err)
		case m < n:
			return string(buf[:m]), nil
		}
	}
}

// Resolve is not used by a push (symlinks are kept as links, never followed).
func (l sourceSymlink) Resolve(context.Context) (fs.Entry, error) {
	return nil, fmt.Errorf("source %s: symlinks are not followed", ShowPath(l.rel))
}

type sourceFile struct{ sourceEntry }

// Open opens the file beneath the root, non-blocking (a FIFO swapped in must not hang the
// push), and refuses anything that is not a regular file.
func (f sourceFile) Open(context.Context) (fs.Reader, error) {
	if h := f.s.hooks; h != nil && h.beforeSourceOpen != nil {
		h.beforeSourceOpen(f.rel)
	}
	fd, err := openBeneath(f.s.fd, f.rel, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY)
	if err != nil {
		return nil, changed(f.rel, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd) //nolint:errcheck
		return nil, fmt.Errorf("source %s: %w", ShowPath(f.rel), err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd) //nolint:errcheck
		return nil, fmt.Errorf("%w: %s is no longer a regular file", ErrSourceChanged, ShowPath(f.rel))
	}
	// The file that was listed: same device, size and mtime (its image entry takes them
	// from the listing and its content from this open).
	if st.Dev != f.dev || st.Size != f.size || st.Mtim.Nano() != f.mtime {
		unix.Close(fd) //nolint:errcheck
		return nil, fmt.Errorf("%w: %s changed since it was listed", ErrSourceChanged, ShowPath(f.rel))
	}
	return &sourceReader{fd: fd, size: st.Size, f: f, ctx: f.s.ctx, lim: f.s.lim}, nil
}
