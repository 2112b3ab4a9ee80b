package dataplane

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	kfs "github.com/kopia/kopia/fs"
	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/repo/content"
	"github.com/kopia/kopia/repo/manifest"
	"github.com/kopia/kopia/repo/object"
	"github.com/kopia/kopia/snapshot"
	"golang.org/x/sys/unix"
)

// PullRequest asks for image ImageID to be materialised as a new replica of
// Dataset under TargetRoot.
type PullRequest struct {
	Repo    RepoConfig
	Job     string
	ImageID string
	// TargetRoot is the absolute target storage mount T.
	TargetRoot string
	// Dataset D is relative; T/D becomes a symlink to the replica.
	Dataset string
	// SourceDataset is the dataset the image was pushed from (its snapshot identity);
	// "" means the same name as Dataset.
	SourceDataset string
	// ReplicaName is caller-unique, e.g. 20261123T014500Z-<run8>.
	ReplicaName string
	// Epoch fences stale agents: the pull refuses to run or publish once a
	// higher epoch is recorded for the dataset. Use a new, higher epoch for
	// every attempt that may overlap an earlier one.
	Epoch int64
	Agent string
	// ResumeFrom is the staging dir of a failed earlier attempt (see
	// StagingPath); its complete files are hard-linked, never modified.
	ResumeFrom string
	// Keep is the number of replicas kept (default 3, including the current).
	Keep int
	// KeepWithin also keeps every replica younger than this (0 = off): see Retention.
	KeepWithin time.Duration
	// OnUnsupported: what the pull does with an entry or attribute the target refuses (an
	// xattr its filesystem does not keep, a device as non-root): "fail" (default) or "skip"
	// (left out; the replica is incomplete and says so).
	OnUnsupported string
	// Verify is "full" (default: every file's content is checked) or
	// "changed" (content of files hard-linked from the verified current
	// replica with an unchanged object ID is not re-read).
	Verify string
	// WriteDeadline, if set, is when this attempt must stop writing: no write
	// or publish after it (ErrFenced).
	WriteDeadline time.Time
	// Parallel file writers/verifiers (default runtime.NumCPU()).
	Parallel int
	// Defer builds, verifies and moves the replica into place (with its meta record) but
	// leaves T/D and retention alone: PublishGroup points every dataset of a consistency
	// group at its new replica at once.
	Defer bool
}

// PullResult describes a pull. On error the fields known so far are set
// (StagingPath in particular, for ResumeFrom).
type PullResult struct {
	ReplicaName, ReplicaPath, LinkPath, StagingPath string
	Bytes, Files                                    int64 // totals of the image
	Linked                                          int64 // files hard-linked from an earlier replica or attempt
	Restored                                        int64 // files written from the repository
	// Distrusted counts files of the current replica that were changed after it was
	// published (inode or ctime differ from its trust record): written from the
	// repository instead of linked.
	Distrusted int64
	Verified   bool
	// Incomplete: the image lacks entries it could not hold (pushed with OnUnsupported
	// "skip"), or the target refused some (Refused); the replica's meta record names them.
	Incomplete bool
	// Refused is what the target did not take (an xattr, a device as non-root), left out
	// under OnUnsupported "skip".
	Refused *Unsupported
	// PublishedBy and PublishedEpoch name the attempt that published the replica: an
	// earlier attempt whose result was lost, when this one found its work done.
	PublishedBy    string
	PublishedEpoch int64
}

// testHooks lets tests act at precise points of a push or pull.
type testHooks struct {
	afterFileRestored func(n int64)        // after each restored file (n restored so far)
	beforeVerify      func(staging string) // after all writes, before verification
	beforePublish     func()               // after verification, before publish resolves T again
	beforeSourceOpen  func(rel string)     // push: before a source file is opened for reading
}

