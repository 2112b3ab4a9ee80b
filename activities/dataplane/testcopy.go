package dataplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// TestCopy is a writable copy of a replica, opened for a failover test at
// T/.replctl/test-failover/<esc(D)>/<name>. Replicas share inodes (hard links), so a writable
// copy can never be a hard link: files are cloned (reflink) where the filesystem can, and
// copied in the kernel (copy_file_range) otherwise.
type TestCopy struct {
	Name    string
	Path    string
	Replica string
	Files   int64
	Bytes   int64
	// Cloned counts files shared copy-on-write with the replica (no data copied).
	Cloned int64
}

func (l layout) testCopyDir(name string) string {
	return filepath.Join(l.root, replctlDir, "test-failover", l.esc, name)
}

// OpenTestCopy makes a writable copy of replica (the current one when "") named name. It
// is written under a temporary name and renamed into place, so a copy is whole or absent.
// Both trees are walked by directory fds opened without following symlinks (a symlink in
// the replica is copied as a symlink), beneath T/.replctl checked as for a pull.
func OpenTestCopy(ctx context.Context, targetRoot, dataset, replica, name string) (TestCopy, error) {
	if err := checkAbs("TargetRoot", targetRoot); err != nil {
		return TestCopy{}, err
	}
	if err := checkDataset("Dataset", dataset); err != nil {
		return TestCopy{}, err
	}
	if err := checkName("Name", name); err != nil {
		return TestCopy{}, err
	}
	l := newLayout(targetRoot, dataset)
	if replica == "" {
		cur, err := l.currentReplica()
		if err != nil {
			return TestCopy{}, err
		}
		if cur == "" {
			return TestCopy{}, fmt.Errorf("%w: dataset %s on %s has no published replica yet", ErrNotFound, dataset, targetRoot)
		}
		replica = cur
	}
	if err := checkName("Replica", replica); err != nil {
		return TestCopy{}, err
	}
	root, err := openRoot(targetRoot)
	if err != nil {
		return TestCopy{}, err
	}
	defer unix.Close(root) //nolint:errcheck
	src := l.replicaDir(replica)
	rdir, err := ctlDir(root, targetRoot, false, dirMode, "replicas", l.esc)
	sfd := -1
	if err == nil {
		sfd, err = openBeneath(rdir, replica, unix.O_RDONLY|unix.O_DIRECTORY)
		_ = unix.Close(rdir)
	}
	if err != nil {
		return TestCopy{}, fmt.Errorf("%w: replica %s of %s: %v", ErrNotFound, replica, dataset, err)
	}
	defer unix.Close(sfd) //nolint:errcheck
	dst := l.testCopyDir(name)
	tdir, err := ctlDir(root, targetRoot, true, dirMode, "test-failover", l.esc)
	if err != nil {
		return TestCopy{}, err
	}
	defer unix.Close(tdir) //nolint:errcheck
	if existsAt(tdir, name) {
		return TestCopy{}, badInput("Name", "test copy %s already exists at %s: clean it up first", name, dst)
	}
	tmp := name + ".creating"
	if err := removeAllAt(tdir, tmp); err != nil {
		return TestCopy{}, err
	}
	tc := TestCopy{Name: name, Path: dst, Replica: replica}
	err = copyEntryAt(ctx, sfd, ".", tdir, tmp, ".", &tc)
	if err == nil {
		err = unix.Renameat(tdir, tmp, tdir, name)
	}
	if err != nil {
		_ = removeAllAt(tdir, tmp)
		return TestCopy{}, fmt.Errorf("copying replica %s to %s: %w", src, dst, err)
	}
	return tc, fsyncDirFd(tdir, filepath.Dir(dst))
}

// copyEntryAt copies entry name of directory srcDir to dstName in dstDir (rel names it in
// errors): directories recursively (writable for the tester even if the replica's are not),
// symlinks as symlinks, regular files cloned; times kept. Other types are skipped.
func copyEntryAt(ctx context.Context, srcDir int, name string, dstDir int, dstName, rel string, tc *TestCopy) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(srcDir, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	ts := unix.NsecToTimespec(st.Mtim.Nano())
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		if err := unix.Mkdirat(dstDir, dstName, st.Mode&0o777|0o700); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		in, err := openatRetry(srcDir, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		defer unix.Close(in) //nolint:errcheck
		out, err := openatRetry(dstDir, dstName, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		defer unix.Close(out) //nolint:errcheck
		names, err := dirNames(in)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		for _, n := range names {
			if err := copyEntryAt(ctx, in, n, out, n, filepath.Join(rel, n), tc); err != nil {
				return err
			}
		}
		// After the entries: creating them changed the directory's times.
		return futimens(out, ts)
	case unix.S_IFLNK:
		target, err := readlinkAt(srcDir, name)
		if err == nil {
			err = unix.Symlinkat(target, dstDir, dstName)
		}
		if err == nil {
			err = unix.UtimesNanoAt(dstDir, dstName, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		return nil
	case unix.S_IFREG:
		cloned, err := cloneFileAt(srcDir, name, dstDir, dstName, st.Mode&0o777, ts)
		if err != nil {
			return fmt.Errorf("copying %s: %w", rel, err)
		}
		tc.Files++
		tc.Bytes += st.Size
		if cloned {
			tc.Cloned++
		}
	}
	return nil
}

// cloneFileAt makes dstName in dstDir a copy of name in srcDir (neither a symlink), with
// mtime ts: a copy-on-write clone when the filesystem supports it.
func cloneFileAt(srcDir int, name string, dstDir int, dstName string, perm uint32, ts unix.Timespec) (cloned bool, err error) {
	ifd, err := openatRetry(srcDir, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC)
	if err != nil {
		return false, err
	}
	in := os.NewFile(uintptr(ifd), name)
	defer in.Close()
	ofd, err := unix.Openat(dstDir, dstName, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, perm|0o200)
	if err != nil {
		return false, err
	}
	out := os.NewFile(uintptr(ofd), dstName)
	if unix.IoctlFileClone(int(out.Fd()), int(in.Fd())) == nil {
		cloned = true
	} else if _, err := io.Copy(out, in); err != nil { // copy_file_range: no data through user space
		out.Close()
		return false, err
	}
	if err := futimens(int(out.Fd()), ts); err != nil {
		out.Close()
		return false, err
	}
	return cloned, out.Close()
}

// RemoveTestCopy deletes the test copy name; a missing one is not an error.
func RemoveTestCopy(targetRoot, dataset, name string) error {
	if err := checkAbs("TargetRoot", targetRoot); err != nil {
		return err
	}
	if err := checkDataset("Dataset", dataset); err != nil {
		return err
	}
	if err := checkName("Name", name); err != nil {
		return err
	}
	l := newLayout(targetRoot, dataset)
	root, err := openRoot(targetRoot)
	if err != nil {
		return err
	}
	defer unix.Close(root) //nolint:errcheck
	fd, err := ctlDir(root, targetRoot, false, dirMode, "test-failover", l.esc)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(fd) //nolint:errcheck
	if err := removeAllAt(fd, name); err != nil {
		return fmt.Errorf("removing test copy %s: %w", l.testCopyDir(name), err)
	}
	return nil
}
