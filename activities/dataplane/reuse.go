package dataplane

// A push that a change journal guides (issue 16; the agent's `--change-journal=push`): the
// agent tells the push which directories of the source changed since the push that made
// the job's previous image began to list it (ChangedSince). Every other directory is given
// to kopia's uploader as the previous image's entry (snapshot.HasDirEntryOrNil), with its
// own metadata from the parent's fresh listing, so it is neither listed nor stat'ed: the
// push walks what changed, not what exists. The image is the one a whole push would make,
// as long as the journal saw every change (what it cannot see is the opt-in's price: a
// write through a mapping of a process the agent cannot examine, and a write through a hard
// link made outside the dataset; activities.JournalPush). Kept out
// of reuse, so listed as before:
//   - every changed directory, its ancestors, and everything at or below a new tree;
//   - every directory holding a file that had several links in the previous image, and its
//     ancestors (a link elsewhere is written without an event in this directory);
//   - a directory whose mtime is not the previous image's (a change the journal missed).
// The previous image must be complete and hold nothing unsupported. The extras of the
// entries below a reused directory come from the previous image's record. A push that
// finds, in what it listed, a file with more links than it listed names for (a link in a
// reused directory, or outside the tree) cannot tell which, and pushes again whole.

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/kopia/kopia/fs"
	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/snapshot"
	"golang.org/x/sys/unix"
)

// ChangedSince is what the agent's change journal says changed in a push's source since
// the push that made the job's image Image began to list it.
type ChangedSince struct {
	// Image is the job's image the changes are relative to.
	Image string
	// Dirs changed (an entry was created, deleted, renamed, written or had an attribute
	// changed in each), relative to SourceDir ("." is the root), raw names.
	Dirs []string
	// Trees were created or moved into the source: nothing at or below one is reused.
	Trees []string
	// Names holds, for a directory of Dirs whose changed entries the journal knows, their
	// raw names: the push stats only those and takes the directory's other entries from
	// the previous image. A directory of Dirs not in Names is listed whole.
	Names map[string][]string
}

func (c *ChangedSince) validate() error {
	if c.Image == "" {
		return badInput("Changed.Image", "must not be empty")
	}
	names := slices.Collect(maps.Keys(c.Names))
	for _, ps := range [][]string{c.Dirs, c.Trees, names} {
		for _, p := range ps {
			if p == "" || path.IsAbs(p) || path.Clean(p) != p || p == ".." || strings.HasPrefix(p, "../") {
				return badInput("Changed", "%q is not a clean path inside the source", p)
			}
		}
	}
	for d, ns := range c.Names {
		for _, n := range ns {
			if n == "" || n == "." || n == ".." || strings.ContainsAny(n, "/\x00") {
				return badInput("Changed.Names", "%q in %q is not an entry name", n, d)
			}
		}
	}
	return nil
}

// reusePlan is which directories a push takes from the previous image as they are.
type reusePlan struct {
	rep repo.Repository
	// dirty holds raw paths that are, or are above, something changed; dirtyImg the image
	// paths of directories holding hard-linked files, and their ancestors.
	dirty    map[string]bool
	dirtyImg map[string]bool
	trees    map[string]bool
	names    map[string][]string // the journal's, by raw dir path
	extras   *Extras             // the previous image's
	root     *snapshot.DirEntry

	mu    sync.Mutex
	taken map[string]bool // image paths of the directories reused
	nfile int64           // the files below them
	// partial holds the directories listed only in their named entries (image paths), with
	// those names.
	partial map[string]map[string]bool
}

