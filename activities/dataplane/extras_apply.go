package dataplane

// Applying and verifying Extras in a tree (the pull's staging dir, or a replica).

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"slices"

	"golang.org/x/sys/unix"
)

// procPath names entry base of the open directory dfd for the path-only xattr calls
// (lsetxattr and friends never follow the last component; /proc/self/fd/N resolves to the
// directory itself, never through a path an attacker could swap).
func procPath(dfd int, base string) string {
	if base == "." {
		return fmt.Sprintf("/proc/self/fd/%d/.", dfd)
	}
	return fmt.Sprintf("/proc/self/fd/%d/%s", dfd, base)
}

// extrasDirs opens directories of a tree beneath its root fd, each once, by image path.
type extrasDirs struct {
	root int
	fds  map[string]int
	// names: set once entries have their raw names back (verification), nil before.
	names diskNames
}

func (d *extrasDirs) open(dir string) (int, error) {
	if fd, ok := d.fds[dir]; ok {
		return fd, nil
	}
	fd, err := openBeneath(d.root, d.names.disk(dir), unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return -1, fmt.Errorf("opening %s: %w", dir, err)
	}
	d.fds[dir] = fd
	return fd, nil
}

// entry opens the directory of path p (the root itself for ".") and returns it with the
// name of p in it.
func (d *extrasDirs) entry(p string) (int, string, error) {
	if p == "." {
		fd, err := d.open(".")
		return fd, ".", err
	}
	dir, base := splitRel(p)
	if raw, ok := d.names[p]; ok {
		base = raw
	}
	fd, err := d.open(dir)
	return fd, base, err
}

func (d *extrasDirs) close() {
	for _, fd := range d.fds {
		unix.Close(fd) //nolint:errcheck
	}
}

// applyExtras makes the tree under rootFd hold x: hard-link groups (each later path
// replaced by a link to the first), special entries with their owner, mode and mtime, and
// extended attributes of everything but regular files (the pull sets theirs as it writes
// them, or they carry them from the replica they are linked from; a capability last). Directory times are the caller's: this
// changes the directories it links and creates entries in.
func applyExtras(rootFd int, x *Extras, owners bool, refuse refuser) error {
	if x.Empty() {
		return nil
	}
	d := &extrasDirs{root: rootFd, fds: map[string]int{}}
	defer d.close()
	if refuse == nil {
		refuse = func(_, _ string, err error) error { return err }
	}
	for _, g := range x.Links {
		if err := applyLinkGroup(d, g); err != nil {
			if rerr := refuse(g[0], "hard link", err); rerr != nil {
				return rerr
			}
		}
	}
	for _, e := range x.Entries {
		dfd, base, err := d.entry(e.Path)
		if err != nil {
			return err
		}
		special := e.Special
		if special != nil {
			if err := makeSpecial(dfd, base, special, owners); err != nil {
				if rerr := refuse(e.Path, special.Type, err); rerr != nil {
					return fmt.Errorf("%s: %w", e.Path, rerr)
				}
				continue // left out: no xattrs, no times
			}
		}
		if len(e.Xattrs) > 0 {
			var st unix.Stat_t
			if err := unix.Fstatat(dfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return fmt.Errorf("%s: %w", e.Path, err)
			}
			// A regular file got its xattrs when it was written, or carries them from the
			// replica it is linked from (same xattrs in both images: noLinkPaths).
			if st.Mode&unix.S_IFMT != unix.S_IFREG {
				if err := setXattrs(dfd, base, e.Path, e.Xattrs, refuse); err != nil {
					return fmt.Errorf("%s: %w", e.Path, err)
				}
			}
		}
		if s := special; s != nil {
			ts := unix.NsecToTimespec(s.Mtime)
			if err := unix.UtimesNanoAt(dfd, base, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return fmt.Errorf("%s: setting times: %w", e.Path, err)
			}
		}
	}
	return nil
}

