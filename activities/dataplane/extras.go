package dataplane

// What an image keeps beside kopia's entries (issue 15). kopia's entry model has no field for
// extended attributes (POSIX ACLs and file capabilities are xattrs too), hard-link groups or
// FIFOs, sockets and devices. The push's scan collects them into an Extras record, saved in
// the repository as a snapshot of one file under its own source (so kopia's garbage
// collection keeps it, and no image listing sees it), named by the image's "extras" tag.
// The pull materialises them in staging after writing the image's files and before setting
// directory times; verification compares them like any other attribute.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/kopia/kopia/fs"
	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/repo/manifest"
	"github.com/kopia/kopia/repo/object"
	"github.com/kopia/kopia/snapshot"
	"golang.org/x/sys/unix"
)

// extrasTag is the image tag naming the manifest of the image's Extras.
const extrasTag = "extras"

// extrasVersion is the format of Extras; a pull refuses a newer one rather than ignore it.
// Version 2 adds raw names (ExtraEntry.Name): a record with one is written as version 2, so
// an older pull refuses it instead of leaving names escaped; others stay version 1.
const (
	extrasVersion      = 2
	extrasVersionNoRaw = 1
)

// Special entry types of ExtraEntry.Special.Type.
const (
	SpecialFIFO   = "fifo"
	SpecialSocket = "socket"
	SpecialChar   = "char"
	SpecialBlock  = "block"
)

// Extras is what a tree holds beyond kopia's entries: entries with extended attributes,
// special files and hard-link groups, by path relative to the dataset root ("." is the root).
type Extras struct {
	Version int `json:"v"`
	// Entries, sorted by path: a parent before its children.
	Entries []ExtraEntry `json:"entries,omitempty"`
	// Links are the hard-link groups inside the tree, each sorted, sorted by first path. The
	// first path of a group is the one the image's file is written to; the others are linked
	// to it.
	Links [][]string `json:"links,omitempty"`
}

// ExtraEntry is one entry's extras.
type ExtraEntry struct {
	Path string `json:"path"`
	// Name is the entry's raw name when it is not valid UTF-8: the image holds it under
	// imageName(Name), the last component of Path (names.go).
	Name []byte `json:"name,omitempty"`
	// Special is set for an entry the image does not hold at all.
	Special *Special `json:"special,omitempty"`
	// Xattrs, sorted by name; security.capability is applied last (a chown clears it).
	Xattrs []Xattr `json:"xattrs,omitempty"`
}

// Special is a FIFO, socket or device: its type and all its metadata.
type Special struct {
	Type  string `json:"type"`
	Mode  uint32 `json:"mode"` // permission bits with setuid, setgid and sticky
	UID   uint32 `json:"uid"`
	GID   uint32 `json:"gid"`
	Rdev  uint64 `json:"rdev,omitempty"`
	Mtime int64  `json:"mtime"` // nanoseconds since the epoch
}

// Xattr is one extended attribute.
type Xattr struct {
	Name  string `json:"name"`
	Value []byte `json:"value"`
}

// Empty reports whether x holds nothing.
func (x *Extras) Empty() bool { return x == nil || len(x.Entries) == 0 && len(x.Links) == 0 }

// Count returns the entries with xattrs, the special entries and the linked paths.
func (x *Extras) Count() (xattrs, specials, links int) {
	if x == nil {
		return 0, 0, 0
	}
	for _, e := range x.Entries {
		if len(e.Xattrs) > 0 {
			xattrs++
		}
		if e.Special != nil {
			specials++
		}
	}
	for _, g := range x.Links {
		links += len(g)
	}
	return xattrs, specials, links
}

// paths is every path with extras: those a pull never links from another replica (their
// inode would carry attributes that another replica shares).
func (x *Extras) paths() map[string]bool {
	m := map[string]bool{}
	if x == nil {
		return m
	}
	for _, e := range x.Entries {
		m[e.Path] = true
	}
	for _, g := range x.Links {
		for _, p := range g {
			m[p] = true
		}
	}
	return m
}