// Pull materialises an image as a new replica: staging, verification,
// atomic publish (symlink swap), fencing and retention. See the package doc.
func (r *Repos) Pull(ctx context.Context, req PullRequest, progress func(Progress)) (PullResult, error) {
	var res PullResult

	if err := validatePull(&req); err != nil {
		return res, err
	}

	l := newLayout(req.TargetRoot, req.Dataset)
	staging := l.stagingDir(req.ReplicaName, req.Epoch)
	res = PullResult{
		ReplicaName: req.ReplicaName,
		ReplicaPath: l.replicaDir(req.ReplicaName),
		LinkPath:    l.link,
		StagingPath: staging,
	}

	if req.ResumeFrom != "" && filepath.Dir(req.ResumeFrom) != l.staging {
		return res, badInput("ResumeFrom", "%s is not a staging dir of dataset %s (expected in %s)", req.ResumeFrom, req.Dataset, l.staging)
	}

	if req.ResumeFrom == staging {
		req.ResumeFrom = "" // our own earlier try: handled below
	}

	// Start check: T/D's parents are real directories and T/.replctl (created if
	// missing) is ours alone; publish checks both again.
	if err := l.checkLinkParents(); err != nil {
		return res, err
	}

	dirs, err := l.openDirs()
	if err != nil {
		return res, err
	}
	defer dirs.close()

	dr, err := r.open(ctx, req.Repo, false)
	if err != nil {
		return res, err
	}

	src := req.SourceDataset
	if src == "" {
		src = req.Dataset
	}
	man, err := loadImage(ctx, dr, req.ImageID, req.Job, src)
	if err != nil {
		return res, err
	}

	res.Files, res.Bytes = treeTotals(man.RootEntry)
	_, res.Incomplete = imageUnsupported(man)

	extras, err := loadExtras(ctx, dr, man)
	if err != nil {
		return res, err
	}

	fence := OpenFence(req.TargetRoot, req.Dataset)
	if err := fence.Advance(req.Epoch, req.Agent); err != nil {
		return res, err
	}

	g := newGuard(ctx, fence, req.Epoch, req.WriteDeadline)
	if err := g.check(false); err != nil {
		return res, err
	}

	// This attempt holds the newest epoch: what older attempts left is reclaimed before
	// anything is written.
	l.reclaim(dirs, req.Epoch, req.ResumeFrom, r.log)

	cur, err := l.currentReplica()
	if err != nil {
		return res, err
	}

	// An earlier try of this pull got as far as the replica dir: either it
	// published and its result got lost, or it failed between moving the
	// verified replica into place and swapping the link. Finish the job.
	if existsAt(dirs.replicas, req.ReplicaName) {
		m, merr := readMeta(l.metaFile(req.ReplicaName))
		if merr != nil || m.Image != req.ImageID || !m.Verified {
			return res, badInput("ReplicaName", "replica %s already exists", res.ReplicaPath)
		}

		if cur != req.ReplicaName && !req.Defer {
			// This attempt publishes what the earlier one built: the record says so.
			m.Agent, m.Epoch, m.Published = req.Agent, req.Epoch, time.Now().UTC()
			err := fence.withLock(func() error {
				if err := publishAllowed(ctx, fence, req); err != nil {
					return err
				}

				b, err := json.Marshal(m)
				if err != nil {
					return err
				}

				pd, err := l.openDirs() // resolved again at publish
				if err != nil {
					return err
				}
				defer pd.close()

				if err := writeFileAt(pd.meta, l.meta, req.ReplicaName+".json", b, 0o644); err != nil {
					return err
				}

				return l.swapLinkAt(pd.root, res.ReplicaPath)
			})
			if err != nil {
				return res, err
			}
		}

		res.Verified, res.StagingPath = true, ""
		res.PublishedBy, res.PublishedEpoch = m.Agent, m.Epoch
		if !req.Defer {
			l.retain(Retention{Last: req.Keep, Within: req.KeepWithin}, req.Epoch, r.log)
		}

		return res, nil
	}

	rp := newReporter(progress)
	defer rp.final()

	p := &puller{
		ctx:       ctx,
		dr:        dr,
		g:         g,
		rp:        rp,
		staging:   staging,
		tdirs:     dirs,
		stagingFd: -1,
		isRoot:    os.Geteuid() == 0,
		parallel:  req.Parallel,
		hooks:     r.hooks,
		trusted:   map[string]*dirTrust{},
		lay:       l,
		log:       r.log,

		dirCache:   map[string]cachedDir{},
		cacheLeft:  dirCacheEntries,
		hashWrites: req.Verify == "changed",
	}
	p.useExtras(extras, req.Job, req.OnUnsupported == OnUnsupportedSkip)

	// A staging dir with our own name is an earlier try with the same epoch
	// (a retry on this host): move it aside and resume from it.
	sname := filepath.Base(staging)
	if existsAt(dirs.staging, sname) {
		aside := sname + ".old" + strconv.FormatInt(time.Now().UnixNano(), 10)
		if err := unix.Renameat(dirs.staging, sname, dirs.staging, aside); err != nil {
			return res, fmt.Errorf("moving earlier staging %s aside: %w", staging, err)
		}

		p.resume = append(p.resume, filepath.Join(l.staging, aside))
	}

	if req.ResumeFrom != "" {
		if isDirAt(dirs.staging, filepath.Base(req.ResumeFrom)) {
			p.resume = append(p.resume, req.ResumeFrom)
		} else {
			r.log("resume dir not usable (missing or not a directory), starting from scratch", "dir", req.ResumeFrom)
		}
	}

	if cur != "" {
		p.cur = cur
		p.setPrevious(l.metaFile(cur), req.Job, r.log)
		p.noLinkPrevious(ctx, r.log)
	}

	if err := unix.Mkdirat(dirs.staging, sname, 0o700); err != nil {
		return res, fmt.Errorf("creating staging dir %s: %w", staging, err)
	}

	if p.stagingFd, err = openBeneath(dirs.staging, sname, unix.O_RDONLY|unix.O_DIRECTORY); err != nil {
		return res, fmt.Errorf("opening staging dir %s: %w", staging, err)
	}
	defer unix.Close(p.stagingFd) //nolint:errcheck

	// A storage fault (full, read-only, failing) ends the pull on every agent alike: its
	// staging is removed at once, so the target is back to its usage before the attempt.
	discard := func(err error) error {
		if _, ok := StorageFault(err); ok {
			l.discard(dirs, sname, p.resume, r.log)
			res.StagingPath = ""
			// Staging errors name paths relative to the staging dir; the repository's
			// name its own: say which storage refused.
			if dir := req.Repo.Dir; dir == "" || !strings.Contains(err.Error(), dir) {
				err = fmt.Errorf("writing staging dir %s: %w", staging, err)
			}
		}

		return err
	}

	err = p.build(man.RootEntry)
	res.Linked, res.Restored, res.Distrusted = p.linked.Load(), p.restored.Load(), p.distrusted.Load()
	// What was written is not needed for verification: without these lists, the
	// entries of directories that are not in dirCache can be collected.
	p.dirs, p.toWrite, p.resumeCk = nil, nil, nil

	if err != nil {
		return res, discard(err)
	}

	if p.hooks.beforeVerify != nil {
		p.hooks.beforeVerify(staging)
	}

	// What the target refused under on_unsupported: skip is left out of the replica and of
	// its verification, and makes the replica incomplete.
	vo := verifyOptions{checkOwner: p.isRoot, parallel: p.parallel, rp: p.rp, readDir: p.cachedDir, extras: extras.without(p.dropped)}
	if !p.refused.Empty() {
		res.Incomplete, res.Refused = true, &p.refused
		r.log("target refused entries; replica incomplete", "dataset", req.Dataset, "summary", p.refused.String())
	}
	if req.Verify == "changed" {
		vo.skipContent = func(dir string, d object.ID, i int) bool {
			return p.trustOf(dir, d, i)&trustContent != 0
		}
		vo.skipMeta = func(dir string, d object.ID, i int) bool {
			return p.trustOf(dir, d, i)&trustMeta != 0
		}
	}

	if err := verifyTree(ctx, dr, man.RootEntry, staging, vo); err != nil {
		return res, discard(err)
	}

	res.Verified = true

	if p.hooks.beforePublish != nil {
		p.hooks.beforePublish()
	}

	if err := p.publish(l, req, man); err != nil {
		return res, discard(err)
	}
	res.PublishedBy, res.PublishedEpoch = req.Agent, req.Epoch

	res.StagingPath = ""

	if !req.Defer {
		l.retain(Retention{Last: req.Keep, Within: req.KeepWithin}, req.Epoch, r.log)
	}

	r.log("pulled replica", "dataset", req.Dataset, "replica", req.ReplicaName, "image", req.ImageID,
		"files", res.Files, "linked", res.Linked, "restored", res.Restored, "distrusted", res.Distrusted)

	return res, nil
}