// applyLinkGroup links every later path of g to its first (already written) path. A path
// that already is that inode (a resumed attempt) is left alone.
func applyLinkGroup(d *extrasDirs, g []string) error {
	fdir, fbase := splitRel(g[0])
	ffd, err := d.open(fdir)
	if err != nil {
		return err
	}
	var first unix.Stat_t
	if err := unix.Fstatat(ffd, fbase, &first, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("hard-link group of %s: %w", g[0], err)
	}
	if first.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("hard-link group of %s: not a regular file in the image", g[0])
	}
	for _, m := range g[1:] {
		mdir, mbase := splitRel(m)
		mfd, err := d.open(mdir)
		if err != nil {
			return err
		}
		var st unix.Stat_t
		err = unix.Fstatat(mfd, mbase, &st, unix.AT_SYMLINK_NOFOLLOW)
		switch {
		case err == nil && st.Dev == first.Dev && st.Ino == first.Ino:
			continue
		case err == nil && st.Mode&unix.S_IFMT != unix.S_IFREG:
			return fmt.Errorf("hard-link group of %s: %s is not a regular file in the image", g[0], m)
		case err == nil:
			if err := unix.Unlinkat(mfd, mbase, 0); err != nil {
				return fmt.Errorf("hard-link group of %s: replacing %s: %w", g[0], m, err)
			}
		case !errors.Is(err, unix.ENOENT):
			return fmt.Errorf("hard-link group of %s: %s: %w", g[0], m, err)
		}
		if err := unix.Linkat(ffd, fbase, mfd, mbase, 0); err != nil {
			return fmt.Errorf("hard-link group of %s: linking %s: %w", g[0], m, err)
		}
	}
	return nil
}

// makeSpecial creates a FIFO, socket or device with its owner and mode (mknod applies the
// umask, so the mode is set again).
func makeSpecial(dfd int, base string, s *Special, owners bool) error {
	t, err := specialMode(s.Type)
	if err != nil {
		return err
	}
	if err := unix.Mknodat(dfd, base, t|s.Mode, int(s.Rdev)); err != nil {
		return fmt.Errorf("creating %s: %w", s.Type, err)
	}
	if owners {
		if err := unix.Fchownat(dfd, base, int(s.UID), int(s.GID), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	if err := unix.Fchmodat(dfd, base, s.Mode, 0); err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	return nil
}

// verifyExtras checks that the tree under rootFd holds x exactly: every link group is one
// inode, every special entry has its type, mode, owner (when owners), device number and
// mtime, and every listed entry has exactly its xattrs. Entries not listed are checked by
// the tree walk (noXattrs). names: x.diskNames(), where entries have their raw names back.
func verifyExtras(rootFd int, x *Extras, names diskNames, owners bool) error {
	if x.Empty() {
		return nil
	}
	d := &extrasDirs{root: rootFd, fds: map[string]int{}, names: names}
	defer d.close()
	for _, g := range x.Links {
		var ino [2]uint64
		for i, p := range g {
			dfd, base, err := d.entry(p)
			if err != nil {
				return fmt.Errorf("%w: %s: %v", ErrVerify, p, err)
			}
			var st unix.Stat_t
			if err := unix.Fstatat(dfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return fmt.Errorf("%w: %s: %v", ErrVerify, p, err)
			}
			if i == 0 {
				ino = [2]uint64{st.Dev, st.Ino}
			} else if ino != [2]uint64{st.Dev, st.Ino} {
				return fmt.Errorf("%w: %s: not a hard link of %s as in the image", ErrVerify, p, g[0])
			}
		}
	}
	for _, e := range x.Entries {
		dfd, base, err := d.entry(e.Path)
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrVerify, e.Path, err)
		}
		if s := e.Special; s != nil {
			if err := verifySpecial(dfd, base, s, owners); err != nil {
				return fmt.Errorf("%w: %s: %v", ErrVerify, e.Path, err)
			}
		}
		got, err := readXattrsAt(dfd, base)
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrVerify, e.Path, err)
		}
		if err := sameXattrs(got, e.Xattrs); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrVerify, e.Path, err)
		}
	}
	return nil
}

