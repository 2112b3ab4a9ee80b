package dataplane

// The push's view of the source tree. kopia's localfs opens every directory and file by its
// full path, following symlinks: a file swapped for a symlink between kopia's listing and its
// open would be followed, and the content of a file outside the dataset would enter the image
// (the class of rsync's CVE-2024-12747). Here every file is opened beneath the source root's
// fd with no symlink in any component (openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, or a walk
// by O_NOFOLLOW components), must still be a regular file with the device, size and mtime
// kopia listed, and every directory is checked the same way before kopia lists it. A name
// that is not valid UTF-8 is given to kopia as its image name (names.go); one whose image
// name is a sibling's real name is left out (KindName).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"

	"github.com/kopia/kopia/fs"
	"golang.org/x/sys/unix"
)

// ErrSourceChanged means an entry of the source is no longer what the push listed: a
// regular file or directory became a symlink or something else, or left the tree.
var ErrSourceChanged = errors.New("source changed during the push")

// sourceRoot is the source tree of one push.
type sourceRoot struct {
	fd    int // the source dir, O_PATH; closed by the push
	hooks *testHooks
	// lim bounds what the push reads from the source (nil: unlimited); ctx ends its waits.
	lim Limiter
	ctx context.Context
}

// openSourceRoot opens dir (never through a symlink in its last component).
func openSourceRoot(dir string, hooks *testHooks) (*sourceRoot, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening source %s: %w", dir, err)
	}
	return &sourceRoot{fd: fd, hooks: hooks}, nil
}

func (s *sourceRoot) close() { unix.Close(s.fd) } //nolint:errcheck

// wrap returns e (at rel below the root, by its raw names) with the push's checks, named
// name in the image (e.Name() unless that is not valid UTF-8).
func (s *sourceRoot) wrap(e fs.Entry, rel, name string) fs.Entry {
	switch e := e.(type) {
	case fs.Directory:
		return sourceDir{e, s, rel, name}
	case fs.File:
		return sourceFile{e, s, rel, name}
	case fs.Symlink:
		if name != e.Name() {
			return renamedSymlink{e, name}
		}
	default:
		if name != e.Name() {
			return renamedEntry{e, name}
		}
	}
	return e
}

// renamedSymlink and renamedEntry give an entry its image name.
type renamedSymlink struct {
	fs.Symlink
	name string
}

func (r renamedSymlink) Name() string { return r.name }

type renamedEntry struct {
	fs.Entry
	name string
}

func (r renamedEntry) Name() string { return r.name }

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
	fs.Directory
	s    *sourceRoot
	rel  string
	name string // in the image
}

func (d sourceDir) Name() string { return d.name }

func (d sourceDir) Child(ctx context.Context, name string) (fs.Entry, error) {
	e, err := d.Directory.Child(ctx, name)
	if err != nil {
		return nil, err
	}
	return d.s.wrap(e, path.Join(d.rel, name), imageName(name)), nil
}

func (d sourceDir) Iterate(ctx context.Context) (fs.DirectoryIterator, error) {
	// Still a directory beneath the root, reached through no symlink, just before kopia
	// lists it by path. (A swap in the instant between leaks names and metadata at most:
	// every file's content is opened beneath the root.)
	fd, err := openBeneath(d.s.fd, d.rel, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return nil, changed(d.rel, err)
	}
	unix.Close(fd) //nolint:errcheck
	it, err := d.Directory.Iterate(ctx)
	if err != nil {
		return nil, err
	}
	return sourceIter{it, d}, nil
}

type sourceIter struct {
	fs.DirectoryIterator
	d sourceDir
}

func (i sourceIter) Next(ctx context.Context) (fs.Entry, error) {
	for {
		e, err := i.DirectoryIterator.Next(ctx)
		if err != nil || e == nil {
			return e, err
		}
		n := e.Name()
		img := imageName(n)
		if img != n && i.taken(img) {
			continue // its image name is a sibling's: left out (KindName)
		}
		return i.d.s.wrap(e, path.Join(i.d.rel, n), img), nil
	}
}

// taken reports whether the directory has an entry named img (looked up beneath the root).
func (i sourceIter) taken(img string) bool {
	fd, err := openBeneath(i.d.s.fd, i.d.rel, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return true
	}
	defer unix.Close(fd) //nolint:errcheck
	var st unix.Stat_t
	return unix.Fstatat(fd, img, &st, unix.AT_SYMLINK_NOFOLLOW) == nil
}

type sourceFile struct {
	fs.File
	s    *sourceRoot
	rel  string
	name string // in the image
}

func (f sourceFile) Name() string { return f.name }

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
	// The file kopia listed: same device, size and mtime (its image entry takes them from
	// the listing and its content from this open).
	if st.Dev != f.Device().Dev || st.Size != f.Size() || st.Mtim.Nano() != f.ModTime().UnixNano() {
		unix.Close(fd) //nolint:errcheck
		return nil, fmt.Errorf("%w: %s changed since it was listed", ErrSourceChanged, ShowPath(f.rel))
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err == nil {
		_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl&^unix.O_NONBLOCK)
	}
	if err != nil {
		unix.Close(fd) //nolint:errcheck
		return nil, fmt.Errorf("source %s: %w", ShowPath(f.rel), err)
	}
	file := os.NewFile(uintptr(fd), f.LocalFilesystemPath())
	if f.s.lim != nil {
		return &limitedSource{file: file, f: f, ctx: f.s.ctx, lim: f.s.lim}, nil
	}
	return sourceReader{file, f}, nil
}

type sourceReader struct {
	*os.File
	f sourceFile
}

// Entry is the file as listed (kopia's uploader takes metadata from the listing).
func (r sourceReader) Entry() (fs.Entry, error) { return r.f, nil }
