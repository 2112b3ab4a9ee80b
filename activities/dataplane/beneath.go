package dataplane

// Paths under the target root T are resolved beneath it, never through a symlink.
//
// Whoever can write T (or a dataset's parent directory in it) could otherwise plant a symlink
// where replctl is about to create, rename, link or remove something and redirect that write
// out of T. So every such operation is done relative to a directory fd that was opened
// without following any symlink: openat2(2) with RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS where
// the kernel has it, an O_NOFOLLOW walk one component at a time from the root fd where it
// does not (ENOSYS). The directories are resolved once per step (start of a pull, publish,
// retention), never per file. T/.replctl and the directories replctl keeps in it must
// moreover be real directories owned by the agent's user and not writable by group or others
// (the model is OpenSSH's StrictModes): otherwise another user could swap their contents
// between a check and a use.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// ErrUnsafePath means a path under a storage root is a symlink, or a directory replctl keeps
// its state in is not a real directory owned by the agent's user and closed to others.
// Errors wrapping it wrap ErrBadInput too: retrying does not help, a person must fix it.
var ErrUnsafePath = errors.New("unsafe path under the storage root")

// noOpenat2 is set once the kernel answered ENOSYS to openat2; tests set it to force the
// component walk.
var noOpenat2 atomic.Bool

const resolveFlags = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

func unsafePath(format string, args ...any) error {
	return fmt.Errorf("%w (%w): %s", ErrUnsafePath, ErrBadInput, fmt.Sprintf(format, args...))
}

// openBeneath opens rel (slash-separated, relative, no "." or ".." components; "." alone is
// dirFd itself) beneath dirFd with the open flags given for its last component. No component
// may be a symlink (ELOOP) and the result is never outside dirFd.
func openBeneath(dirFd int, rel string, flags int) (int, error) {
	if rel == "." {
		return openatRetry(dirFd, ".", flags|unix.O_CLOEXEC)
	}

	if strings.HasPrefix(rel, "/") || strings.IndexByte(rel, 0) >= 0 {
		return -1, unix.EINVAL
	}

	if !noOpenat2.Load() {
		// No O_NOFOLLOW: with it a trailing symlink gives ENOTDIR (O_DIRECTORY) or an O_PATH fd
		// of the link; without it RESOLVE_NO_SYMLINKS refuses it with ELOOP like any other.
		how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Resolve: resolveFlags}

		for {
			fd, err := unix.Openat2(dirFd, rel, &how)
			// EAGAIN: a rename raced with a RESOLVE_BENEATH lookup; the kernel asks to retry.
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
				continue
			}

			if !errors.Is(err, unix.ENOSYS) {
				return fd, err
			}

			noOpenat2.Store(true)

			break
		}
	}

	return walkBeneath(dirFd, rel, flags)
}

// walkBeneath is openBeneath without openat2: one O_NOFOLLOW open per component, each
// relative to the fd of the one before.
func walkBeneath(dirFd int, rel string, flags int) (int, error) {
	parts := strings.Split(rel, "/")
	cur := dirFd

	for i, c := range parts {
		if c == "" || c == "." || c == ".." {
			closeIfNot(cur, dirFd)
			return -1, unix.EXDEV // what openat2 answers for a path leaving the root
		}

		fl := unix.O_PATH | unix.O_DIRECTORY
		if i == len(parts)-1 {
			fl = flags
		}

		fd, err := openatRetry(cur, c, fl|unix.O_NOFOLLOW|unix.O_CLOEXEC)
		if errors.Is(err, unix.ENOTDIR) && isSymlinkAt(cur, c) {
			err = unix.ELOOP // O_PATH|O_NOFOLLOW|O_DIRECTORY on a symlink: say what openat2 says
		}

		closeIfNot(cur, dirFd)

		if err != nil {
			return -1, err
		}

		cur = fd
	}

	return cur, nil
}

func openatRetry(dirFd int, name string, flags int) (int, error) {
	for {
		fd, err := unix.Openat(dirFd, name, flags, 0)
		if !errors.Is(err, unix.EINTR) {
			return fd, err
		}
	}
}

func closeIfNot(fd, keep int) {
	if fd != keep {
		_ = unix.Close(fd)
	}
}