func validatePull(req *PullRequest) error {
	if err := req.Repo.validate(); err != nil {
		return err
	}

	if err := checkJob(req.Job); err != nil {
		return err
	}

	if req.ImageID == "" {
		return badInput("ImageID", "must not be empty")
	}

	if err := checkAbs("TargetRoot", req.TargetRoot); err != nil {
		return err
	}

	if st, err := os.Stat(req.TargetRoot); err != nil || !st.IsDir() {
		return badInput("TargetRoot", "%s is not an existing directory", req.TargetRoot)
	}

	if req.SourceDataset != "" {
		if err := checkDataset("SourceDataset", req.SourceDataset); err != nil {
			return err
		}
	}
	if err := checkDataset("Dataset", req.Dataset); err != nil {
		return err
	}

	if err := checkName("ReplicaName", req.ReplicaName); err != nil {
		return err
	}

	if req.ResumeFrom != "" {
		if err := checkAbs("ResumeFrom", req.ResumeFrom); err != nil {
			return err
		}
	}

	switch {
	case req.Keep == 0:
		req.Keep = 3
	case req.Keep < 0:
		return badInput("Keep", "%d must be at least 1", req.Keep)
	}

	switch req.Verify {
	case "":
		req.Verify = "full"
	case "full", "changed":
	default:
		return badInput("Verify", "%q must be \"full\" or \"changed\"", req.Verify)
	}

	switch req.OnUnsupported {
	case "", OnUnsupportedFail, OnUnsupportedSkip:
	default:
		return badInput("OnUnsupported", "%q must be %q or %q", req.OnUnsupported, OnUnsupportedFail, OnUnsupportedSkip)
	}

	if req.Parallel <= 0 {
		req.Parallel = runtime.NumCPU()
	}

	return nil
}

// loadImage loads a complete image of the job's dataset.
func loadImage(ctx context.Context, rep repo.Repository, id, job, dataset string) (*snapshot.Manifest, error) {
	man, err := snapshot.LoadSnapshot(ctx, rep, manifest.ID(id))
	if errors.Is(err, snapshot.ErrSnapshotNotFound) {
		return nil, fmt.Errorf("%w: image %s", ErrNotFound, id)
	}

	if err != nil {
		return nil, fmt.Errorf("loading image %s: %w", id, err)
	}

	if want := sourceInfo(job, dataset); man.Source != want {
		return nil, badInput("ImageID", "image %s is of %v, not of job %s dataset %s", id, man.Source, job, dataset)
	}

	if man.IncompleteReason != "" {
		return nil, badInput("ImageID", "image %s is incomplete (%s)", id, man.IncompleteReason)
	}

	if man.RootEntry == nil || man.RootEntry.Type != snapshot.EntryTypeDirectory {
		return nil, badInput("ImageID", "image %s has no root directory", id)
	}

	return man, nil
}

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
	resume    []string   // earlier attempts' staging dirs (read + link only)
	cur       string     // current replica's name ("" if none)
	prevRoot  *object.ID // root dir object of the current replica's image
	trustCur  bool       // current replica was verified against prevRoot
	isRoot    bool
	parallel  int
	hooks     testHooks

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
	// (bounded memory; verification decodes the others again).
	dirCache  map[string]cachedDir
	cacheLeft int
	h         *contentHasher
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

	// extras: what the image keeps beside its entries (xattrs of regular files set as
	// each is written, the rest applied after the writes).
	extras *Extras
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

// setPrevious loads what the current replica was built from, so unchanged
// files (same object ID in both images) can be linked from it.
func (p *puller) setPrevious(metaFile, job string, log func(string, ...any)) {
	m, err := readMeta(metaFile)
	if err != nil || m.Job != job || m.Root == "" {
		log("current replica has no usable meta; not linking from it", "meta", metaFile, "err", err)
		return
	}

	oid, err := object.ParseID(m.Root)
	if err != nil {
		log("bad root in replica meta", "meta", metaFile, "err", err)
		return
	}

	// Without a trust record (a replica of an older version) nothing is linked:
	// its files may have been written since, and only the record could tell.
	tr, err := readTrust(p.tdirs.meta, p.cur)
	if err != nil {
		log("current replica has no usable trust record; writing every file anew", "replica", p.cur, "err", err)
		return
	}

	p.curTrust = tr
	p.prevRoot = &oid
	p.trustCur = m.Verified
	p.prevImage = m.Image
}

// noLinkPrevious sets noLink from the extras of the current replica's image and the new
// one's. Without the previous image's extras nothing is linked.
func (p *puller) noLinkPrevious(ctx context.Context, log func(string, ...any)) {
	if p.prevRoot == nil || p.prevImage == "" {
		return
	}
	pm, err := snapshot.LoadSnapshot(ctx, p.dr, manifest.ID(p.prevImage))
	var px *Extras
	if err == nil {
		px, err = loadExtras(ctx, p.dr, pm)
	}
	if err != nil {
		log("current replica's image or its extras unreadable; not linking from it", "replica", p.cur, "err", err)
		p.prevRoot = nil
		return
	}
	p.noLink = noLinkPaths(p.extras, px)
}

// dirCacheEntries bounds the image directory entries a pull keeps decoded
// between planning and verification (about 200 bytes each).
const dirCacheEntries = 1 << 16

type cachedDir struct {
	oid  object.ID
	ents []*snapshot.DirEntry
}

// cachedDir returns image directory oid at rel as plan decoded it (once), or
// decodes it.
func (p *puller) cachedDir(ctx context.Context, dr repo.DirectRepository, oid object.ID, rel string) ([]*snapshot.DirEntry, error) {
	if c, ok := p.dirCache[rel]; ok {
		delete(p.dirCache, rel)
		p.cacheLeft += len(c.ents)

		if c.oid == oid {
			return c.ents, nil
		}
	}

	return readImageDir(ctx, dr, oid)
}

// build fills the staging dir: plan + hard links ("link"), then writes
// ("restore"), then directory attributes.
func (p *puller) build(root *snapshot.DirEntry) error {
	files, bytes := treeTotals(root)

	h, err := newContentHasher(p.dr)
	if err != nil {
		return err
	}

	p.h = h

	p.rp.setPhase("link", bytes, files)

	p.dirs = append(p.dirs, dirItem{rel: ".", de: root})

	dstFd := p.stagingFd
	srcFd := -1

	if p.cur != "" && p.prevRoot != nil {
		if fd, err := openBeneath(p.tdirs.replicas, p.cur, unix.O_PATH|unix.O_DIRECTORY); err == nil {
			srcFd = fd
			defer unix.Close(srcFd) //nolint:errcheck
		}
	}

	if err := p.planTree(root.ObjectID, p.prevRoot, srcFd, dstFd); err != nil {
		return err
	}

	if err := p.linkResumed(); err != nil {
		return err
	}

	p.carryCurrent(p.trustStamps())

	var wbytes, wfiles int64

	// Batches of one directory, each resolved through one directory fd.
	type batch struct{ g, start, end int }

	var batches []batch

	for gi, g := range p.toWrite {
		for _, e := range g.ents {
			wbytes += e.de.FileSize
		}

		wfiles += int64(len(g.ents))

		for s := 0; s < len(g.ents); s += writeBatch {
			batches = append(batches, batch{gi, s, min(s+writeBatch, len(g.ents))})
		}
	}

	p.rp.setPhase("restore", wbytes, wfiles)

	if err := parallelDo(p.ctx, p.parallel, len(batches), func(b int) error {
		bt := batches[b]
		g := &p.toWrite[bt.g]

		return p.writeDir(g, g.ents[bt.start:bt.end])
	}); err != nil {
		if gerr := p.g.tripped(); gerr != nil {
			return gerr
		}

		return err
	}

	if err := applyExtras(p.stagingFd, p.extras, p.isRoot, p.refuse); err != nil {
		return fmt.Errorf("staging %s: what the image keeps beside its files: %w", p.staging, err)
	}

	// Children first, so setting a parent's mtime is the last change in it.
	for i := len(p.dirs) - 1; i >= 0; i-- {
		d := p.dirs[i]
		if err := p.setDirAttrs(p.stagingFd, p.staging, d.rel, d.de); err != nil {
			return err
		}
	}

	return nil
}

