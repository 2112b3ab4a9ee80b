package dataplane

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path"
	"sync"
	"sync/atomic"

	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/repo/object"
	"github.com/kopia/kopia/snapshot"
)

// puller builds one staging tree.
type puller struct {
	ctx     context.Context
	dr      repo.DirectRepository
	g       *guard
	rp      *reporter
	staging string
	tdirs   *targetDirs // the dataset's directories as resolved at the start
	// stagingFd is the staging dir: everything in it is created relative to it.
	stagingFd int
	// flush starts the writeback of small written files in the background (writeback.go;
	// nil: none).
	flush    *flusher
	resume   []string   // earlier attempts' staging dirs (read + link only)
	cur      string     // current replica's name ("" if none)
	prevRoot *object.ID // root dir object of the current replica's image
	trustCur bool       // current replica was verified against prevRoot
	isRoot   bool
	parallel int
	lim      Limiter // bounds the bytes written (nil: unlimited)
	hooks    testHooks

	dirs     []dirItem    // every image dir, pre-order
	listMu   sync.Mutex   // guards toWrite and resumeCk while planning
	toWrite  []writeGroup // files and symlinks to write from the repository
	resumeCk []resumeItem // files with an exact-metadata candidate in a resume dir

	// trusted: what verify "changed" need not re-check of each file, by
	// image directory (as in writeGroup.dir). Filled in by plan only; the
	// flags by the one worker that handles each file.
	trusted map[string]*dirTrust

	// dirCache holds image directories decoded by plan, by path, for
	// verification to reuse (each once), up to cacheLeft entries in all
	// (bounded memory; verification decodes the others again). cacheMu guards
	// both: verification reads ahead on several goroutines.
	cacheMu   sync.Mutex
	dirCache  map[string]cachedDir
	cacheLeft int
	// ahead reads image directories ahead of the plan's walk (pull_readahead.go).
	ahead *readAhead
	h     *contentHasher
	// hashWrites: hash written contents against their IDs (verify
	// "changed"; "full" reads every file back instead).
	hashWrites bool
	// zeros: contents seen to be all zeros (holes; never read again).
	zeros zeroContents

	// curTrust: the current replica's trust record (nil: link nothing from it).
	curTrust *trustRecord
	lay      layout
	log      func(string, ...any)

	linked, restored, distrusted atomic.Int64
	// kept counts files of a recycled replica that already were the inode a link would
	// give; recycling is nil unless the staging dir is a recycled replica (recycle.go).
	kept      atomic.Int64
	recycling *recycler
	// listedInos: the recycled staging dir's inode numbers come from its listing (recycle_ino.go).
	listedInos bool
	// cloned counts files cloned from the current replica; clone is cloneUnknown/Yes/No.
	cloned atomic.Int64
	clone  atomic.Int32

	// extras: what the image keeps beside its entries (xattrs of regular files set as
	// each is written, the rest applied after the writes).
	extras *Extras
	// names: image paths of entries whose raw names are not valid UTF-8 (names.go).
	names diskNames
	// replaced: the meta record of the damaged replica a repair replaces (nil otherwise).
	replaced *replicaMeta
	// noLink: paths never linked from the current replica (noLinkPaths).
	noLink map[string]bool
	// noResume: paths never linked from a resumed attempt (any extras: it may have died
	// before setting them).
	noResume  map[string]bool
	xattrsOf  map[string][]Xattr // the image's xattrs by path
	prevImage string             // the current replica's image

	// What the target refused (on_unsupported: skip leaves it out): the summary and, by
	// path, what was left out.
	job         string
	skipRefused bool
	refusedMu   sync.Mutex
	refused     Unsupported
	dropped     map[string][]string
}

// useExtras sets what the puller needs of the image's extras x; with skip, what the target
// refuses is left out (on_unsupported: skip) instead of failing.
func (p *puller) useExtras(x *Extras, job string, skip bool) {
	p.extras, p.job, p.skipRefused, p.dropped = x, job, skip, map[string][]string{}
	p.noLink, p.noResume, p.xattrsOf = noLinkPaths(x, nil), x.paths(), x.xattrsByPath()
	p.names = x.diskNames()
}

// refuse is the pull's refuser: what the target does not take fails the pull, naming it,
// or (on_unsupported: skip) is left out and counted (kind "target").
func (p *puller) refuse(rel, what string, err error) error {
	if !targetRefused(err) {
		return err
	}
	if !p.skipRefused {
		return fmt.Errorf("%w: %s: %s refused by the target (%v); set on_unsupported: skip on job %s to replicate without it",
			ErrUnsupported, ShowPath(rel), what, err, p.job)
	}
	p.refusedMu.Lock()
	defer p.refusedMu.Unlock()
	p.refused.add(rel, []string{"target:" + what + " refused (" + err.Error() + ")"})
	p.dropped[rel] = append(p.dropped[rel], what)
	return nil
}

// dirTrust is what verify "changed" need not re-check of the files of one
// image directory: flags[i] is for the directory object's entry i (a decoded
// directory object always lists its entries in the same order). One byte per
// entry: a pull of many small files keeps one for each of them.
type dirTrust struct {
	oid   object.ID
	flags []trust
	// stamps[i]: the inode and ctime entry i's file got in staging (its trust
	// record entry).
	stamps []stamp
}

// trustOf returns the trust of entry i of image directory object d at dir.
func (p *puller) trustOf(dir string, d object.ID, i int) trust {
	dt := p.trusted[dir]
	if dt == nil || dt.oid != d || i < 0 || i >= len(dt.flags) {
		return 0
	}

	return dt.flags[i]
}

// trust says what verify "changed" need not re-check of a file.
type trust uint8

const (
	// trustContent: linked from the verified current replica with an
	// unchanged object ID, or hashed against its content IDs while written.
	trustContent trust = 1 << iota
	// trustMeta: its inode's metadata was checked exactly against the image
	// right before it was linked (verification would lstat the same inode).
	trustMeta
)

type dirItem struct {
	rel string
	de  *snapshot.DirEntry
}

// writeGroup is files and symlinks of one image directory to write. It is
// small per file (16 bytes beside the entry itself): a full pull lists every
// file of the image.
type writeGroup struct {
	dir  string // image directory (relative, slash-separated)
	dt   *dirTrust
	ents []writeEnt
}

// writeEnt is entry idx of its directory.
type writeEnt struct {
	de  *snapshot.DirEntry
	idx int
}

// rel is the file's path relative to the image root.
func (g *writeGroup) rel(e writeEnt) string { return path.Join(g.dir, e.de.Name) }

// resumeItem is a file with a candidate in a resume dir (path from).
type resumeItem struct {
	g    writeGroup // the file alone
	from string
}

// writeBatch is at most this many consecutive entries of one writeGroup,
// written by one worker through one directory fd.
const writeBatch = 64

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)

	return hex.EncodeToString(b)
}
