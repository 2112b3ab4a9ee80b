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
	src := l.replicaDir(replica)
	if _, err := os.Stat(src); err != nil {
		return TestCopy{}, fmt.Errorf("%w: replica %s of %s: %v", ErrNotFound, replica, dataset, err)
	}
	dst := l.testCopyDir(name)
	if _, err := os.Lstat(dst); err == nil {
		return TestCopy{}, badInput("Name", "test copy %s already exists at %s: clean it up first", name, dst)
	}
	tmp := dst + ".creating"
	if err := os.RemoveAll(tmp); err != nil {
		return TestCopy{}, err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return TestCopy{}, err
	}
	tc := TestCopy{Name: name, Path: dst, Replica: replica}
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		out := filepath.Join(tmp, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			// Writable for the tester even if the replica's directory is not.
			if err := os.Mkdir(out, info.Mode().Perm()|0o700); err != nil {
				return err
			}
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(target, out)
		case d.Type().IsRegular():
			cloned, err := cloneFile(p, out, info.Mode().Perm())
			if err != nil {
				return fmt.Errorf("copying %s: %w", rel, err)
			}
			tc.Files++
			tc.Bytes += info.Size()
			if cloned {
				tc.Cloned++
			}
		}
		return os.Chtimes(out, info.ModTime(), info.ModTime())
	})
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		_ = os.RemoveAll(tmp)
		return TestCopy{}, err
	}
	return tc, nil
}

// cloneFile makes dst a copy of src: a copy-on-write clone when the filesystem supports it.
func cloneFile(src, dst string, perm fs.FileMode) (cloned bool, err error) {
	in, err := os.Open(src)
	if err != nil {
		return false, err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm|0o200)
	if err != nil {
		return false, err
	}
	if unix.IoctlFileClone(int(out.Fd()), int(in.Fd())) == nil {
		return true, out.Close()
	}
	// io.Copy between files uses copy_file_range: no data through user space.
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return false, err
	}
	return false, out.Close()
}

// RemoveTestCopy deletes the test copy name; a missing one is not an error.
func RemoveTestCopy(targetRoot, dataset, name string) error {
	if err := checkName("Name", name); err != nil {
		return err
	}
	dst := newLayout(targetRoot, dataset).testCopyDir(name)
	if err := os.RemoveAll(dst); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