// openDirFd opens a directory for *at calls only (O_PATH), never following a
// symlink in its last component.
func openDirFd(dirFd int, name string) (int, error) {
	for {
		fd, err := unix.Openat(dirFd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}

		if err != nil {
			return -1, fmt.Errorf("opening directory %s: %w", name, err)
		}

		return fd, nil
	}
}

// fileJob is one staging directory's files (and symlinks) to link or queue.
// Its fds are dups owned by the job: the worker closes them.
type fileJob struct {
	rel          string
	dt           *dirTrust
	ents         []*snapshot.DirEntry
	prevOf       func(de *snapshot.DirEntry) *snapshot.DirEntry
	srcFd, dstFd int
}

// planTree walks the image from root: directories are created by this
// goroutine (pre-order, as build needs them), while parallel workers stat and
// link each directory's files, so a mostly unchanged tree is linked on every
// core.
func (p *puller) planTree(root object.ID, prev *object.ID, srcFd, dstFd int) error {
	jobs := make(chan fileJob, 2*p.parallel)

	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)

	ctx, cancel := context.WithCancel(p.ctx)
	defer cancel()

	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel() })
	}

	for range p.parallel {
		wg.Add(1)

		go func() {
			defer wg.Done()

			for j := range jobs {
				if ctx.Err() == nil {
					if err := p.planFiles(j); err != nil {
						fail(err)
					}
				}

				closeFd(j.srcFd)
				closeFd(j.dstFd)
			}
		}()
	}

	err := p.plan(ctx, jobs, root, prev, ".", srcFd, dstFd)

	close(jobs)
	wg.Wait()

	if firstErr != nil {
		return firstErr
	}

	if err != nil {
		return err
	}

	return p.ctx.Err()
}

func closeFd(fd int) {
	if fd >= 0 {
		_ = unix.Close(fd)
	}
}

// plan walks one image directory: creates its subdirectories in staging,
// hands its files to the workers and recurses. srcFd is the same directory
// in the current replica (-1: none), dstFd the one in staging; names are
// resolved relative to them (one lookup per entry, no symlink followed).
func (p *puller) plan(ctx context.Context, jobs chan<- fileJob, d object.ID, prev *object.ID, rel string, srcFd, dstFd int) error {
	if err := p.g.check(false); err != nil {
		return err
	}

	ents, err := readImageDir(ctx, p.dr, d)
	if err != nil {
		return fmt.Errorf("image directory %s: %w", rel, err)
	}

	if len(ents) <= p.cacheLeft {
		p.dirCache[rel] = cachedDir{oid: d, ents: ents}
		p.cacheLeft -= len(ents)
	}

	// The same directory object in both images: identical entries, no need
	// to decode the previous one.
	same := prev != nil && *prev == d

	var prevEnts map[string]*snapshot.DirEntry

	if prev != nil && !same {
		// Unreadable (e.g. pruned and garbage-collected): just link nothing.
		if pe, err := readImageDir(ctx, p.dr, *prev); err == nil {
			prevEnts = make(map[string]*snapshot.DirEntry, len(pe))
			for _, e := range pe {
				prevEnts[e.Name] = e
			}
		}
	}

	prevOf := func(de *snapshot.DirEntry) *snapshot.DirEntry {
		if same {
			return de
		}

		return prevEnts[de.Name]
	}

	dt := &dirTrust{oid: d, flags: make([]trust, len(ents)), stamps: make([]stamp, len(ents))}
	p.trusted[rel] = dt

	job := fileJob{rel: rel, dt: dt, ents: ents, prevOf: prevOf, srcFd: -1, dstFd: -1}

	if job.dstFd, err = unix.Dup(dstFd); err != nil {
		return fmt.Errorf("dup: %w", err)
	}

	if srcFd >= 0 {
		if job.srcFd, err = unix.Dup(srcFd); err != nil {
			closeFd(job.dstFd)
			return fmt.Errorf("dup: %w", err)
		}
	}

	select {
	case jobs <- job:
	case <-ctx.Done():
		closeFd(job.srcFd)
		closeFd(job.dstFd)

		return ctx.Err()
	}

	for _, de := range ents {
		if de.Type == snapshot.EntryTypeDirectory {
			if err := p.planDir(ctx, jobs, de, prevOf(de), path.Join(rel, de.Name), srcFd, dstFd); err != nil {
				return err
			}
		}
	}

	return nil
}

// planDir creates a subdirectory in staging and plans it.
func (p *puller) planDir(ctx context.Context, jobs chan<- fileJob, de, prev *snapshot.DirEntry, rel string, srcFd, dstFd int) error {
	if err := unix.Mkdirat(dstFd, de.Name, 0o700); err != nil {
		return fmt.Errorf("creating %s in staging: %w", rel, err)
	}

	p.dirs = append(p.dirs, dirItem{rel: rel, de: de})

	subDst, err := openDirFd(dstFd, de.Name)
	if err != nil {
		return fmt.Errorf("staging %s: %w", rel, err)
	}
	defer unix.Close(subDst) //nolint:errcheck

	var psub *object.ID

	subSrc := -1

	if prev != nil && prev.Type == snapshot.EntryTypeDirectory && srcFd >= 0 {
		if fd, err := openDirFd(srcFd, de.Name); err == nil {
			psub, subSrc = &prev.ObjectID, fd
			defer unix.Close(subSrc) //nolint:errcheck
		}
	}

	return p.plan(ctx, jobs, de.ObjectID, psub, rel, subSrc, subDst)
}