func isSymlinkAt(dirFd int, name string) bool {
	var st unix.Stat_t

	return unix.Fstatat(dirFd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK
}

// describeRefusal turns a failed lookup of rel beneath dirFd (base is dirFd's path) into an
// error naming the first component that is a symlink or not a directory.
func describeRefusal(dirFd int, base, rel string, err error) error {
	if !errors.Is(err, unix.ELOOP) && !errors.Is(err, unix.ENOTDIR) && !errors.Is(err, unix.EXDEV) {
		return fmt.Errorf("opening %s: %w", filepath.Join(base, rel), err)
	}

	parts := strings.Split(rel, "/")
	for i := range parts {
		p := strings.Join(parts[:i+1], "/")
		full := filepath.Join(base, p)

		var st unix.Stat_t
		if unix.Fstatat(dirFd, p, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
			break
		}

		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			continue
		case unix.S_IFLNK:
			target := make([]byte, 4096)
			n, _ := unix.Readlinkat(dirFd, p, target)

			return unsafePath("%s is a symlink to %q (owner uid %d, mode %04o): replctl never follows "+
				"symlinks under %s; remove the link or move it away (replctl creates the directories it needs)",
				full, target[:max(n, 0)], st.Uid, st.Mode&0o7777, base)
		default:
			return unsafePath("%s is not a directory (owner uid %d, mode %04o): move it away", full, st.Uid, st.Mode&0o7777)
		}
	}

	return unsafePath("%s: a symlink or a path leaving %s is on the way (%v); replctl never follows symlinks there",
		filepath.Join(base, rel), base, err)
}

// checkStrict refuses a directory replctl keeps state in unless the agent's effective user
// owns it and neither group nor others may write it (OpenSSH's StrictModes).
func checkStrict(fd int, p string) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("checking %s: %w", p, err)
	}

	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return unsafePath("%s is not a directory (mode %04o): move it away", p, st.Mode&0o7777)
	}

	if euid := os.Geteuid(); int(st.Uid) != euid {
		return unsafePath("%s is owned by uid %d (mode %04o), not by the agent's user (uid %d): another user "+
			"could change replctl's state; fix: chown %d %s (or remove it and let replctl create it)",
			p, st.Uid, st.Mode&0o7777, euid, euid, p)
	}

	if st.Mode&0o022 != 0 {
		return unsafePath("%s has mode %04o (owner uid %d): writable by group or others, who could swap its "+
			"contents for symlinks; fix: chmod go-w %s", p, st.Mode&0o7777, st.Uid, p)
	}

	return nil
}

// dirAt opens directory rel beneath dirFd (base is dirFd's path) without following any
// symlink, read-only (so it can be fsynced and listed). With create, missing components are
// made with mode (exactly: the umask is undone). With strict, every component is checked by
// checkStrict. A missing directory without create is an error satisfying os.IsNotExist.
func dirAt(dirFd int, base, rel string, create, strict bool, mode uint32) (int, error) {
	if !strict {
		// One openat2 for the whole path; the walk below only creates what is missing.
		fd, err := openBeneath(dirFd, rel, unix.O_RDONLY|unix.O_DIRECTORY)
		switch {
		case err == nil:
			return fd, nil
		case errors.Is(err, unix.ENOENT) && create:
		case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EACCES):
			return -1, wrapOpen(base, rel, err)
		default:
			return -1, describeRefusal(dirFd, base, rel, err)
		}
	}

	cur, p := dirFd, base

	for _, c := range strings.Split(rel, "/") {
		p = filepath.Join(p, c)

		fd, err := openBeneath(cur, c, unix.O_RDONLY|unix.O_DIRECTORY)
		if errors.Is(err, unix.ENOENT) && create {
			created := false
			if err = unix.Mkdirat(cur, c, mode); err == nil {
				created = true
			} else if !errors.Is(err, unix.EEXIST) {
				closeIfNot(cur, dirFd)
				return -1, fmt.Errorf("creating %s: %w", p, err)
			}

			fd, err = openBeneath(cur, c, unix.O_RDONLY|unix.O_DIRECTORY)
			if err == nil && created {
				err = unix.Fchmod(fd, mode)
			}
		}

		if err != nil {
			if fd >= 0 {
				_ = unix.Close(fd)
			}

			var rerr error
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EACCES) {
				rerr = wrapOpen(filepath.Dir(p), c, err)
			} else {
				rerr = describeRefusal(cur, filepath.Dir(p), c, err)
			}

			closeIfNot(cur, dirFd)

			return -1, rerr
		}

		closeIfNot(cur, dirFd)
		cur = fd

		if strict {
			if err := checkStrict(cur, p); err != nil {
				_ = unix.Close(cur)
				return -1, err
			}
		}
	}

	if cur == dirFd { // rel was empty
		return openatRetry(dirFd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	}

	return cur, nil
}