// xattrsByPath returns each listed entry's xattrs by path.
func (x *Extras) xattrsByPath() map[string][]Xattr {
	m := map[string][]Xattr{}
	if x == nil {
		return m
	}
	for _, e := range x.Entries {
		if len(e.Xattrs) > 0 {
			m[e.Path] = e.Xattrs
		}
	}
	return m
}

// noLinkPaths is where a pull must not link a file of the current replica (built from an
// image with extras prev) into a replica of an image with extras cur: paths in a hard-link
// group of either (a link would join or split inodes another replica shares), and paths
// whose xattrs differ between the two (setting them would change the shared inode). A file
// whose xattrs are the same in both carries them already.
func noLinkPaths(cur, prev *Extras) map[string]bool {
	m := map[string]bool{}
	for _, x := range []*Extras{cur, prev} {
		if x == nil {
			continue
		}
		for _, g := range x.Links {
			for _, p := range g {
				m[p] = true
			}
		}
	}
	cx, px := cur.xattrsByPath(), prev.xattrsByPath()
	for p, xs := range cx {
		if sameXattrs(xs, px[p]) != nil {
			m[p] = true
		}
	}
	for p := range px {
		if _, ok := cx[p]; !ok {
			m[p] = true
		}
	}
	return m
}

// specialsIn returns the names of the special entries of directory dir.
func (x *Extras) specialsIn() map[string][]string {
	m := map[string][]string{}
	if x == nil {
		return m
	}
	for _, e := range x.Entries {
		if e.Special != nil {
			d, b := splitRel(e.Path)
			m[d] = append(m[d], b)
		}
	}
	return m
}

// check refuses a record that could make a pull act outside its staging dir or that this
// version cannot apply in full.
func (x *Extras) check() error {
	if x.Version != extrasVersion && x.Version != extrasVersionNoRaw {
		return fmt.Errorf("extras format %d, this version applies %d", x.Version, extrasVersion)
	}
	ok := func(p string) error {
		if p == "." {
			return nil
		}
		if p == "" || strings.HasPrefix(p, "/") || path.Clean(p) != p || strings.HasPrefix(p, "../") || p == ".." || strings.IndexByte(p, 0) >= 0 {
			return fmt.Errorf("extras path %q is not a clean relative path", p)
		}
		return nil
	}
	for _, e := range x.Entries {
		if err := ok(e.Path); err != nil {
			return err
		}
		if err := e.checkName(); err != nil {
			return err
		}
		if s := e.Special; s != nil {
			if _, err := specialMode(s.Type); err != nil {
				return fmt.Errorf("extras entry %q: %w", e.Path, err)
			}
			if s.Mode&^uint32(0o7777) != 0 {
				return fmt.Errorf("extras entry %q: mode %o has more than permission bits", e.Path, s.Mode)
			}
		}
	}
	for _, g := range x.Links {
		if len(g) < 2 {
			return fmt.Errorf("extras link group %q has fewer than two paths", g)
		}
		for _, p := range g {
			if err := ok(p); err != nil || p == "." {
				return fmt.Errorf("extras link path %q is not a clean relative path", p)
			}
		}
	}
	return nil
}

func specialMode(t string) (uint32, error) {
	switch t {
	case SpecialFIFO:
		return unix.S_IFIFO, nil
	case SpecialSocket:
		return unix.S_IFSOCK, nil
	case SpecialChar:
		return unix.S_IFCHR, nil
	case SpecialBlock:
		return unix.S_IFBLK, nil
	}
	return 0, fmt.Errorf("unknown special type %q", t)
}

func specialType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFIFO:
		return SpecialFIFO
	case unix.S_IFSOCK:
		return SpecialSocket
	case unix.S_IFCHR:
		return SpecialChar
	case unix.S_IFBLK:
		return SpecialBlock
	}
	return ""
}