// planFiles links or queues the files and symlinks of one directory.
func (p *puller) planFiles(j fileJob) error {
	var (
		writes []writeEnt
		checks []resumeItem
	)

	for i, de := range j.ents {
		switch de.Type {
		case snapshot.EntryTypeDirectory:
		case snapshot.EntryTypeSymlink:
			writes = append(writes, writeEnt{de: de, idx: i})

		case snapshot.EntryTypeFile:
			if err := p.g.check(true); err != nil {
				return err
			}

			switch from, t, st := p.planFile(j.rel, de, j.prevOf(de), j.srcFd, j.dstFd); {
			case from == linkedFromCur:
				j.dt.flags[i], j.dt.stamps[i] = t, st
				p.rp.addFile(de.FileSize)
			case from != "":
				checks = append(checks, resumeItem{g: writeGroup{dir: j.rel, dt: j.dt, ents: []writeEnt{{de: de, idx: i}}}, from: from})
			default:
				writes = append(writes, writeEnt{de: de, idx: i})
			}

		default:
			return fmt.Errorf("image entry %s has unsupported type %q", path.Join(j.rel, de.Name), de.Type)
		}
	}

	p.listMu.Lock()
	if len(writes) > 0 {
		p.toWrite = append(p.toWrite, writeGroup{dir: j.rel, dt: j.dt, ents: writes})
	}
	p.resumeCk = append(p.resumeCk, checks...)
	p.listMu.Unlock()

	return nil
}

// linkedFromCur is planFile's answer for a file it linked.
const linkedFromCur = "\x00linked"

// planFile links file de of image directory dir from the current replica if
// provably unchanged (returns linkedFromCur, the file's trust and its stamp
// after the link), returns a resume candidate's path to check, or "" (write it).
func (p *puller) planFile(dir string, de, prev *snapshot.DirEntry, srcFd, dstFd int) (string, trust, stamp) {
	rel := path.Join(dir, de.Name)
	resume := p.resume
	if p.noResume[rel] {
		resume = nil
	}

	for _, rs := range resume {
		src := filepath.Join(rs, filepath.FromSlash(dir), de.Name)
		if st, err := os.Lstat(src); err == nil && p.exactMeta(st, de) {
			return src, 0, stamp{}
		}
	}

	// Same object ID in the image the current replica was verified against,
	// identical metadata on disk and the inode's ctime as recorded (nothing
	// written since): the content is the image's content.
	if srcFd >= 0 && prev != nil && prev.Type == snapshot.EntryTypeFile && prev.ObjectID == de.ObjectID && !p.noLink[rel] {
		var st unix.Stat_t
		if err := unix.Fstatat(srcFd, de.Name, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil && p.exactStat(&st, de) {
			if !p.curTrust.trusts(&st) {
				// The first few by name; the pull's final log line has the count.
				if p.distrusted.Add(1) <= maxDistrustLogs {
					p.log("file of the current replica changed since it was published; writing it anew", "replica", p.cur, "path", path.Join(dir, de.Name))
				}

				return "", 0, stamp{}
			}

			if err := unix.Linkat(srcFd, de.Name, dstFd, de.Name, 0); err == nil {
				p.linked.Add(1)

				t := trustMeta
				if p.trustCur {
					t |= trustContent
				}

				// The link changed the inode's ctime: the new one is recorded.
				var after unix.Stat_t
				if err := unix.Fstatat(dstFd, de.Name, &after, unix.AT_SYMLINK_NOFOLLOW); err != nil || after.Ino != st.Ino {
					return linkedFromCur, t, stamp{}
				}

				s := stampOf(&after)
				s.linked = true

				return linkedFromCur, t, s
			}
		}
	}

	return "", 0, stamp{}
}

// linkResumed checks candidates from resume dirs by content (a stale
// attempt's files are never trusted on metadata alone) and links the good
// ones; the others are written from the repository.
func (p *puller) linkResumed() error {
	if len(p.resumeCk) == 0 {
		return nil
	}

	h, err := newContentHasher(p.dr)
	if err != nil {
		return err
	}

	var mu sync.Mutex

	err = parallelDo(p.ctx, p.parallel, len(p.resumeCk), func(i int) error {
		it := p.resumeCk[i]
		if err := p.g.check(true); err != nil {
			return err
		}

		de := it.g.ents[0].de

		err := h.check(p.ctx, it.from, de.ObjectID, de.FileSize, nil)
		if err == nil {
			// Re-check metadata: the stale writer may have replaced the file.
			if st, serr := os.Lstat(it.from); serr == nil && p.exactMeta(st, de) {
				err = p.linkResumedFile(it.from, it.g.dir, de.Name)
				if err == nil {
					it.g.dt.stamps[it.g.ents[0].idx] = lstatStamp(filepath.Join(p.staging, filepath.FromSlash(it.g.dir), de.Name))
				}
			} else {
				err = errContent
			}
		}

		if err != nil {
			if p.ctx.Err() != nil {
				return p.ctx.Err()
			}

			mu.Lock()
			p.toWrite = append(p.toWrite, it.g)
			mu.Unlock()

			return nil
		}

		p.linked.Add(1)
		p.rp.addFile(de.FileSize)

		return nil
	})
	if err != nil {
		if gerr := p.g.tripped(); gerr != nil {
			return gerr
		}

		return err
	}

	return nil
}

// exactMeta reports whether st matches de exactly (type, size, mtime to the
// nanosecond, mode, and owner when we can set owners). Stricter than kopia's
// incremental restore, which skips files whose size matches and mtime is
// within 2 s and never re-applies mode/owner to skipped files.
func (p *puller) exactMeta(st os.FileInfo, de *snapshot.DirEntry) bool {
	if !st.Mode().IsRegular() || st.Size() != de.FileSize ||
		st.ModTime().UnixNano() != de.ModTime.ToTime().UnixNano() ||
		st.Mode()&kfs.ModBits != os.FileMode(de.Permissions)&kfs.ModBits {
		return false
	}

	if p.isRoot {
		sys, ok := st.Sys().(*syscall.Stat_t)
		if !ok || sys.Uid != de.UserID || sys.Gid != de.GroupID {
			return false
		}
	}

	return true
}

// exactStat is exactMeta for a raw stat result.
func (p *puller) exactStat(st *unix.Stat_t, de *snapshot.DirEntry) bool {
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != de.FileSize ||
		st.Mtim.Nano() != de.ModTime.ToTime().UnixNano() ||
		os.FileMode(st.Mode)&os.ModePerm != os.FileMode(de.Permissions)&os.ModePerm ||
		modeExtra(st.Mode) != os.FileMode(de.Permissions)&kfs.ModBits&^os.ModePerm {
		return false
	}

	return !p.isRoot || (st.Uid == de.UserID && st.Gid == de.GroupID)
}

// extraBits pairs the setuid/setgid/sticky bits of a raw mode with Go's FileMode bits.
var extraBits = [...]struct {
	raw uint32
	fm  os.FileMode
}{{unix.S_ISUID, os.ModeSetuid}, {unix.S_ISGID, os.ModeSetgid}, {unix.S_ISVTX, os.ModeSticky}}

// modeExtra converts setuid/setgid/sticky bits of a raw mode to Go's FileMode bits.
func modeExtra(m uint32) os.FileMode {
	var fm os.FileMode

	for _, b := range extraBits {
		if m&b.raw != 0 {
			fm |= b.fm
		}
	}

	return fm
}

// unixModeExtra converts Go's setuid/setgid/sticky FileMode bits to raw mode bits.
func unixModeExtra(m os.FileMode) uint32 {
	var r uint32

	for _, b := range extraBits {
		if m&b.fm != 0 {
			r |= b.raw
		}
	}

	return r
}

const copyChunk = 1 << 20

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyChunk); return &b }}

