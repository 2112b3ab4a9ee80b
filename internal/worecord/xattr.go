package worecord

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// readXattrs reads every extended attribute of the entry at p, through fd when it is not -1
// (an open regular file), without following a symlink.
func readXattrs(p string, fd int) ([]Xattr, error) {
	list := func(buf []byte) (int, error) {
		if fd >= 0 {
			return unix.Flistxattr(fd, buf)
		}
		return unix.Llistxattr(p, buf)
	}
	get := func(name string, buf []byte) (int, error) {
		if fd >= 0 {
			return unix.Fgetxattr(fd, name, buf)
		}
		return unix.Lgetxattr(p, name, buf)
	}
	names, err := grow(list)
	if errors.Is(err, unix.ENOTSUP) {
		return nil, nil
	}
	if err != nil {
		return nil, &os.PathError{Op: "listxattr", Path: p, Err: err}
	}
	var out []Xattr
	for name := range strings.SplitSeq(string(names), "\x00") {
		if name == "" {
			continue
		}
		v, err := grow(func(buf []byte) (int, error) { return get(name, buf) })
		if errors.Is(err, unix.ENODATA) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, &os.PathError{Op: "getxattr " + name, Path: p, Err: err}
		}
		out = append(out, Xattr{Name: name, Value: v})
	}
	return out, nil
}

// grow calls fn with a buffer of the size it asks for (fn(nil)), again while the value
// grows between the two calls.
func grow(fn func([]byte) (int, error)) ([]byte, error) {
	for range 8 {
		n, err := fn(nil)
		if err != nil || n == 0 {
			return nil, err
		}
		buf := make([]byte, n)
		n, err = fn(buf)
		if errors.Is(err, unix.ERANGE) {
			continue
		}
		return buf[:n], err
	}
	return nil, unix.ERANGE
}

// keptLabel is the one attribute a target's LSM may set on what Check makes, which it
// leaves when the record lacks it.
const keptLabel = "security.selinux"

// setXattrs makes the extended attributes of the inode behind fd exactly xs (fd may be an
// O_PATH descriptor: the calls go through /proc to the inode itself, never a symlink's
// target).
func setXattrs(fd int, xs []Xattr) error {
	p := "/proc/self/fd/" + strconv.Itoa(fd)
	want := make(map[string]bool, len(xs))
	for _, x := range xs {
		want[x.Name] = true
	}
	names, err := grow(func(buf []byte) (int, error) { return unix.Listxattr(p, buf) })
	if err != nil && !errors.Is(err, unix.ENOTSUP) {
		return fmt.Errorf("listing extended attributes: %w", err)
	}
	for name := range strings.SplitSeq(string(names), "\x00") {
		if name == "" || want[name] || name == keptLabel {
			continue
		}
		if err := unix.Removexattr(p, name); err != nil && !errors.Is(err, unix.ENODATA) {
			return fmt.Errorf("removing extended attribute %q: %w", name, err)
		}
	}
	for _, x := range xs {
		if err := unix.Setxattr(p, x.Name, x.Value, 0); err != nil {
			return fmt.Errorf("setting extended attribute %q: %w", x.Name, err)
		}
	}
	return nil
}
