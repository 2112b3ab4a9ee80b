// Package fidelity builds awkward directory trees and compares two trees attribute by
// attribute, so that a copy (rsync's, cp's, a replctl replica) can be judged against the
// original: names, types, content, sizes, all twelve mode bits, numeric owners, mtimes to
// the nanosecond, symlink targets, device numbers, xattrs, POSIX ACLs, file capabilities,
// hard-link groups and sparse layout.
//
// Generate makes a tree with every kind of entry real hosts have; Compare reports each
// difference as a Diff naming the path, the attribute class, what was wanted and what was
// found. Neither follows a symlink below the roots it is given. The package imports
// nothing of the module, so the checker does not share code (or bugs) with what it checks.
package fidelity

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Feature names: Manifest.Made and Manifest.Skipped are keyed by them, Options.Without
// takes them.
const (
	FeatFiles      = "files"         // empty, small and multi-MiB regular files
	FeatDirs       = "dirs"          // empty dirs, 0700, 0555 with content, sticky, setgid
	FeatModeBits   = "modebits"      // setuid/setgid/sticky on files
	FeatOwners     = "owners"        // numeric uid/gid without a passwd entry
	FeatSymlinks   = "symlinks"      // relative, absolute, dangling, to a dir, odd bytes
	FeatHardlinks  = "hardlinks"     // groups of 2 and 3 links
	FeatSparse     = "sparse"        // data at odd offsets, all hole, data at the end
	FeatUserXattr  = "xattr.user"    // user.* on files and dirs
	FeatTrusted    = "xattr.trusted" // trusted.* (needs CAP_SYS_ADMIN)
	FeatCapability = "capability"    // security.capability (needs CAP_SETFCAP)
	FeatACLAccess  = "acl.access"    // system.posix_acl_access
	FeatACLDefault = "acl.default"   // system.posix_acl_default
	FeatFIFO       = "fifo"
	FeatSocket     = "socket"
	FeatCharDev    = "chardev" // needs CAP_MKNOD
	FeatBlockDev   = "blockdev"
	FeatNames      = "names" // names hard for shells, invalid UTF-8, NFC/NFD twins
	FeatDeep       = "deep"  // a chain of Options.Depth dirs
	FeatWide       = "wide"  // a dir of Options.WideFiles files
)

// SpecialFeatures are the entry kinds that are neither file, dir nor symlink.
var SpecialFeatures = []string{FeatFIFO, FeatSocket, FeatCharDev, FeatBlockDev}

// AllFeatures lists every feature Generate makes, in the order it makes them.
var AllFeatures = []string{
	FeatFiles, FeatDirs, FeatModeBits, FeatOwners, FeatSymlinks, FeatHardlinks, FeatSparse,
	FeatUserXattr, FeatTrusted, FeatCapability, FeatACLAccess, FeatACLDefault, FeatFIFO,
	FeatSocket, FeatCharDev, FeatBlockDev, FeatNames, FeatDeep, FeatWide,
}

// Options shape a generated tree. The zero value gives the defaults.
type Options struct {
	// Seed makes the tree: the same seed gives the same names, contents and times.
	Seed uint64
	// SparseSize is the apparent size of the large sparse file (default 64 MiB).
	SparseSize int64
	// WideFiles is the number of files in the wide dir (default 2000).
	WideFiles int
	// Depth is the depth of the deep chain of dirs (default 40).
	Depth int
	// Without lists features not to make (see the Feat constants).
	Without []string
}

// NotAsked is the Manifest.Skipped reason of a feature Options.Without named.
const NotAsked = "not asked for (Options.Without)"

// Manifest says what Generate made and what it skipped and why.
type Manifest struct {
	// Root is the generated tree's directory.
	Root string
	// Made maps each feature to the relative paths that carry it.
	Made map[string][]string
	// Skipped maps each feature that was not made to the reason: the kernel or filesystem
	// refused it, or Options.Without asked for it.
	Skipped map[string]string
}