// newReusePlan plans the reuse of image prev's directories, or returns a reason not to.
func newReusePlan(ctx context.Context, rep repo.Repository, prev *snapshot.Manifest, ch *ChangedSince) (*reusePlan, string) {
	switch {
	case prev == nil:
		return nil, "the journal's image is not the job's"
	case prev.IncompleteReason != "" || prev.RootEntry == nil || prev.RootEntry.Type != snapshot.EntryTypeDirectory:
		return nil, "the journal's image is incomplete"
	case prev.Tags[unsupportedTag] != "":
		return nil, "the journal's image lacks unsupported entries"
	}
	x, err := loadExtras(ctx, rep, prev)
	if err != nil {
		return nil, err.Error()
	}
	p := &reusePlan{rep: rep, dirty: map[string]bool{}, dirtyImg: map[string]bool{}, trees: map[string]bool{},
		names: ch.Names, extras: x, taken: map[string]bool{}, partial: map[string]map[string]bool{}}
	// The root is always listed: its own attributes are read when it is.
	markUp(p.dirty, ".")
	for _, d := range ch.Dirs {
		markUp(p.dirty, d)
	}
	for _, t := range ch.Trees {
		p.trees[t] = true
		markUp(p.dirty, t)
	}
	if x != nil {
		for _, g := range x.Links {
			for _, f := range g {
				markUp(p.dirtyImg, path.Dir(f))
			}
		}
	}
	return p, ""
}

// markUp marks p and every directory above it.
func markUp(m map[string]bool, p string) {
	for {
		if m[p] {
			return
		}
		m[p] = true
		if p == "." {
			return
		}
		p = path.Dir(p)
	}
}

// reusable reports whether directory rel (raw) may be the previous image's entry prev.
func (p *reusePlan) reusable(rel string, prev *snapshot.DirEntry, mtime int64) bool {
	return prev != nil && prev.Type == snapshot.EntryTypeDirectory && prev.DirSummary != nil &&
		!p.dirty[rel] && !p.dirtyImg[imagePath(rel)] && prev.ModTime.Equal(fs.UTCTimestamp(mtime))
}

// inTree reports whether rel is at or below a new tree (it has no previous entry).
func (p *reusePlan) inTree(rel string) bool {
	for q := rel; ; q = path.Dir(q) {
		if p.trees[q] {
			return true
		}
		if q == "." {
			return false
		}
	}
}

// children reads the previous image's directory de as entries by name.
func (p *reusePlan) children(ctx context.Context, de *snapshot.DirEntry) (map[string]*snapshot.DirEntry, error) {
	ents, err := readImageDir(ctx, p.rep, de.ObjectID)
	if err != nil {
		return nil, err
	}
	m := make(map[string]*snapshot.DirEntry, len(ents))
	for _, e := range ents {
		m[e.Name] = e
	}
	return m, nil
}

func (p *reusePlan) take(rel string, de *snapshot.DirEntry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.taken[imagePath(rel)] = true
	p.nfile += de.DirSummary.TotalFileCount
}

// used is how many directories were reused and how many files are below them, and how
// many directories were listed only in their named entries (all 0 without a plan).
func (p *reusePlan) used() (reused, partial int, files int64) {
	if p == nil {
		return 0, 0, 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.taken), len(p.partial), p.nfile
}

// addExtras gives c the previous image's extras of every entry below a reused directory
// (the reused directory's own were read when its parent was listed) and of every entry of a
// directory listed in part that the push did not stat.
func (p *reusePlan) addExtras(c *extrasCollector) {
	if p == nil || p.extras == nil || c == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.extras.Entries {
		if e.Path == "." {
			continue
		}
		keep := false
		if named, ok := p.partial[path.Dir(e.Path)]; ok && !named[path.Base(e.Path)] {
			keep = true
		}
		for q := path.Dir(e.Path); !keep && q != "."; q = path.Dir(q) {
			keep = p.taken[q]
		}
		if keep {
			c.entries[e.Path] = &ExtraEntry{Path: e.Path, Name: e.Name, Special: e.Special, Xattrs: e.Xattrs}
		}
	}
}