func wrapOpen(base, rel string, err error) error {
	if err == nil {
		return nil
	}

	return &os.PathError{Op: "open", Path: filepath.Join(base, rel), Err: err}
}

// openRoot opens a storage root as configured (agents and runs refuse a root that is itself a
// symlink before they get here, see internal/storagecheck; nothing below it is followed).
func openRoot(root string) (int, error) {
	fd, err := openatRetry(unix.AT_FDCWD, root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return -1, badInput("TargetRoot", "%s is not an existing directory: %v", root, err)
	}

	return fd, nil
}

// ctlDir opens T/.replctl/<parts...> beneath the root fd, every component checked strictly;
// missing ones are created with mode when create is set (.replctl itself 0755: readers of
// T/D traverse it).
func ctlDir(root int, rootPath string, create bool, mode uint32, parts ...string) (int, error) {
	fd, err := dirAt(root, rootPath, replctlDir, create, true, dirMode)
	if err != nil || len(parts) == 0 {
		return fd, err
	}

	sub, err := dirAt(fd, filepath.Join(rootPath, replctlDir), path.Join(parts...), create, true, mode)
	_ = unix.Close(fd)

	return sub, err
}

// targetDirs are one dataset's directories under T, resolved and checked once per step.
type targetDirs struct {
	root     int // T
	replicas int // T/.replctl/replicas/<esc>
	meta     int // T/.replctl/meta/<esc>
	staging  int // T/.replctl/staging/<esc>
	trash    int // T/.replctl/trash/<esc>
}

// openDirs resolves (creating what is missing) the dataset's directories under T.
func (l layout) openDirs() (*targetDirs, error) {
	d := &targetDirs{root: -1, replicas: -1, meta: -1, staging: -1, trash: -1}

	var err error
	if d.root, err = openRoot(l.root); err != nil {
		return nil, err
	}

	for _, x := range []struct {
		fd   *int
		kind string
		mode uint32
	}{{&d.replicas, "replicas", dirMode}, {&d.meta, "meta", dirMode}, {&d.staging, "staging", 0o700}, {&d.trash, "trash", 0o700}} {
		if *x.fd, err = ctlDir(d.root, l.root, true, x.mode, x.kind, l.esc); err != nil {
			d.close()
			return nil, err
		}
	}

	return d, nil
}

func (d *targetDirs) close() {
	for _, fd := range []int{d.root, d.replicas, d.meta, d.staging, d.trash} {
		closeFd(fd)
	}
}

// linkParent opens the directory holding T/D beneath T, refusing symlinks on the way;
// with create, missing directories are made (0755: they are the user's dataset tree).
func (l layout) linkParent(root int, create bool) (int, error) {
	rel := path.Dir(l.dataset)
	if rel == "." {
		return openatRetry(root, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	}

	return dirAt(root, l.root, rel, create, false, dirMode)
}

// writeFileAt writes data to name in dirFd (at dir) via a temp file + fsync + rename + dir
// fsync: readers see the old content or the new one.
func writeFileAt(dirFd int, dir, name string, data []byte, perm uint32) error {
	tmp := ".tmp-" + name + "-" + randHex(6)

	fd, err := openatRetry(dirFd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC)
	if err != nil {
		return fmt.Errorf("creating temp file for %s: %w", filepath.Join(dir, name), err)
	}

	f := os.NewFile(uintptr(fd), filepath.Join(dir, tmp))
	defer unix.Unlinkat(dirFd, tmp, 0) //nolint:errcheck // ENOENT after a successful rename

	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(os.FileMode(perm))
	}

	if err == nil {
		err = f.Sync()
	}

	if cerr := f.Close(); err == nil {
		err = cerr
	}

	if err != nil {
		return fmt.Errorf("writing %s: %w", filepath.Join(dir, name), err)
	}

	if err := unix.Renameat(dirFd, tmp, dirFd, name); err != nil {
		return fmt.Errorf("renaming %s into place: %w", filepath.Join(dir, name), err)
	}

	return fsyncDirFd(dirFd, dir)
}

// readFileAt reads name in dirFd, never through a symlink.
func readFileAt(dirFd int, dir, name string) ([]byte, error) {
	fd, err := openatRetry(dirFd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: filepath.Join(dir, name), Err: err}
	}

	f := os.NewFile(uintptr(fd), filepath.Join(dir, name))
	defer f.Close()

	return io.ReadAll(f)
}