// Generate builds the tree in dir, which must not exist or be empty. Features that the
// kernel or filesystem refuse (EPERM, EACCES, EOPNOTSUPP) are skipped and recorded in the
// Manifest; any other failure is an error.
func Generate(dir string, o Options) (Manifest, error) {
	if o.SparseSize == 0 {
		o.SparseSize = 64 << 20
	}
	if o.WideFiles == 0 {
		o.WideFiles = 2000
	}
	if o.Depth == 0 {
		o.Depth = 40
	}
	if o.SparseSize < 1<<20 || o.WideFiles < 0 || o.Depth < 1 {
		return Manifest{}, fmt.Errorf("fidelity: options: SparseSize %d must be at least 1 MiB, WideFiles %d not negative, Depth %d at least 1", o.SparseSize, o.WideFiles, o.Depth)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Manifest{}, fmt.Errorf("fidelity: %w", err)
	}
	if ents, err := os.ReadDir(dir); err != nil {
		return Manifest{}, fmt.Errorf("fidelity: %w", err)
	} else if len(ents) > 0 {
		return Manifest{}, fmt.Errorf("fidelity: %s is not empty", dir)
	}
	var seed [32]byte
	for i := range 8 {
		seed[i] = byte(o.Seed >> (8 * i))
	}
	g := &gen{
		root:  dir,
		rng:   rand.New(rand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15)),
		bytes: rand.NewChaCha8(seed),
		m:     Manifest{Root: dir, Made: map[string][]string{}, Skipped: map[string]string{}},
		skip:  map[string]bool{},
	}
	for _, f := range o.Without {
		g.skip[f] = true
		g.m.Skipped[f] = NotAsked
	}
	if err := g.build(o); err != nil {
		return g.m, fmt.Errorf("fidelity: generate %s: %w", dir, err)
	}
	for f, paths := range g.m.Made {
		sort.Strings(paths)
		g.m.Made[f] = slices.Compact(paths)
	}
	return g.m, nil
}

// entry is what phase two and three of the build set on one path.
type entry struct {
	rel      string
	uid, gid int    // -1: leave
	mode     uint32 // 0: leave (never for symlinks)
	xattrs   []xattr
	mtime    unix.Timespec
}

type xattr struct {
	feature, name string
	value         []byte
}

type gen struct {
	root    string
	rng     *rand.Rand
	bytes   *rand.ChaCha8
	m       Manifest
	skip    map[string]bool
	entries []*entry
}

func (g *gen) path(rel string) string { return filepath.Join(g.root, rel) }

// refused reports whether err is the kernel or filesystem saying no, not a bug.
func refused(err error) bool {
	return errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.EOPNOTSUPP)
}

// try records the outcome of making feature at rel: made, skipped (refused) or an error.
func (g *gen) try(feature, rel string, err error) error {
	if err == nil {
		g.made(feature, rel)
		return nil
	}
	if refused(err) {
		if _, ok := g.m.Skipped[feature]; !ok {
			g.m.Skipped[feature] = err.Error()
		}
		return nil
	}
	return err
}

func (g *gen) made(feature, rel string) {
	g.m.Made[feature] = append(g.m.Made[feature], rel)
}

// add registers rel for the later phases, with a random mtime with nanoseconds.
func (g *gen) add(rel string) *entry {
	e := &entry{rel: rel, uid: -1, gid: -1, mtime: unix.Timespec{
		Sec:  1_500_000_000 + g.rng.Int64N(300_000_000),
		Nsec: 1 + g.rng.Int64N(999_999_998),
	}}
	g.entries = append(g.entries, e)
	return e
}

func (g *gen) mkdir(rel string, mode uint32) (*entry, error) {
	if err := os.Mkdir(g.path(rel), 0o755); err != nil {
		return nil, err
	}
	e := g.add(rel)
	e.mode = mode
	return e, nil
}

// random returns n random bytes in which every 64th byte (from the first) is not zero: no
// block that a write touches is all zeros, which a sparse copy (rsync -S) would rightly turn
// into a hole and the layout check would then report.
func (g *gen) random(n int) []byte {
	b := make([]byte, n)
	_, _ = g.bytes.Read(b)
	for i := 0; i < n; i += 64 {
		b[i] |= 0x80
	}
	return b
}

