package fidelity

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// The uid and gid that have no passwd or group entry on any sane host.
const (
	OddUID = 4242
	OddGID = 4343
)

func (g *gen) files(Options) error {
	if err := g.mkdirs("files"); err != nil {
		return err
	}
	for _, f := range []struct {
		rel  string
		size int
		mode uint32
	}{
		{"files/empty", 0, 0o644}, {"files/small", 1 + g.rng.IntN(4096), 0o640},
		{"files/big", 3<<20 + 12345, 0o600}, {"files/one-byte", 1, 0o444},
	} {
		if _, err := g.file(f.rel, f.size, f.mode); err != nil {
			return err
		}
		g.made(FeatFiles, f.rel)
	}
	return nil
}

func (g *gen) dirs(Options) error {
	if err := g.mkdirs("dirs"); err != nil {
		return err
	}
	for _, d := range []struct {
		rel   string
		mode  uint32
		child bool
	}{
		{"dirs/empty", 0o755, false}, {"dirs/private", 0o700, true}, {"dirs/empty-ro", 0o555, false},
		{"dirs/ro", 0o555, true}, {"dirs/sticky", 0o1777, true}, {"dirs/sgid", 0o2775, true},
		{"dirs/all-bits", 0o7777, false},
	} {
		if _, err := g.mkdir(d.rel, d.mode); err != nil {
			return err
		}
		g.made(FeatDirs, d.rel)
		if d.child {
			if err := g.mkdirs(d.rel + "/sub"); err != nil {
				return err
			}
			if _, err := g.file(d.rel+"/sub/file", 100, 0o644); err != nil {
				return err
			}
			if _, err := g.file(d.rel+"/file", 10, 0o600); err != nil {
				return err
			}
		}
	}
	return nil
}

func (g *gen) modeBits(Options) error {
	if err := g.mkdirs("modebits"); err != nil {
		return err
	}
	for _, f := range []struct {
		rel  string
		mode uint32
	}{
		{"modebits/setuid", 0o4755}, {"modebits/setgid", 0o2711}, {"modebits/sticky", 0o1644}, {"modebits/all", 0o7777},
	} {
		if _, err := g.file(f.rel, 64, f.mode); err != nil {
			return err
		}
		g.made(FeatModeBits, f.rel)
	}
	return nil
}

// owners gives entries a numeric owner; finish records them made or skipped.
func (g *gen) owners(Options) error {
	if err := g.mkdirs("owners"); err != nil {
		return err
	}
	d, err := g.mkdir("owners/dir", 0o750)
	if err != nil {
		return err
	}
	d.uid, d.gid = OddGID, OddUID
	f, err := g.file("owners/file", 33, 0o644)
	if err != nil {
		return err
	}
	f.uid, f.gid = OddUID, OddGID
	s, err := g.file("owners/setuid-other", 20, 0o6750) // chmod after chown keeps the bits
	if err != nil {
		return err
	}
	s.uid, s.gid = OddUID, OddGID
	l, err := g.symlink("file", "owners/link")
	if err != nil {
		return err
	}
	l.uid, l.gid = OddUID, OddGID
	return nil
}

func (g *gen) symlinks(Options) error {
	if err := g.mkdirs("symlinks"); err != nil {
		return err
	}
	for _, l := range [][2]string{
		{"symlinks/relative", "../files/small"},
		{"symlinks/absolute", "/etc/passwd"},
		{"symlinks/dangling", "no/such/entry"},
		{"symlinks/to-dir", "../dirs/ro"},
		{"symlinks/odd", "odd \xff\xfe\n\ttarget\\ -x"},
		{"symlinks/long", strings.Repeat("long/", 200) + "end"},
		{"symlinks/self", "self"},
	} {
		if _, err := g.symlink(l[1], l[0]); err != nil {
			return err
		}
		g.made(FeatSymlinks, l[0])
	}
	return nil
}

func (g *gen) hardlinks(Options) error {
	if err := g.mkdirs("hardlinks", "hardlinks/sub"); err != nil {
		return err
	}
	groups := [][]string{
		{"hardlinks/pair-a", "hardlinks/sub/pair-b"},
		{"hardlinks/trio-a", "hardlinks/trio-b", "hardlinks/sub/trio-c"},
	}
	for _, grp := range groups {
		if _, err := g.file(grp[0], 500+g.rng.IntN(500), 0o644); err != nil {
			return err
		}
		for _, rel := range grp[1:] {
			if err := os.Link(g.path(grp[0]), g.path(rel)); err != nil {
				return err
			}
		}
		for _, rel := range grp {
			g.made(FeatHardlinks, rel)
		}
	}
	return nil
}