func verifySpecial(dfd int, base string, s *Special, owners bool) error {
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if got := specialType(st.Mode); got != s.Type {
		return fmt.Errorf("type %q, image has %q", got, s.Type)
	}
	if got := st.Mode & 0o7777; got != s.Mode {
		return fmt.Errorf("mode %o, image has %o", got, s.Mode)
	}
	if owners && (st.Uid != s.UID || st.Gid != s.GID) {
		return fmt.Errorf("owner %d:%d, image has %d:%d", st.Uid, st.Gid, s.UID, s.GID)
	}
	if (s.Type == SpecialChar || s.Type == SpecialBlock) && st.Rdev != s.Rdev {
		return fmt.Errorf("device %d:%d, image has %d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev), unix.Major(s.Rdev), unix.Minor(s.Rdev))
	}
	if got := st.Mtim.Nano(); got != s.Mtime {
		return fmt.Errorf("mtime %d, image has %d", got, s.Mtime)
	}
	return nil
}

// sameXattrs compares two sorted attribute lists, naming the first difference.
func sameXattrs(got, want []Xattr) error {
	g := map[string][]byte{}
	for _, a := range got {
		g[a.Name] = a.Value
	}
	for _, a := range want {
		v, ok := g[a.Name]
		if !ok {
			return fmt.Errorf("xattr %s missing", a.Name)
		}
		if !bytes.Equal(v, a.Value) {
			return fmt.Errorf("xattr %s has another value (%d bytes, image has %d)", a.Name, len(v), len(a.Value))
		}
		delete(g, a.Name)
	}
	for _, a := range got {
		if _, extra := g[a.Name]; extra && !targetLabel(a.Name) {
			return fmt.Errorf("xattr %s not in the image", a.Name)
		}
	}
	return nil
}

// targetLabel is an attribute a target filesystem may set on every new file by itself (an
// SELinux label): its presence on the target alone is not a difference.
func targetLabel(name string) bool { return name == "security.selinux" }

// noXattrs checks that the entry at p, which has no xattrs in the image, has none on disk.
func noXattrs(p, rel string) error {
	names, err := listXattrs(p)
	if err != nil {
		return fmt.Errorf("%w: %s: listing xattrs: %v", ErrVerify, rel, err)
	}
	for _, n := range names {
		if !targetLabel(n) {
			return fmt.Errorf("%w: %s: xattr %s not in the image", ErrVerify, path.Clean(rel), n)
		}
	}
	return nil
}

// setXattrs sets xs on entry base (path rel) of directory dfd, a file capability last. An
// attribute the target refuses is passed to refuse (nil: every error fails).
func setXattrs(dfd int, base, rel string, xs []Xattr, refuse refuser) error {
	for _, a := range xattrOrder(xs) {
		if err := unix.Lsetxattr(procPath(dfd, base), a.Name, a.Value, 0); err != nil {
			if refuse == nil {
				return fmt.Errorf("setting xattr %s: %w", a.Name, err)
			}
			if rerr := refuse(rel, "xattr "+a.Name, err); rerr != nil {
				return fmt.Errorf("setting xattr %s: %w", a.Name, rerr)
			}
		}
	}
	return nil
}

// refuser decides about something the target would not take (rel, what: "xattr NAME",
// "fifo", "char", "hard link", ...): nil leaves it out, an error fails the pull.
type refuser func(rel, what string, err error) error

// targetRefused: the target filesystem (or the agent's privileges) does not take this
// attribute or entry; a full, read-only or failing storage is a storage fault instead.
func targetRefused(err error) bool {
	// EACCES: a security module's policy (e.g. SELinux refusing a relabel to the source's
	// label).
	for _, e := range []error{unix.EPERM, unix.EACCES, unix.EOPNOTSUPP, unix.E2BIG, unix.ERANGE, unix.EINVAL, unix.EMLINK} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// without returns x minus what the target refused (dropped: path → "xattr NAME", a
// special type or "hard link"), for verification: a link group is dropped whole.
func (x *Extras) without(dropped map[string][]string) *Extras {
	if len(dropped) == 0 || x == nil {
		return x
	}
	out := &Extras{Version: x.Version}
	for _, g := range x.Links {
		if _, ok := dropped[g[0]]; !ok || !slices.Contains(dropped[g[0]], "hard link") {
			out.Links = append(out.Links, g)
		}
	}
	for _, e := range x.Entries {
		d := dropped[e.Path]
		if e.Special != nil && slices.Contains(d, e.Special.Type) {
			continue
		}
		e.Xattrs = slices.DeleteFunc(slices.Clone(e.Xattrs), func(a Xattr) bool { return slices.Contains(d, "xattr "+a.Name) })
		if e.Special != nil || len(e.Xattrs) > 0 {
			out.Entries = append(out.Entries, e)
		}
	}
	return out
}
