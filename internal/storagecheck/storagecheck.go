// Package storagecheck checks on disk what the config can only check as text: every storage
// a host attaches must be an existing, real directory (its configured path not a symlink),
// and no two storage systems may be one directory or one inside the other.
//
// A storage root that is a symlink lets whoever can change the link move every dataset and
// replica of that storage elsewhere (issue 14 saw `replctl dev` write a sample into
// /etc/media through one). Two storages that are one directory make a pull write into the
// source it reads from. Both are refused before anything runs: by `replctl config validate
// --online`, at agent start, and by a run's preflight on the source agent before quiesce.
//
// Only the last component of a configured path must not be a symlink: parents such as
// /var/run -> /run are the system's choice and are followed (the real paths are compared).
package storagecheck

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/replctl/replctl/config"
)

// Root is one storage system as one host sees it.
type Root struct {
	Host    string
	Storage string
	Path    string
}

// HostRoots returns the storage systems h attaches, sorted by storage name.
func HostRoots(h *config.Host) []Root {
	names := make([]string, 0, len(h.Attach))
	for s := range h.Attach {
		names = append(names, s)
	}
	sort.Strings(names)
	roots := make([]Root, len(names))
	for i, s := range names {
		roots[i] = Root{Host: h.Name, Storage: s, Path: h.Attach[s]}
	}
	return roots
}

// Host checks the storage host attaches in cfg (see Check).
func Host(cfg *config.Config, host string) error {
	h, err := cfg.Host(host)
	if err != nil {
		return err
	}
	return Check(HostRoots(h))
}

// seen is a root as found on disk.
type seen struct {
	Root
	real     string // filepath.EvalSymlinks of Path
	dev, ino uint64
}

// Check checks roots as this machine sees them: each must exist and be a directory whose
// configured path is not a symlink, and no two roots of different storage systems may be the
// same directory (device and inode) or one inside the other (real paths). Roots of the same
// storage on several hosts are not compared with each other. The error joins one error per
// problem, each naming the paths and storage systems involved.
func Check(roots []Root) error {
	oneHost := true
	for _, r := range roots {
		oneHost = oneHost && r.Host == roots[0].Host
	}
	name := func(r Root) string {
		if oneHost {
			return fmt.Sprintf("storage %s at %s", r.Storage, r.Path)
		}
		return fmt.Sprintf("storage %s at %s (host %s)", r.Storage, r.Path, r.Host)
	}
	var errs []error
	var found []seen
	for _, r := range roots {
		s, err := inspect(r, name(r))
		if err != nil {
			errs = append(errs, err)
		}
		if s != nil {
			found = append(found, *s)
		}
	}
	for i, a := range found {
		for _, b := range found[i+1:] {
			if a.Storage == b.Storage {
				continue
			}
			switch {
			case a.dev == b.dev && a.ino == b.ino:
				errs = append(errs, fmt.Errorf("%s is the same directory as %s (device %d:%d inode %d): two storage systems must be two directories",
					name(b.Root), name(a.Root), unix.Major(a.dev), unix.Minor(a.dev), a.ino))
			case inside(b.real, a.real):
				errs = append(errs, fmt.Errorf("%s is inside %s%s: two storage systems must not nest", name(b.Root), name(a.Root), realPaths(b, a)))
			case inside(a.real, b.real):
				errs = append(errs, fmt.Errorf("%s is inside %s%s: two storage systems must not nest", name(a.Root), name(b.Root), realPaths(a, b)))
			}
		}
	}
	if len(errs) == 0 {
		return nil
	}
	if oneHost {
		for i, err := range errs {
			errs[i] = fmt.Errorf("host %s: %w", roots[0].Host, err)
		}
	}
	return errors.Join(errs...)
}

// inspect finds r on disk. It returns what it found (nil when there is nothing to compare)
// and the problem with it, if any: a symlink is reported and still compared by what it
// resolves to, so a link to another storage is named as such too.
func inspect(r Root, name string) (*seen, error) {
	fi, err := os.Lstat(r.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%s does not exist%s: mount the storage or create the directory, or fix the path in the config (hosts[].attach)", name, nearest(r.Path))
	case err != nil:
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var problem error
	if fi.Mode()&fs.ModeSymlink != 0 {
		target, _ := os.Readlink(r.Path)
		real, rerr := filepath.EvalSymlinks(r.Path)
		if rerr != nil {
			return nil, fmt.Errorf("%s is a symlink to %s, which does not resolve (%v): configure the storage's real directory, not a link", name, target, rerr)
		}
		problem = fmt.Errorf("%s is a symlink to %s (real path %s): configure the storage's real directory, not a link", name, target, real)
	}
	st, err := os.Stat(r.Path)
	if err != nil {
		return nil, errors.Join(problem, fmt.Errorf("%s: %w", name, err))
	}
	if !st.IsDir() {
		return nil, errors.Join(problem, fmt.Errorf("%s is not a directory (mode %s)", name, st.Mode()))
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return nil, errors.Join(problem, fmt.Errorf("%s: no device and inode on this system", name))
	}
	real, err := filepath.EvalSymlinks(r.Path)
	if err != nil {
		return nil, errors.Join(problem, fmt.Errorf("%s: %w", name, err))
	}
	return &seen{Root: r, real: real, dev: uint64(sys.Dev), ino: sys.Ino}, problem
}

// inside tells whether path p is strictly inside directory dir (both real, clean paths).
func inside(p, dir string) bool {
	if dir == string(filepath.Separator) {
		return p != dir
	}
	return strings.HasPrefix(p, dir+string(filepath.Separator))
}

// realPaths names the real paths of a and b when they are not the configured ones.
func realPaths(a, b seen) string {
	if a.real == filepath.Clean(a.Path) && b.real == filepath.Clean(b.Path) {
		return ""
	}
	return fmt.Sprintf(" (real paths %s and %s)", a.real, b.real)
}

// nearest names the nearest existing parent of a missing path: it tells a storage that is
// not mounted (the mount point's parent exists) from a wrong path.
func nearest(p string) string {
	for d := filepath.Dir(p); ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil {
			return fmt.Sprintf(" (nearest existing parent: %s)", d)
		}
		if d == filepath.Dir(d) {
			return ""
		}
	}
}
