package dataplane

// A push that a change journal guides (issue 16; the agent's `--change-journal=push`): the
// agent tells the push which directories of the source changed since the push that made
// the job's previous image began to list it (ChangedSince). Every other directory is given
// to kopia's uploader as the previous image's entry (snapshot.HasDirEntryOrNil), with its
// own metadata from the parent's fresh listing, so it is neither listed nor stat'ed: the
// push walks what changed, not what exists. The image is the one a whole push would make,
// as long as the journal saw every change (what it cannot see is the opt-in's price: a
// write through mmap, and a write through a hard link made outside the dataset). Kept out
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
	"path"
	"strings"
	"sync"

	"github.com/kopia/kopia/fs"
	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/snapshot"
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
}

func (c *ChangedSince) validate() error {
	if c.Image == "" {
		return badInput("Changed.Image", "must not be empty")
	}
	for _, ps := range [][]string{c.Dirs, c.Trees} {
		for _, p := range ps {
			if p == "" || path.IsAbs(p) || path.Clean(p) != p || p == ".." || strings.HasPrefix(p, "../") {
				return badInput("Changed", "%q is not a clean path inside the source", p)
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
	extras   *Extras // the previous image's
	root     *snapshot.DirEntry

	mu    sync.Mutex
	taken map[string]bool // image paths of the directories reused
	nfile int64           // the files below them
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
		extras: x, taken: map[string]bool{}}
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

// files is how many files are below the directories reused.
func (p *reusePlan) files() int64 {
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.nfile
}

// used is how many directories were reused.
func (p *reusePlan) used() int {
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.taken)
}

// addExtras gives c the previous image's extras of every entry below a reused directory
// (the reused directory's own were read when its parent was listed).
func (p *reusePlan) addExtras(c *extrasCollector) {
	if p == nil || p.extras == nil || c == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.extras.Entries {
		for q := path.Dir(e.Path); q != "."; q = path.Dir(q) {
			if p.taken[q] {
				c.entries[e.Path] = &ExtraEntry{Path: e.Path, Name: e.Name, Special: e.Special, Xattrs: e.Xattrs}
				break
			}
		}
	}
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