// splitRel splits a relative path into its directory ("." at the top) and base.
func splitRel(p string) (string, string) {
	d, b := path.Split(p)
	if d == "" {
		return ".", b
	}
	return strings.TrimSuffix(d, "/"), b
}

// extrasSourceInfo is where the Extras of a job's images are saved: apart from its images,
// so no image listing, retention or incremental push sees them.
func extrasSourceInfo(job, dataset string) snapshot.SourceInfo {
	return snapshot.SourceInfo{Host: "replctl-extras", UserName: job, Path: "/" + dataset}
}

// saveExtras writes x as a one-file snapshot and returns its manifest ID.
func saveExtras(ctx context.Context, w repo.RepositoryWriter, job, dataset string, x *Extras) (manifest.ID, error) {
	b, err := json.Marshal(x)
	if err != nil {
		return "", err
	}
	ow := w.NewObjectWriter(ctx, object.WriterOptions{Description: "replctl extras"})
	defer ow.Close() //nolint:errcheck
	if _, err := ow.Write(b); err != nil {
		return "", fmt.Errorf("writing extras: %w", err)
	}
	oid, err := ow.Result()
	if err != nil {
		return "", fmt.Errorf("writing extras: %w", err)
	}
	now := fs.UTCTimestampFromTime(time.Now())
	man := &snapshot.Manifest{
		Source:      extrasSourceInfo(job, dataset),
		Description: "replctl: what the image keeps beside its entries",
		StartTime:   now,
		EndTime:     now,
		Pins:        []string{imagePin},
		RootEntry: &snapshot.DirEntry{
			Name: "extras.json", Type: snapshot.EntryTypeFile, ObjectID: oid, FileSize: int64(len(b)),
			Permissions: 0o600, ModTime: now,
		},
	}
	id, err := snapshot.SaveSnapshot(ctx, w, man)
	if err != nil {
		return "", fmt.Errorf("saving extras: %w", err)
	}
	return id, nil
}

// loadExtras reads the Extras an image names (nil, nil when it names none).
func loadExtras(ctx context.Context, rep repo.Repository, man *snapshot.Manifest) (*Extras, error) {
	id, ok := man.Tags[extrasTag]
	if !ok {
		return nil, nil
	}
	xm, err := snapshot.LoadSnapshot(ctx, rep, manifest.ID(id))
	if err != nil {
		return nil, fmt.Errorf("image %s: loading its extras %s: %w", man.ID, id, err)
	}
	if xm.Source != extrasSourceInfo(man.Source.UserName, strings.TrimPrefix(man.Source.Path, "/")) || xm.RootEntry == nil {
		return nil, fmt.Errorf("image %s: extras %s belong to %v, not to this image's job", man.ID, id, xm.Source)
	}
	r, err := rep.OpenObject(ctx, xm.RootEntry.ObjectID)
	if err != nil {
		return nil, fmt.Errorf("image %s: opening its extras: %w", man.ID, err)
	}
	defer r.Close() //nolint:errcheck
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("image %s: reading its extras: %w", man.ID, err)
	}
	x := &Extras{}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(x); err != nil {
		return nil, fmt.Errorf("image %s: decoding its extras: %w", man.ID, err)
	}
	if err := x.check(); err != nil {
		return nil, fmt.Errorf("image %s: %w", man.ID, err)
	}
	return x, nil
}

// extrasCollector gathers Extras during a scan (safe for the scan's walkers).
type extrasCollector struct {
	entries map[string]*ExtraEntry
	// links maps (dev, ino) of a regular file with several links to its paths in the tree;
	// nlink to its link count.
	links map[[2]uint64][]string
	nlink map[[2]uint64]uint64
}

func newExtrasCollector() *extrasCollector {
	return &extrasCollector{entries: map[string]*ExtraEntry{}, links: map[[2]uint64][]string{}, nlink: map[[2]uint64]uint64{}}
}

