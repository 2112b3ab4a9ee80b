package fidelity

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Attribute classes a Diff can name.
const (
	AttrExists    = "exists" // an entry on one side only; Want/Got name its type or "absent"
	AttrType      = "type"
	AttrSize      = "size"
	AttrContent   = "content"
	AttrMode      = "mode" // all 12 bits; not for symlinks
	AttrOwner     = "owner"
	AttrMtime     = "mtime"
	AttrTarget    = "target" // symlink target bytes
	AttrRdev      = "rdev"
	AttrHardlinks = "hardlinks" // the other paths of the tree that share the entry's inode
	AttrSparse    = "sparse"    // data ranges (SEEK_DATA/SEEK_HOLE) and allocated blocks
	// Xattr classes: xattr.user, xattr.trusted, xattr.security, capability, acl.access,
	// acl.default (the same names as the Generate features).
	AttrXattrSecurity = "xattr.security"
)

// Diff is one attribute of one path that differs: Want is a's, Got is b's.
type Diff struct {
	Path, Attr string
	Want, Got  string
}

func (d Diff) String() string {
	return fmt.Sprintf("%q %s: want %s, got %s", d.Path, d.Attr, d.Want, d.Got)
}

// Class is Attr, made finer for AttrExists by the type of the entry that is on one side
// only ("exists:fifo"), so that a lost FIFO and a lost file count apart.
func (d Diff) Class() string {
	if d.Attr != AttrExists {
		return d.Attr
	}
	if d.Want == "absent" {
		return AttrExists + ":" + d.Got
	}
	return AttrExists + ":" + d.Want
}

// Result is what Check found: the diffs, and for each class the number of entries of the
// first tree that class applies to (so that "0 diffs" can be told from "nothing checked").
type Result struct {
	Diffs   []Diff
	Entries map[string]int
}

// Compare compares tree b against tree a entry for entry and returns the differences,
// sorted by path then attribute. a and b themselves may be symlinks (they are resolved);
// nothing below them is followed.
func Compare(a, b string) ([]Diff, error) {
	r, err := Check(a, b)
	return r.Diffs, err
}