func (g *gen) file(rel string, size int, mode uint32) (*entry, error) {
	if err := os.WriteFile(g.path(rel), g.random(size), 0o600); err != nil {
		return nil, err
	}
	e := g.add(rel)
	e.mode = mode
	return e, nil
}

func (g *gen) symlink(target, rel string) (*entry, error) {
	if err := os.Symlink(target, g.path(rel)); err != nil {
		return nil, err
	}
	return g.add(rel), nil
}

// build makes the tree in three phases: create every entry; then owners, xattrs, modes,
// ACLs and capabilities (in that order: chown clears setuid bits and capabilities, chmod
// of an ACL'd entry rewrites its mask); then every mtime, last, so creating children and
// setting attributes cannot move a dir's mtime afterwards.
func (g *gen) build(o Options) error {
	root := g.add(".")
	root.mode = 0o755
	steps := []struct {
		feature string
		fn      func(Options) error
	}{
		{FeatFiles, g.files}, {FeatDirs, g.dirs}, {FeatModeBits, g.modeBits}, {FeatOwners, g.owners},
		{FeatSymlinks, g.symlinks}, {FeatHardlinks, g.hardlinks}, {FeatSparse, g.sparse},
		{FeatUserXattr, g.userXattrs}, {FeatTrusted, g.trusted}, {FeatCapability, g.capability},
		{FeatACLAccess, g.acls}, {FeatFIFO, g.fifo}, {FeatSocket, g.socket},
		{FeatCharDev, g.charDevice}, {FeatBlockDev, g.blockDevice}, {FeatNames, g.names}, {FeatDeep, g.deep}, {FeatWide, g.wide},
	}
	for _, s := range steps {
		if g.skip[s.feature] {
			continue
		}
		if err := s.fn(o); err != nil {
			return fmt.Errorf("%s: %w", s.feature, err)
		}
	}
	for _, e := range g.entries {
		if err := g.finish(e); err != nil {
			return err
		}
	}
	for _, e := range g.entries {
		ts := []unix.Timespec{e.mtime, e.mtime}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, g.path(e.rel), ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("mtime of %q: %w", e.rel, err)
		}
	}
	return nil
}

// finish sets owner, xattrs and mode of one entry; refusals skip the feature.
func (g *gen) finish(e *entry) error {
	p := g.path(e.rel)
	if e.uid >= 0 {
		if err := g.try(FeatOwners, e.rel, unix.Lchown(p, e.uid, e.gid)); err != nil {
			return fmt.Errorf("lchown %q: %w", e.rel, err)
		}
	}
	late := []xattr{} // ACLs after chmod, the capability after everything
	for _, x := range e.xattrs {
		if strings.HasPrefix(x.name, "system.") || x.name == "security.capability" {
			late = append(late, x)
			continue
		}
		if err := g.try(x.feature, e.rel, unix.Lsetxattr(p, x.name, x.value, 0)); err != nil {
			return fmt.Errorf("setxattr %s on %q: %w", x.name, e.rel, err)
		}
	}
	if e.mode != 0 {
		if err := unix.Fchmodat(unix.AT_FDCWD, p, e.mode, 0); err != nil {
			return fmt.Errorf("chmod %q: %w", e.rel, err)
		}
	}
	sort.SliceStable(late, func(i, j int) bool { return late[j].name == "security.capability" })
	for _, x := range late {
		if err := g.try(x.feature, e.rel, unix.Lsetxattr(p, x.name, x.value, 0)); err != nil {
			return fmt.Errorf("setxattr %s on %q: %w", x.name, e.rel, err)
		}
	}
	return nil
}

// mkdirs makes each dir (mode 0755) and registers it.
func (g *gen) mkdirs(rels ...string) error {
	for _, r := range rels {
		if _, err := g.mkdir(r, 0o755); err != nil {
			return err
		}
	}
	return nil
}