// partialNames returns the names to stat in directory rel, whose previous entries are prev,
// when the plan lists it only in those (false: list it whole): the names the journal gave,
// and every subdirectory the previous image holds there (so that a subdirectory whose
// mtime moved, a change of its names the journal did not report, is listed, as under a
// directory listed whole). It may not where the journal does not know the names, where
// files had several links, or where a name is or could be an image name of a name that is
// not UTF-8 (the push could not tell the two apart).
func (p *reusePlan) partialNames(rel string, prev map[string]*snapshot.DirEntry) ([]string, map[string]bool, bool) {
	if p == nil || prev == nil || p.inTree(rel) || p.dirtyImg[imagePath(rel)] {
		return nil, nil, false
	}
	names, ok := p.names[rel]
	if !ok {
		return nil, nil, false
	}
	for _, n := range names {
		if escaped(n) {
			return nil, nil, false
		}
	}
	for n := range prev {
		if escaped(n) {
			return nil, nil, false
		}
	}
	named := make(map[string]bool, len(names))
	for _, n := range names {
		named[n] = true
	}
	names = slices.Clone(names)
	for n, de := range prev {
		if de.Type == snapshot.EntryTypeDirectory && !named[n] {
			named[n] = true
			names = append(names, n)
		}
	}
	p.mu.Lock()
	p.partial[imagePath(rel)] = named
	p.mu.Unlock()
	return names, named, true
}

// escaped reports whether n is not valid UTF-8 or holds a code point of imageName's escapes.
func escaped(n string) bool {
	return !utf8.ValidString(n) || strings.ContainsFunc(n, func(r rune) bool { return r >= escapeBase && r < escapeBase+0x100 })
}

// previousEntry is the entry of directory d that the previous image holds as de, as if
// listed: a directory listed in part takes its entries not named from there.
func (s *sourceRoot) previousEntry(d sourceDir, de *snapshot.DirEntry) (fs.Entry, error) {
	var typ uint32
	switch de.Type {
	case snapshot.EntryTypeDirectory:
		typ = unix.S_IFDIR
	case snapshot.EntryTypeFile:
		typ = unix.S_IFREG
	case snapshot.EntryTypeSymlink:
		typ = unix.S_IFLNK
	default:
		return nil, fmt.Errorf("the previous image's %s is of type %q", ShowPath(path.Join(d.rel, de.Name)), de.Type)
	}
	perm := os.FileMode(de.Permissions)
	e := sourceEntry{s: s, rel: path.Join(d.rel, de.Name), name: de.Name, mode: typ | uint32(perm.Perm()) | unixModeExtra(perm),
		size: de.FileSize, mtime: int64(de.ModTime), uid: de.UserID, gid: de.GroupID, dev: s.dev}
	return e.typed(), nil
}

// DirEntryOrNil is the previous image's entry of a directory the plan reuses, with the
// metadata the parent's listing found (nil: list it). kopia's uploader takes it as is.
func (d sourceDir) DirEntryOrNil(context.Context) (*snapshot.DirEntry, error) {
	if !d.reuse {
		return nil, nil
	}
	de := *d.prev
	de.Name = d.name
	de.Permissions = snapshot.Permissions(d.Mode() & fs.ModBits)
	de.ModTime = fs.UTCTimestamp(d.mtime)
	de.UserID, de.GroupID = d.uid, d.gid
	d.s.reuse.take(d.rel, &de)
	return &de, nil
}

// withPrevious is child (listed in a directory whose previous entries are prev) with its
// previous entry and whether the plan reuses it.
func (s *sourceRoot) withPrevious(child fs.Entry, prev map[string]*snapshot.DirEntry) fs.Entry {
	d, ok := child.(sourceDir)
	if !ok || prev == nil || s.reuse.inTree(d.rel) {
		return child
	}
	pe := prev[d.name]
	if pe == nil || pe.Type != snapshot.EntryTypeDirectory {
		return child
	}
	d.prev = pe
	d.reuse = s.reuse.reusable(d.rel, pe, d.mtime)
	return d
}

// previousOf reads the previous entries of directory d when the plan needs them: d was
// in the previous image and is listed now.
func (s *sourceRoot) previousOf(ctx context.Context, d sourceDir) (map[string]*snapshot.DirEntry, error) {
	if s.reuse == nil || d.prev == nil {
		return nil, nil
	}
	m, err := s.reuse.children(ctx, d.prev)
	if err != nil {
		return nil, fmt.Errorf("reading the previous image's %s: %w", ShowPath(d.rel), err)
	}
	return m, nil
}