// Check is Compare that also counts, per class, the entries of a it applies to.
func Check(a, b string) (Result, error) {
	var ta, tb tree
	var ea, eb error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); ta, ea = scan(a) }()
	tb, eb = scan(b)
	wg.Wait()
	if ea != nil {
		return Result{}, ea
	}
	if eb != nil {
		return Result{}, eb
	}
	r := Result{Entries: counts(ta)}
	paths := make([]string, 0, len(ta))
	for p := range ta {
		paths = append(paths, p)
	}
	for p := range tb {
		if ta[p] == nil {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	ga, gb := linkGroups(ta), linkGroups(tb)
	for _, p := range paths {
		r.Diffs = append(r.Diffs, compareNode(p, ta[p], tb[p])...)
		if na, nb := ta[p], tb[p]; na != nil && nb != nil && na.typ == nb.typ && na.typ != unix.S_IFDIR {
			if wa, wb := ga.others(p, na), gb.others(p, nb); wa != wb {
				r.Diffs = append(r.Diffs, Diff{p, AttrHardlinks, wa, wb})
			}
		}
	}
	return r, nil
}

func compareNode(p string, a, b *node) []Diff {
	switch {
	case b == nil:
		return []Diff{{p, AttrExists, typeName(a.typ), "absent"}}
	case a == nil:
		return []Diff{{p, AttrExists, "absent", typeName(b.typ)}}
	case a.typ != b.typ:
		return []Diff{{p, AttrType, typeName(a.typ), typeName(b.typ)}}
	}
	var ds []Diff
	add := func(attr string, want, got any) {
		ds = append(ds, Diff{p, attr, fmt.Sprint(want), fmt.Sprint(got)})
	}
	if a.typ != unix.S_IFLNK && a.mode != b.mode {
		add(AttrMode, fmt.Sprintf("%04o", a.mode), fmt.Sprintf("%04o", b.mode))
	}
	if a.uid != b.uid || a.gid != b.gid {
		add(AttrOwner, fmt.Sprintf("%d:%d", a.uid, a.gid), fmt.Sprintf("%d:%d", b.uid, b.gid))
	}
	if a.mtime != b.mtime {
		add(AttrMtime, fmtTime(a.mtime), fmtTime(b.mtime))
	}
	switch a.typ {
	case unix.S_IFREG:
		if a.size != b.size {
			add(AttrSize, a.size, b.size)
		}
		if a.sum != b.sum {
			add(AttrContent, fmt.Sprintf("sha256-ish %x", a.sum[:8]), fmt.Sprintf("sha256-ish %x", b.sum[:8]))
		}
		if !slices.Equal(a.data, b.data) {
			add(AttrSparse, layout(a), layout(b))
		}
	case unix.S_IFLNK:
		if a.target != b.target {
			add(AttrTarget, fmt.Sprintf("%q", a.target), fmt.Sprintf("%q", b.target))
		}
	case unix.S_IFCHR, unix.S_IFBLK:
		if a.rdev != b.rdev {
			add(AttrRdev, fmtDev(a.rdev), fmtDev(b.rdev))
		}
	}
	names := make([]string, 0, len(a.xattrs)+len(b.xattrs))
	for n := range a.xattrs {
		names = append(names, n)
	}
	for n := range b.xattrs {
		if _, ok := a.xattrs[n]; !ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		va, oka := a.xattrs[n]
		vb, okb := b.xattrs[n]
		if oka != okb || va != vb {
			add(xattrClass(n), fmtXattr(n, va, oka), fmtXattr(n, vb, okb))
		}
	}
	return ds
}

// xattrClass is the attribute class of xattr name.
func xattrClass(name string) string {
	switch {
	case name == "security.capability":
		return FeatCapability
	case name == "system.posix_acl_access":
		return FeatACLAccess
	case name == "system.posix_acl_default":
		return FeatACLDefault
	case strings.HasPrefix(name, "user."):
		return FeatUserXattr
	case strings.HasPrefix(name, "trusted."):
		return FeatTrusted
	}
	return AttrXattrSecurity
}

// counts gives, per class, the entries of t the class applies to.
func counts(t tree) map[string]int {
	c := map[string]int{}
	byIno := map[uint64]int{}
	for _, n := range t {
		if n.typ != unix.S_IFDIR {
			byIno[n.ino]++
		}
	}
	for _, n := range t {
		c[AttrExists+":"+typeName(n.typ)]++
		c[AttrType]++
		c[AttrOwner]++
		c[AttrMtime]++
		if n.typ != unix.S_IFLNK {
			c[AttrMode]++
		}
		switch n.typ {
		case unix.S_IFREG:
			c[AttrSize]++
			c[AttrContent]++
			if n.size > 0 && !(len(n.data) == 1 && n.data[0] == span{0, n.size}) {
				c[AttrSparse]++ // files with a hole
			}
		case unix.S_IFLNK:
			c[AttrTarget]++
		case unix.S_IFCHR, unix.S_IFBLK:
			c[AttrRdev]++
		}
		if n.typ != unix.S_IFDIR && byIno[n.ino] > 1 {
			c[AttrHardlinks]++
		}
		seen := map[string]bool{}
		for name := range n.xattrs {
			if cl := xattrClass(name); !seen[cl] {
				seen[cl] = true
				c[cl]++
			}
		}
	}
	return c
}

// groups is a tree's partition of non-directory paths by inode.
type groups map[uint64][]string

func linkGroups(t tree) groups {
	g := groups{}
	for p, n := range t {
		if n.typ != unix.S_IFDIR {
			g[n.ino] = append(g[n.ino], p)
		}
	}
	for _, ps := range g {
		sort.Strings(ps)
	}
	return g
}

// others names the paths other than p that share p's inode, or "none".
func (g groups) others(p string, n *node) string {
	var out []string
	for _, q := range g[n.ino] {
		if q != p {
			out = append(out, fmt.Sprintf("%q", q))
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, " ")
}

func typeName(typ uint32) string {
	switch typ {
	case unix.S_IFREG:
		return "file"
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFCHR:
		return "chardev"
	case unix.S_IFBLK:
		return "blockdev"
	}
	return fmt.Sprintf("type-%o", typ)
}

func fmtTime(t unix.Timespec) string { return fmt.Sprintf("%d.%09d", t.Sec, t.Nsec) }

func fmtDev(d uint64) string { return fmt.Sprintf("%d:%d", unix.Major(d), unix.Minor(d)) }

func fmtXattr(name, v string, ok bool) string {
	if !ok {
		return name + " absent"
	}
	if len(v) > 40 {
		return fmt.Sprintf("%s=%q…(%d bytes)", name, v[:40], len(v))
	}
	return fmt.Sprintf("%s=%q", name, v)
}

func layout(n *node) string {
	var b strings.Builder
	b.WriteString("data")
	if len(n.data) == 0 {
		b.WriteString(" none")
	}
	for i, s := range n.data {
		if i == 8 {
			fmt.Fprintf(&b, " …+%d", len(n.data)-i)
			break
		}
		fmt.Fprintf(&b, " [%d,%d)", s.Off, s.End)
	}
	fmt.Fprintf(&b, ", %d KiB allocated", n.blocks/2)
	return b.String()
}