// partial reports whether a file has more links than paths collected: another name is
// outside what was listed.
func (c *extrasCollector) partial() bool {
	for k, ps := range c.links {
		if uint64(len(ps)) < c.nlink[k] {
			return true
		}
	}
	return false
}

func (c *extrasCollector) entry(rel string) *ExtraEntry {
	e := c.entries[rel]
	if e == nil {
		e = &ExtraEntry{Path: rel}
		c.entries[rel] = e
	}
	return e
}

// result builds the sorted record (nil when the tree has no extras).
func (c *extrasCollector) result() *Extras {
	x := &Extras{Version: extrasVersion}
	for _, e := range c.entries {
		sort.Slice(e.Xattrs, func(i, j int) bool { return e.Xattrs[i].Name < e.Xattrs[j].Name })
		x.Entries = append(x.Entries, *e)
	}
	sort.Slice(x.Entries, func(i, j int) bool { return pathLess(x.Entries[i].Path, x.Entries[j].Path) })
	for _, g := range c.links {
		if len(g) > 1 {
			g = slices.Clone(g)
			sort.Strings(g)
			x.Links = append(x.Links, g)
		}
	}
	sort.Slice(x.Links, func(i, j int) bool { return x.Links[i][0] < x.Links[j][0] })
	if x.Empty() {
		return nil
	}
	if x.diskNames() == nil {
		x.Version = extrasVersionNoRaw
	}
	return x
}

// pathLess orders "." first, then by components, so a parent comes before its children.
func pathLess(a, b string) bool {
	if a == "." || b == "." {
		return a == "." && b != "."
	}
	return slices.Compare(strings.Split(a, "/"), strings.Split(b, "/")) < 0
}

// xattrValues reads the values of the attributes names of the entry at p, sorted by name.
func xattrValues(p string, names []string) ([]Xattr, error) {
	out := make([]Xattr, 0, len(names))
	for _, n := range names {
		v, err := getXattr(p, n)
		if errors.Is(err, unix.ENODATA) {
			continue // removed since the listing
		}
		if err != nil {
			return nil, fmt.Errorf("reading xattr %s: %w", n, err)
		}
		out = append(out, Xattr{Name: n, Value: v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// listXattrs lists the attribute names of p (nil when the filesystem keeps none).
func listXattrs(p string) ([]string, error) {
	return xattrNames(func(buf []byte) (int, error) { return unix.Llistxattr(p, buf) })
}

// xattrNames lists attribute names with list, an llistxattr(2) of one entry (nil when
// the filesystem keeps none or the entry is gone).
func xattrNames(list func(buf []byte) (int, error)) ([]string, error) {
	buf := make([]byte, 256)
	for {
		n, err := list(buf)
		if errors.Is(err, unix.ERANGE) {
			if n, err = list(nil); err != nil {
				return nil, err
			}
			buf = make([]byte, n+64)
			continue
		}
		if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		if err != nil || n == 0 {
			return nil, err
		}
		var names []string
		for _, a := range strings.Split(string(buf[:n]), "\x00") {
			if a != "" {
				names = append(names, a)
			}
		}
		return names, nil
	}
}

func getXattr(p, name string) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Lgetxattr(p, name, buf)
		if errors.Is(err, unix.ERANGE) {
			if n, err = unix.Lgetxattr(p, name, nil); err != nil {
				return nil, err
			}
			buf = make([]byte, n+64)
			continue
		}
		if err != nil {
			return nil, err
		}
		return slices.Clone(buf[:n]), nil
	}
}

// capabilityXattr is cleared by the kernel on chown and write: it is set last.
const capabilityXattr = "security.capability"

// xattrOrder returns xs with the capability last.
func xattrOrder(xs []Xattr) []Xattr {
	out := slices.Clone(xs)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name != capabilityXattr && out[j].Name == capabilityXattr })
	return out
}