// writeDir writes ents of g through one directory fd.
func (p *puller) writeDir(g *writeGroup, ents []writeEnt) error {
	fd, err := openBeneath(p.stagingFd, g.dir, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return describeRefusal(p.stagingFd, p.staging, g.dir, err)
	}
	defer unix.Close(fd) //nolint:errcheck

	for _, e := range ents {
		if err := p.write(fd, g, e); err != nil {
			return err
		}
	}

	return nil
}

// write creates one file or symlink from the repository directly under its
// final name in the private staging dir (dirFd is its directory). O_EXCL
// (symlink(2) likewise) never opens an existing inode. A file that fails
// half-way is removed; one left by a crash has the wrong mtime or content,
// and a resuming pull checks both.
func (p *puller) write(dirFd int, g *writeGroup, e writeEnt) error {
	if err := p.g.check(true); err != nil {
		return err
	}

	rel := g.rel(e)
	p.rp.setPath(rel)

	var (
		hashed bool
		err    error
	)

	if e.de.Type == snapshot.EntryTypeSymlink {
		err = p.writeSymlink(dirFd, rel, e.de)
	} else {
		hashed, err = p.writeFile(dirFd, rel, e.de)
	}

	if err != nil {
		if !errors.Is(err, fs.ErrExist) { // never remove what another step created
			_ = unix.Unlinkat(dirFd, e.de.Name, 0)
		}

		if gerr := p.g.tripped(); gerr != nil {
			return gerr
		}

		return fmt.Errorf("restoring %s: %w", rel, err)
	}

	if hashed {
		g.dt.flags[e.idx] = trustContent // this file's own byte: no lock
	}

	if xs := p.xattrsOf[rel]; len(xs) > 0 && e.de.Type == snapshot.EntryTypeFile {
		// Before the stamp, so the trust record holds the ctime with them set.
		if err := setXattrs(dirFd, e.de.Name, rel, xs, p.refuse); err != nil {
			return fmt.Errorf("restoring %s: %w", rel, err)
		}
	}

	if e.de.Type == snapshot.EntryTypeFile {
		var st unix.Stat_t
		if unix.Fstatat(dirFd, e.de.Name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
			g.dt.stamps[e.idx] = stampOf(&st)
		}
	}

	n := p.restored.Add(1)
	p.rp.addFile(0)

	if p.hooks.afterFileRestored != nil {
		p.hooks.afterFileRestored(n)
	}

	return nil
}

// errNotPlain: the object has compressed contents, which cannot be hashed
// against their IDs while writing.
var errNotPlain = errors.New("object has compressed contents")

// writeFile creates dst with the object's content, owner, mode and mtime. It
// reports whether every byte written was hashed against the image's content
// IDs (with hashWrites, unless the object has compressed contents).
func (p *puller) writeFile(dirFd int, dst string, de *snapshot.DirEntry) (bool, error) {
	fd, err := unix.Openat(dirFd, de.Name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return false, &fs.PathError{Op: "create", Path: dst, Err: err}
	}

	f := os.NewFile(uintptr(fd), dst)

	hashed := p.hashWrites

	n, err := p.writeObject(f, de.ObjectID, de.FileSize, 0)
	if errors.Is(err, errNotPlain) {
		hashed = false

		if err = f.Truncate(0); err == nil {
			n, err = p.copyObject(f, de.ObjectID)
		}
	}

	if err == nil && n != de.FileSize {
		err = fmt.Errorf("image object %v has %d bytes, entry says %d", de.ObjectID, n, de.FileSize)
	}

	// Zeros were skipped, not written: the size makes trailing ones holes.
	if err == nil {
		err = f.Truncate(n)
	}

	// Owner and mode through the open fd (no path lookups); chown first, it
	// clears setuid/setgid.
	if err == nil && p.isRoot {
		if err = f.Chown(int(de.UserID), int(de.GroupID)); err != nil {
			err = fmt.Errorf("chown %s: %w", dst, err)
		}
	}

	if err == nil {
		if err = f.Chmod(os.FileMode(de.Permissions) & kfs.ModBits); err != nil {
			err = fmt.Errorf("chmod %s: %w", dst, err)
		}
	}

	if cerr := f.Close(); err == nil {
		err = cerr
	}

	if err != nil {
		return false, err
	}

	return hashed, setMtimeAt(dirFd, de.Name, de, false)
}

// writeObject writes object oid to f at offset off, content by content; with
// hashWrites it checks that each content's bytes hash to its ID with the
// repository's keyed hash (the same check verification does on a read-back).
// It returns the bytes written, errNotPlain for compressed contents.
func (p *puller) writeObject(f *os.File, oid object.ID, limit, off int64) (int64, error) {
	if idx, ok := oid.IndexObjectID(); ok {
		entries, err := object.LoadIndexObject(p.ctx, p.h.cr, idx)
		if err != nil {
			return 0, fmt.Errorf("loading index object %v: %w", idx, err)
		}

		var total int64

		for _, e := range entries {
			if e.Start != total || total+e.Length > limit {
				return 0, fmt.Errorf("index object %v: entry %d+%d does not continue at %d within %d bytes", idx, e.Start, e.Length, total, limit)
			}

			n, err := p.writeObject(f, e.Object, e.Length, off+total)
			if err != nil {
				return 0, err
			}

			total += n
		}

		return total, nil
	}

	cid, compressed, ok := oid.ContentID()
	if !ok {
		return 0, fmt.Errorf("unsupported object ID %v", oid)
	}

	if compressed {
		return 0, errNotPlain
	}

	if err := p.g.check(false); err != nil {
		return 0, err
	}

	// A content known to be zeros: a hole, nothing to read or write (its bytes
	// were hashed against cid when first seen, like any content's).
	if p.zeros.has(cid, limit) {
		p.rp.addBytes(limit)
		return limit, nil
	}

	data, err := p.dr.ContentReader().GetContent(p.ctx, cid)
	if err != nil {
		return 0, fmt.Errorf("reading image content %v: %w", cid, err)
	}

	if int64(len(data)) > limit {
		return 0, fmt.Errorf("image content %v has %d bytes, more than the %d expected", cid, len(data), limit)
	}

	if p.hashWrites {
		got, err := content.IDFromHash(cid.Prefix(), p.h.hash(data))
		if err != nil {
			return 0, fmt.Errorf("hashing: %w", err)
		}

		if got != cid {
			return 0, fmt.Errorf("%w: image content %v hashes to %v", ErrVerify, cid, got)
		}
	}

	if allZero(data) {
		p.zeros.add(cid, int64(len(data)))
	} else if err := writeSparse(f, data, off); err != nil {
		return 0, err
	}

	p.rp.addBytes(int64(len(data)))

	return int64(len(data)), nil
}

