package dataplane

import (
	"errors"
	"os"

	kfs "github.com/kopia/kopia/fs"
	"github.com/kopia/kopia/snapshot"
	"golang.org/x/sys/unix"
)

// Whether the target filesystem clones files (FICLONE), learnt from the first try of a pull.
const (
	cloneUnknown int32 = iota
	cloneYes
	cloneNo
)

// cloneFile makes entry de of the staging directory dstFd a clone (FICLONE: a new inode
// sharing the data blocks) of the same-named file of the current replica in srcFd, whose
// stat st was just checked against the image, and gives it the image's owner, mode, xattrs
// and mtime. A clone is an independent copy: a later write into either leaves the other as
// it was, so damage in one replica cannot reach another. It reports false, leaving nothing
// behind, where the filesystem cannot clone (ext4, tmpfs: the pull links instead) or the
// file is not the one checked; an error only for a failure a link would not avoid.
func (p *puller) cloneFile(srcFd, dstFd int, rel string, de *snapshot.DirEntry, st *unix.Stat_t) (bool, error) {
	if p.clone.Load() == cloneNo {
		return false, nil
	}

	sfd, err := unix.Openat(srcFd, de.Name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, nil
	}
	defer unix.Close(sfd) //nolint:errcheck

	var sst unix.Stat_t
	if unix.Fstat(sfd, &sst) != nil || sst.Ino != st.Ino || sst.Dev != st.Dev || sst.Ctim != st.Ctim {
		return false, nil
	}

	dfd, err := unix.Openat(dstFd, de.Name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return false, &os.PathError{Op: "create", Path: rel, Err: err}
	}

	f := os.NewFile(uintptr(dfd), rel)
	ok, err := p.cloneInto(f, sfd, dstFd, rel, de)
	if cerr := f.Close(); err == nil && cerr != nil {
		ok, err = false, cerr
	}

	if !ok || err != nil {
		_ = unix.Unlinkat(dstFd, de.Name, 0)
		if err != nil {
			return false, err
		}

		return false, nil
	}

	return true, setMtimeAt(dstFd, de.Name, de, false)
}

// cloneInto clones sfd into f and sets the image's owner, mode and xattrs on it.
func (p *puller) cloneInto(f *os.File, sfd, dstFd int, rel string, de *snapshot.DirEntry) (bool, error) {
	if err := unix.IoctlFileClone(int(f.Fd()), sfd); err != nil {
		if cannotClone(err) {
			p.clone.Store(cloneNo)
			p.log("target filesystem does not clone files (FICLONE); unchanged files are hard-linked", "err", err)

			return false, nil
		}

		return false, &os.PathError{Op: "clone", Path: rel, Err: err}
	}

	p.clone.Store(cloneYes)

	// chown first: it clears setuid/setgid.
	if p.isRoot {
		if err := f.Chown(int(de.UserID), int(de.GroupID)); err != nil {
			return false, err
		}
	}

	if err := f.Chmod(os.FileMode(de.Permissions) & kfs.ModBits); err != nil {
		return false, err
	}

	// A link would have shared the xattrs; a clone gets them from the image. Where the
	// target refuses one, the file is linked instead, as before clones.
	if xs := p.xattrsOf[rel]; len(xs) > 0 {
		if err := setXattrs(dstFd, de.Name, rel, xs, nil); err != nil {
			return false, nil
		}
	}

	return true, nil
}

// cannotClone: the filesystem (or this pair of files) does not support FICLONE.
func cannotClone(err error) bool {
	for _, e := range []error{unix.EOPNOTSUPP, unix.EXDEV, unix.EINVAL, unix.ENOTTY, unix.ENOSYS, unix.EBADF} {
		if errors.Is(err, e) {
			return true
		}
	}

	return false
}