// sparse writes data at odd offsets into a large file with holes between, a file that is
// one hole, and one whose only data is at its end.
func (g *gen) sparse(o Options) error {
	if err := g.mkdirs("sparse"); err != nil {
		return err
	}
	write := func(rel string, size int64, at map[int64]int) error {
		f, err := os.OpenFile(g.path(rel), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := f.Truncate(size); err != nil {
			return err
		}
		for _, off := range slices.Sorted(maps.Keys(at)) {
			if _, err := f.WriteAt(g.random(at[off]), off); err != nil {
				return err
			}
		}
		if err := f.Close(); err != nil {
			return err
		}
		g.add(rel).mode = 0o644
		g.made(FeatSparse, rel)
		return nil
	}
	s := o.SparseSize
	if err := write("sparse/large", s, map[int64]int{1<<20 + 3: 4096 + 5, s/3 + 7: 70_000, s/2 + 123: 1}); err != nil {
		return err
	}
	if err := write("sparse/all-hole", s/4, nil); err != nil {
		return err
	}
	return write("sparse/data-at-end", s/8, map[int64]int{s/8 - 100: 100})
}

func (g *gen) userXattrs(Options) error {
	if err := g.mkdirs("xattr"); err != nil {
		return err
	}
	f, err := g.file("xattr/file", 50, 0o644)
	if err != nil {
		return err
	}
	f.xattrs = append(f.xattrs,
		xattr{FeatUserXattr, "user.text", []byte("value")},
		xattr{FeatUserXattr, "user.binary", []byte{0, 1, 2, 0xff, '\n', 0}},
		xattr{FeatUserXattr, "user.empty", nil},
		xattr{FeatUserXattr, "user.large", g.random(3000)})
	d, err := g.mkdir("xattr/dir", 0o750)
	if err != nil {
		return err
	}
	d.xattrs = append(d.xattrs, xattr{FeatUserXattr, "user.on-dir", []byte("d")})
	return nil
}

func (g *gen) trusted(Options) error {
	if err := g.ensureDir("xattr"); err != nil {
		return err
	}
	f, err := g.file("xattr/trusted", 20, 0o644)
	if err != nil {
		return err
	}
	f.xattrs = append(f.xattrs, xattr{FeatTrusted, "trusted.t", []byte("trusted value")})
	l, err := g.symlink("trusted", "xattr/trusted-link") // user.* is refused on symlinks
	if err != nil {
		return err
	}
	l.xattrs = append(l.xattrs, xattr{FeatTrusted, "trusted.on-link", []byte("l")})
	return nil
}

func (g *gen) capability(Options) error {
	if err := g.mkdirs("caps"); err != nil {
		return err
	}
	f, err := g.file("caps/net-bind", 200, 0o755)
	if err != nil {
		return err
	}
	f.xattrs = append(f.xattrs, xattr{FeatCapability, "security.capability", CapabilityV2(1<<10|1<<13, 0, true)})
	return nil
}

// acls gives a file an access ACL and a dir an access and a default ACL; the default ACL
// is set after the dir's child was made, so the child is plain.
func (g *gen) acls(Options) error {
	if err := g.mkdirs("acl"); err != nil {
		return err
	}
	access := ACL([]ACLEntry{
		{Tag: ACLUserObj, Perm: 6}, {Tag: ACLUser, ID: OddUID, Perm: 4}, {Tag: ACLGroupObj, Perm: 4},
		{Tag: ACLGroup, ID: OddGID, Perm: 6}, {Tag: ACLMask, Perm: 6}, {Tag: ACLOther, Perm: 0},
	})
	f, err := g.file("acl/file", 40, 0)
	if err != nil {
		return err
	}
	f.xattrs = append(f.xattrs, xattr{FeatACLAccess, "system.posix_acl_access", access})
	d, err := g.mkdir("acl/dir", 0)
	if err != nil {
		return err
	}
	if _, err := g.file("acl/dir/child", 10, 0o640); err != nil {
		return err
	}
	dirAccess := ACL([]ACLEntry{
		{Tag: ACLUserObj, Perm: 7}, {Tag: ACLUser, ID: OddUID, Perm: 5}, {Tag: ACLGroupObj, Perm: 5},
		{Tag: ACLMask, Perm: 7}, {Tag: ACLOther, Perm: 1},
	})
	if g.skip[FeatACLDefault] {
		d.xattrs = append(d.xattrs, xattr{FeatACLAccess, "system.posix_acl_access", dirAccess})
		return nil
	}
	deflt := ACL([]ACLEntry{
		{Tag: ACLUserObj, Perm: 7}, {Tag: ACLGroupObj, Perm: 5}, {Tag: ACLGroup, ID: OddGID, Perm: 7},
		{Tag: ACLMask, Perm: 7}, {Tag: ACLOther, Perm: 0},
	})
	d.xattrs = append(d.xattrs, xattr{FeatACLAccess, "system.posix_acl_access", dirAccess},
		xattr{FeatACLDefault, "system.posix_acl_default", deflt})
	return nil
}

func (g *gen) special() error { return g.ensureDir("special") }

// ensureDir makes rel (0755) unless an earlier feature made it.
func (g *gen) ensureDir(rel string) error {
	if _, err := os.Lstat(g.path(rel)); err == nil {
		return nil
	}
	return g.mkdirs(rel)
}

func (g *gen) fifo(Options) error {
	if err := g.special(); err != nil {
		return err
	}
	if err := g.try(FeatFIFO, "special/fifo", unix.Mkfifo(g.path("special/fifo"), 0o620)); err != nil {
		return err
	}
	g.addIfMade(FeatFIFO, "special/fifo", 0o620)
	return nil
}

// socket binds a unix socket and closes it, leaving the socket file. The path is bound
// through /proc/self/fd/N/ so that a deep root does not exceed sun_path's 108 bytes.
func (g *gen) socket(Options) error {
	if err := g.special(); err != nil {
		return err
	}
	dfd, err := unix.Open(g.path("special"), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return g.try(FeatSocket, "special/socket", err)
	}
	err = unix.Bind(s, &unix.SockaddrUnix{Name: fmt.Sprintf("/proc/self/fd/%d/socket", dfd)})
	unix.Close(s)
	if err != nil {
		return g.try(FeatSocket, "special/socket", err)
	}
	g.made(FeatSocket, "special/socket")
	g.add("special/socket").mode = 0o755
	return nil
}

func (g *gen) charDevice(Options) error {
	if err := g.special(); err != nil {
		return err
	}
	err := unix.Mknod(g.path("special/chardev"), unix.S_IFCHR|0o640, int(unix.Mkdev(1, 7)))
	if err := g.try(FeatCharDev, "special/chardev", err); err != nil {
		return err
	}
	g.addIfMade(FeatCharDev, "special/chardev", 0o640)
	return nil
}

func (g *gen) blockDevice(Options) error {
	if err := g.special(); err != nil {
		return err
	}
	err := unix.Mknod(g.path("special/blockdev"), unix.S_IFBLK|0o600, int(unix.Mkdev(259, 77)))
	if err := g.try(FeatBlockDev, "special/blockdev", err); err != nil {
		return err
	}
	g.addIfMade(FeatBlockDev, "special/blockdev", 0o600)
	return nil
}

// addIfMade registers rel with mode for the later phases when feature was made there.
func (g *gen) addIfMade(feature, rel string, mode uint32) {
	if slices.Contains(g.m.Made[feature], rel) {
		g.add(rel).mode = mode
	}
}

// names makes entries whose names shells and UTF-8 find hard, including an NFC and an NFD
// spelling of one word side by side.
func (g *gen) names(Options) error {
	if err := g.mkdirs("names"); err != nil {
		return err
	}
	for _, n := range []string{
		"new\nline", "tab\there", "-leading-dash", "--", " spaces  around ", "back\\slash",
		"invalid-\xff\xfe-utf8", "caf\u00e9", "cafe\u0301", "quote'\"$`*?[", "日本語", strings.Repeat("x", 240),
	} {
		if _, err := g.file("names/"+n, len(n), 0o644); err != nil {
			return err
		}
		g.made(FeatNames, "names/"+n)
	}
	if err := g.mkdirs("names/dir\nwith newline"); err != nil {
		return err
	}
	_, err := g.file("names/dir\nwith newline/-f", 3, 0o644)
	g.made(FeatNames, "names/dir\nwith newline/-f")
	return err
}

func (g *gen) deep(o Options) error {
	rel := "deep"
	for i := 0; i < o.Depth; i++ {
		if err := g.mkdirs(rel); err != nil {
			return err
		}
		rel = filepath.Join(rel, fmt.Sprintf("d%02d", i+1))
	}
	rel = filepath.Join(filepath.Dir(rel), "leaf")
	if _, err := g.file(rel, 7, 0o644); err != nil {
		return err
	}
	g.made(FeatDeep, rel)
	return nil
}

func (g *gen) wide(o Options) error {
	if err := g.mkdirs("wide"); err != nil {
		return err
	}
	for i := 0; i < o.WideFiles; i++ {
		if _, err := g.file(fmt.Sprintf("wide/f%05d", i), g.rng.IntN(64), 0o644); err != nil {
			return err
		}
	}
	g.made(FeatWide, "wide")
	return nil
}