// fsyncDirFd makes renames and creations in the directory durable.
func fsyncDirFd(fd int, dir string) error {
	if err := unix.Fsync(fd); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("fsync dir %s: %w", dir, err)
	}

	return nil
}

// replaceLinkAt points name in dirFd (at dir) at target: a temp symlink (tmpPrefix +
// random) beside it renamed over it, then the directory synced. rename(2) is atomic:
// readers see the old target or the new one. what names the operation in the error.
func replaceLinkAt(dirFd int, dir, name, target, tmpPrefix, what string) error {
	tmp := tmpPrefix + randHex(8)
	if err := unix.Symlinkat(target, dirFd, tmp); err != nil {
		return fmt.Errorf("creating temp link %s: %w", filepath.Join(dir, tmp), err)
	}

	if err := unix.Renameat(dirFd, tmp, dirFd, name); err != nil {
		_ = unix.Unlinkat(dirFd, tmp, 0)
		return fmt.Errorf("%s %s: %w", what, filepath.Join(dir, name), err)
	}

	return fsyncDirFd(dirFd, dir)
}

// readlinkAt reads symlink name in dirFd.
func readlinkAt(dirFd int, name string) (string, error) {
	buf := make([]byte, 4096)

	n, err := unix.Readlinkat(dirFd, name, buf)
	if err != nil {
		return "", err
	}

	return string(buf[:n]), nil
}

// dirNames lists the names in directory fd (through a new open file description, so fd's
// own offset is untouched).
func dirNames(fd int) ([]string, error) {
	d, err := openatRetry(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return nil, err
	}

	f := os.NewFile(uintptr(d), ".")
	defer f.Close()

	return f.Readdirnames(-1)
}

// removeAllAt removes name in dirFd and, if it is a directory, everything in it, by fds: a
// symlink inside is removed, never followed. Read-only directories (replicas keep the
// image's modes) are made writable first. A missing name is not an error.
func removeAllAt(dirFd int, name string) error { return removeAllAtJ(dirFd, name, nil) }

// removeAllAtJ is removeAllAt noting in j (if not nil) the ctime changes its
// unlinks make to inodes that stay linked elsewhere (see carryTrust).
func removeAllAtJ(dirFd int, name string, j *unlinkJournal) error {
	if j != nil {
		if done, err := j.unlinkShared(dirFd, name); done {
			return err
		}
	}

	err := unix.Unlinkat(dirFd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}

	if !errors.Is(err, unix.EISDIR) {
		return fmt.Errorf("removing %s: %w", name, err)
	}

	fd, err := openatRetry(dirFd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC)
	if errors.Is(err, unix.EACCES) {
		// Mode 0 (or no r/x) directory of a non-root agent: it was a directory a moment ago
		// (EISDIR) and dirFd is ours alone.
		if isDirAt(dirFd, name) && unix.Fchmodat(dirFd, name, 0o700, 0) == nil {
			fd, err = openatRetry(dirFd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC)
		}
	}

	if err != nil {
		return fmt.Errorf("opening %s for removal: %w", name, err)
	}

	var st unix.Stat_t
	if unix.Fstat(fd, &st) == nil && st.Mode&0o700 != 0o700 {
		_ = unix.Fchmod(fd, 0o700)
	}

	names, err := dirNames(fd)
	for _, n := range names {
		if err == nil {
			err = removeAllAtJ(fd, n, j)
		}
	}

	_ = unix.Close(fd)

	if err != nil {
		return err
	}

	if err := unix.Unlinkat(dirFd, name, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("removing %s: %w", name, err)
	}

	return nil
}

func isDirAt(dirFd int, name string) bool {
	var st unix.Stat_t

	return unix.Fstatat(dirFd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR
}

// OpenDirBeneath opens the existing directory rel (slash-separated, relative) beneath root
// without following any symlink on the way; with strict, every component must moreover be
// owned by the agent's user and closed to group and others writing. The caller closes the
// fd. Callers outside this package (failback's switch) use it to rename relative to
// directories resolved this way rather than by path.
func OpenDirBeneath(root, rel string, strict bool) (int, error) {
	rfd, err := openRoot(root)
	if err != nil {
		return -1, err
	}
	defer unix.Close(rfd) //nolint:errcheck
	if rel == "." || rel == "" {
		return unix.Dup(rfd)
	}
	return dirAt(rfd, root, rel, false, strict, 0)
}