// copyObject streams object oid into f through kopia's object reader (for
// objects writeObject cannot hash); verification reads such files back.
func (p *puller) copyObject(f *os.File, oid object.ID) (int64, error) {
	r, err := p.dr.OpenObject(p.ctx, oid)
	if err != nil {
		return 0, fmt.Errorf("opening image object %v: %w", oid, err)
	}
	defer r.Close()

	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)

	var n int64

	for {
		if err := p.g.check(false); err != nil {
			return n, err
		}

		m, rerr := io.ReadFull(r, *bp)
		if m > 0 {
			if err := writeSparse(f, (*bp)[:m], n); err != nil {
				return n, err
			}

			n += int64(m)
			p.rp.addBytes(int64(m))
		}

		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			return n, nil
		}

		if rerr != nil {
			return n, fmt.Errorf("reading image object %v: %w", oid, rerr)
		}
	}
}

func (p *puller) writeSymlink(dirFd int, rel string, de *snapshot.DirEntry) error {
	target, err := readImageSymlink(p.ctx, p.dr, de)
	if err != nil {
		return err
	}

	if err := unix.Symlinkat(target, dirFd, de.Name); err != nil {
		return &fs.PathError{Op: "symlink", Path: rel, Err: err}
	}

	if p.isRoot {
		if err := unix.Fchownat(dirFd, de.Name, int(de.UserID), int(de.GroupID), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown %s: %w", rel, err)
		}
	}

	return setMtimeAt(dirFd, de.Name, de, true)
}

// setDirAttrs applies owner (when root), mode, and mtime (atime = mtime, as
// kopia does) to directory rel beneath dirFd (at base), through an fd of the
// directory itself. Owner first: chown clears setuid/setgid bits.
func (p *puller) setDirAttrs(dirFd int, base, rel string, de *snapshot.DirEntry) error {
	fd, err := openBeneath(dirFd, rel, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return describeRefusal(dirFd, base, rel, err)
	}
	defer unix.Close(fd) //nolint:errcheck

	full := filepath.Join(base, filepath.FromSlash(rel))

	if p.isRoot {
		if err := unix.Fchown(fd, int(de.UserID), int(de.GroupID)); err != nil {
			return fmt.Errorf("chown %s: %w", full, err)
		}
	}

	if err := unix.Fchmod(fd, uint32(os.FileMode(de.Permissions)&os.ModePerm)|unixModeExtra(os.FileMode(de.Permissions))); err != nil {
		return fmt.Errorf("chmod %s: %w", full, err)
	}

	ts := unix.NsecToTimespec(de.ModTime.ToTime().UnixNano())
	if err := futimens(fd, ts); err != nil {
		return fmt.Errorf("setting times of %s: %w", full, err)
	}

	return nil
}

// futimens sets atime and mtime of the open file fd (utimensat with a NULL path).
func futimens(fd int, ts unix.Timespec) error {
	times := [2]unix.Timespec{ts, ts}
	if _, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&times[0])), 0, 0, 0); errno != 0 {
		return errno
	}

	return nil
}

// setMtimeAt sets atime and mtime of name in dirFd to the entry's mtime, to the nanosecond.
func setMtimeAt(dirFd int, name string, de *snapshot.DirEntry, symlink bool) error {
	ts := unix.NsecToTimespec(de.ModTime.ToTime().UnixNano())

	flags := 0
	if symlink {
		flags = unix.AT_SYMLINK_NOFOLLOW
	}

	if err := unix.UtimesNanoAt(dirFd, name, []unix.Timespec{ts, ts}, flags); err != nil {
		return fmt.Errorf("setting times of %s: %w", name, err)
	}

	return nil
}

// publish moves the verified staging dir to its replica name and swaps the
// T/D symlink to it, under the fence lock and only if no newer epoch exists.
// The directories are resolved and checked again here, and the renames and
// the link are made relative to their fds: a directory swapped for a symlink
// while the pull ran is refused, not followed.
func (p *puller) publish(l layout, req PullRequest, man *snapshot.Manifest) error {
	p.rp.setPhase("publish", 0, 0)

	if err := p.g.check(false); err != nil {
		return err
	}

	// Restored data must be durable before any name points to it.
	if err := unix.Syncfs(p.stagingFd); err != nil {
		return fmt.Errorf("syncfs %s: %w", p.staging, err)
	}

	final := l.replicaDir(req.ReplicaName)
	fence := p.g.fence

	return fence.withLock(func() error {
		if err := publishAllowed(p.ctx, fence, req); err != nil {
			return err
		}

		pd, err := l.openDirs()
		if err != nil {
			return err
		}
		defer pd.close()

		// T/D may have changed since we started: never clobber user data, never
		// follow a parent that became a symlink.
		parent, err := l.linkParent(pd.root, !req.Defer)
		if err == nil {
			_, err = l.currentReplicaAt(parent)
			closeFd(parent)
		} else if req.Defer && errors.Is(err, fs.ErrNotExist) {
			err = nil
		}

		if err != nil {
			return err
		}

		// The meta record goes first: a replica dir that exists always has one, so a
		// retry after a crash between the two steps can finish the publish.
		rm := replicaMeta{
			Job: req.Job, Image: req.ImageID, Root: man.RootObjectID().String(),
			Epoch: req.Epoch, Agent: req.Agent, Verified: true, Published: time.Now().UTC(),
		}
		rm.Unsupported, rm.Incomplete = imageUnsupported(man)
		if !p.refused.Empty() {
			if rm.Unsupported == nil {
				rm.Unsupported = &Unsupported{}
			}
			rm.Unsupported.Merge(&p.refused)
			rm.Incomplete = true
		}
		meta, err := json.Marshal(rm)
		if err != nil {
			return err
		}

		// The trust record before the meta record: a replica with meta has both.
		if err := writeTrust(pd.meta, l.meta, req.ReplicaName, newTrustRecord(p.trustStamps())); err != nil {
			return err
		}

		if err := writeFileAt(pd.meta, l.meta, req.ReplicaName+".json", meta, 0o644); err != nil {
			return err
		}

		if err := renameDirAt(pd.staging, filepath.Base(p.staging), pd.replicas, req.ReplicaName, final, p.isRoot); err != nil {
			return err
		}

		// Renaming may touch the moved dir; restore the image's root times.
		if err := p.setDirAttrs(pd.replicas, l.replicas, req.ReplicaName, man.RootEntry); err != nil {
			return err
		}

		if err := fsyncDirFd(pd.staging, l.staging); err != nil {
			return err
		}

		if err := fsyncDirFd(pd.replicas, l.replicas); err != nil {
			return err
		}

		if req.Defer {
			return nil
		}

		return l.swapLinkAt(pd.root, final)
	})
}

// publishAllowed is checked under the fence lock right before publishing.
func publishAllowed(ctx context.Context, fence *Fence, req PullRequest) error {
	if err := fence.check(req.Epoch); err != nil {
		return err
	}

	if !req.WriteDeadline.IsZero() && time.Now().After(req.WriteDeadline) {
		return fmt.Errorf("%w: write deadline passed (%s) before publish", ErrFenced, req.WriteDeadline.Format(time.RFC3339Nano))
	}

	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pull stopped before publish: %w", context.Cause(ctx))
	}

	return nil
}

// swapLinkAt points T/D at replica dir final: a temp symlink renamed over T/D
// in T/D's parent, opened beneath the root fd without following symlinks (and
// created if missing). rename(2) is atomic: readers see the old or the new
// replica, never a mix or nothing. Refuses if T/D is not ours (user data is
// never clobbered).
func (l layout) swapLinkAt(root int, final string) error {
	parent, err := l.linkParent(root, true)
	if err != nil {
		return err
	}
	defer unix.Close(parent) //nolint:errcheck

	if _, err := l.currentReplicaAt(parent); err != nil {
		return err
	}

	dir := filepath.Dir(l.link)

	target, err := filepath.Rel(dir, final)
	if err != nil {
		return err
	}

	return replaceLinkAt(parent, dir, filepath.Base(l.link), target, ".replctl-link-", "publishing")
}

// renameDirAt renames a staging dir (from in fromDir) into place (to in toDir;
// toPath names it in errors). Moving a directory to another parent updates its
// ".." entry, which needs write permission on it: a non-root agent lends
// itself u+w for the rename if the image's mode lacks it.
func renameDirAt(fromDir int, from string, toDir int, to, toPath string, isRoot bool) error {
	if existsAt(toDir, to) {
		return fmt.Errorf("%w: replica %s already exists", ErrBadInput, toPath)
	}

	fd, err := openBeneath(fromDir, from, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return fmt.Errorf("opening %s to move it to %s: %w", from, toPath, err)
	}
	defer unix.Close(fd) //nolint:errcheck

	var restore uint32

	if !isRoot {
		var st unix.Stat_t
		if unix.Fstat(fd, &st) == nil && st.Mode&0o200 == 0 {
			restore = st.Mode & 0o7777
			_ = unix.Fchmod(fd, restore|0o200)
		}
	}

	err = unix.Renameat(fromDir, from, toDir, to)

	if restore != 0 {
		_ = unix.Fchmod(fd, restore) // the same inode, wherever it now is
	}

	if err != nil {
		return fmt.Errorf("renaming %s to %s: %w", from, toPath, err)
	}

	return nil
}

// existsAt reports whether name exists in dirFd (not following a symlink).
func existsAt(dirFd int, name string) bool {
	var st unix.Stat_t

	return unix.Fstatat(dirFd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil
}

// linkResumedFile hard-links file from (in a resume dir beside the staging
// dir) as name in the staging dir's subdirectory dir, both parents opened
// beneath their roots without following symlinks.
func (p *puller) linkResumedFile(from, dir, name string) error {
	rel, err := filepath.Rel(filepath.Dir(p.staging), filepath.Dir(from))
	if err != nil {
		return err
	}

	src, err := openBeneath(p.tdirs.staging, filepath.ToSlash(rel), unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return fmt.Errorf("opening %s: %w", filepath.Dir(from), err)
	}
	defer unix.Close(src) //nolint:errcheck

	dst, err := openBeneath(p.stagingFd, dir, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return fmt.Errorf("opening %s in staging: %w", dir, err)
	}
	defer unix.Close(dst) //nolint:errcheck

	return unix.Linkat(src, filepath.Base(from), dst, name, 0)
}

// retain keeps the replicas pol selects (the current one always) and
// removes leftover staging dirs of epochs up to ours. Errors are logged, not
// returned: the new replica is already published.
func (l layout) retain(pol Retention, epoch int64, log func(string, ...any)) {
	reps, err := l.listReplicas()
	if err != nil {
		log("retention: listing replicas failed", "err", err)
		return
	}

	dirs, err := l.openDirs()
	if err != nil {
		log("retention: opening the dataset's directories failed", "err", err)
		return
	}
	defer dirs.close()

	kept := selectRetained(replicaItems(reps), pol)

	for _, ri := range reps {
		if kept[ri.Name] {
			continue
		}

		// Re-check right before deleting: never delete what T/D points to.
		if cur, err := l.currentReplica(); err != nil || cur == ri.Name {
			continue
		}

		if err := moveToTrash(dirs.replicas, ri.Name, dirs.trash); err != nil {
			log("retention: removing replica failed", "replica", ri.Path, "err", err)
			continue
		}

		_ = unix.Unlinkat(dirs.meta, ri.Name+".json", 0)
		_ = unix.Unlinkat(dirs.meta, ri.Name+trustExt, 0)
	}

	defer trash.sweep(l, log)

	names, err := dirNames(dirs.staging)
	if err != nil {
		return
	}

	for _, n := range names {
		_, ep, ok := parseStagingName(n)
		if !ok || ep > epoch {
			continue
		}

		if err := moveToTrash(dirs.staging, n, dirs.trash); err != nil && !errors.Is(err, fs.ErrNotExist) {
			log("retention: removing staging failed", "dir", n, "err", err)
		}
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)

	return hex.EncodeToString(b)
}
