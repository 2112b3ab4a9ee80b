package dataplane

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kopia/kopia/repo/object"
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
	// Keep is what is kept of the dataset's replicas after the publish (Keep.Last
	// default 3, counting the current).
	Keep Retention
	// OnUnsupported: what the pull does with an entry or attribute the target refuses (an
	// xattr its filesystem does not keep, a device as non-root): "fail" (default) or "skip"
	// (left out; the replica is incomplete and says so).
	OnUnsupported string
	// Verify is how much of the replica is checked against the image before publish:
	// VerifyChanged (default, as in the config) or VerifyFull. A repair (Replaces) is
	// always VerifyFull.
	Verify VerifyMode
	// WriteDeadline, if set, is when this attempt must stop writing: no write
	// or publish after it (ErrFenced).
	WriteDeadline time.Time
	// Parallel file writers/verifiers (default runtime.NumCPU()).
	Parallel int
	// Limiter bounds the bytes written to the target from the repository (nil: unlimited):
	// the job's and the host's bandwidth. Files linked or reused from earlier replicas and
	// holes are not written and do not count.
	Limiter Limiter
	// Defer builds, verifies and moves the replica into place (with its meta record) but
	// leaves T/D and retention alone: PublishGroup points every dataset of a consistency
	// group at its new replica at once.
	Defer bool
	// Replaces names a damaged replica of the same image that this pull repairs (replctl
	// verify --repair): only its files whose content and metadata match the image are
	// reused (each read and hashed, never trusted on metadata), nothing is linked from the
	// current replica, verification is full, and once the new replica is in place it takes
	// the damaged one's place: T/D if that was current, its publish time (so retention
	// ranks it the same), and the damaged one is removed. Retention does not run.
	Replaces string
	// NoRecycle (retention.retire: after_publish) builds the new replica beside every kept
	// one even where retention will retire one (Recycling in design.md), which is then
	// removed after the publish as before.
	NoRecycle bool
}

// PullResult describes a pull. On error the fields known so far are set
// (StagingPath in particular, for ResumeFrom).
type PullResult struct {
	ReplicaName, ReplicaPath, LinkPath, StagingPath string
	Bytes, Files                                    int64 // totals of the image
	Linked                                          int64 // files hard-linked from an earlier replica or attempt
	Restored                                        int64 // files written from the repository
	// Cloned files (FICLONE, where the target filesystem can) are independent copies of
	// unchanged files of the current replica: not counted in Linked.
	Cloned int64
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
	// Replaced is the damaged replica this pull repaired (PullRequest.Replaces).
	Replaced string
	// Recycled is the replica retention was to retire that this pull brought up to date
	// in place of a new tree (recycle.go); Kept counts its files that stayed as they were
	// (also counted in Linked: each is the current replica's inode).
	Recycled string
	Kept     int64
}

// testHooks lets tests act at precise points of a push or pull.
type testHooks struct {
	afterFileRestored func(n int64)        // after each restored file (n restored so far)
	beforeVerify      func(staging string) // after all writes, before verification
	beforePublish     func()               // after verification, before publish resolves T again
	beforeSourceOpen  func(rel string)     // push: before a source file is opened for reading
	afterSourceList   func(rel string)     // push: after a source directory is opened for listing
	noClone           bool                 // pull: link even where the target clones
	noReadAhead       bool                 // pull and verification: read each image directory when the walk reaches it
	noListedInos      bool                 // pull: stat each entry of a recycled replica
	planWorkers       int                  // pull: the plan's workers (0: planQueueDepth or the CPUs)
	dirRead           func(object.ID)      // pull: as a read ahead of the walk begins
	verifyDirRead     func(object.ID)      // verification: as a read ahead of its walk begins
	noVerifyAhead     bool                 // verification: read each image directory when its walk reaches it
	noEarlyWriteback  bool                 // pull: leave every written file's writeback to the syncfs before publish
}

// aheadDirs is how many subdirectories a verification reads ahead of its walk.
func (h testHooks) aheadDirs() int {
	if h.noReadAhead || h.noVerifyAhead {
		return 0
	}

	return readAheadDirs
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

	var replaced *replicaMeta
	if req.Replaces != "" {
		// An earlier try that built the repaired replica may have removed the damaged one.
		if !existsAt(dirs.replicas, req.ReplicaName) {
			if replaced, err = l.replacedMeta(dirs, req); err != nil {
				return res, err
			}
		}
		// A repair of an older replica leaves T/D alone; either kind leaves retention alone.
		req.Defer = req.Replaces != cur
		res.Replaced = req.Replaces
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
			m.Agent, m.Epoch = req.Agent, req.Epoch
			if m.Replaced == "" { // a repair keeps the damaged replica's time
				m.Published = time.Now().UTC()
			}
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

		if req.Replaces != "" {
			// The repaired replica is in place: the damaged one may still be there.
			if err := fence.withLock(func() error { return l.retireReplaced(req.Replaces, r.log) }); err != nil {
				return res, err
			}
		}

		res.Verified, res.StagingPath = true, ""
		res.PublishedBy, res.PublishedEpoch = m.Agent, m.Epoch
		if !req.Defer && req.Replaces == "" {
			l.retain(req.Keep, req.Epoch, r.log)
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
		lim:       req.Limiter,
		hooks:     r.hooks,
		trusted:   map[string]*dirTrust{},
		lay:       l,
		log:       r.log,

		dirCache:   map[string]cachedDir{},
		cacheLeft:  dirCacheEntries,
		hashWrites: req.Verify == VerifyChanged,
		replaced:   replaced,
	}
	p.useExtras(extras, req.Job, req.OnUnsupported == OnUnsupportedSkip)
	if r.hooks.noClone {
		p.clone.Store(cloneNo)
	}

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

	if replaced != nil {
		// Every file of the damaged replica is a candidate, checked by content like a
		// stale attempt's; nothing is trusted on its trust record.
		p.resume = append(p.resume, l.replicaDir(req.Replaces))
	} else if cur != "" {
		p.cur = cur
		p.setPrevious(l.metaFile(cur), req.Job, r.log)
		p.noLinkPrevious(ctx, r.log)
	}

	if replaced == nil && !req.Defer && len(p.resume) == 0 && p.prevRoot != nil && !req.NoRecycle {
		if old, err := l.retiring(req.Keep, cur); err != nil {
			r.log("recycling: listing replicas failed; building a new tree", "err", err)
		} else if old != "" && (r.hooks.noClone || !probeClone(dirs.staging)) {
			if err := l.recycle(dirs, old, sname); err != nil {
				if existsAt(dirs.staging, sname) {
					return res, err
				}

				r.log("recycling a retired replica failed; building a new tree", "replica", old, "err", err)
			} else {
				p.recycling, res.Recycled = &recycler{trash: dirs.trash}, old
			}
		}
	}

	if p.recycling == nil {
		if err := unix.Mkdirat(dirs.staging, sname, 0o700); err != nil {
			return res, fmt.Errorf("creating staging dir %s: %w", staging, err)
		}
	}

	if p.stagingFd, err = openBeneath(dirs.staging, sname, unix.O_RDONLY|unix.O_DIRECTORY); err != nil {
		return res, fmt.Errorf("opening staging dir %s: %w", staging, err)
	}
	defer unix.Close(p.stagingFd) //nolint:errcheck

	if p.recycling != nil && !r.hooks.noListedInos {
		if p.listedInos, err = listedInos(p.stagingFd); err != nil {
			r.log("recycling: stat each file instead of its listing", "err", err)
		}
	}

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

	if !r.hooks.noEarlyWriteback {
		p.flush = startFlusher(p.stagingFd)
		defer p.flush.stop()
	}

	err = p.build(man.RootEntry)
	// The rest of the writes reach the disk while verification reads the tree.
	p.flush.finish()
	res.Linked, res.Restored, res.Distrusted, res.Cloned = p.linked.Load()+p.kept.Load(), p.restored.Load(), p.distrusted.Load(), p.cloned.Load()
	res.Kept = p.kept.Load()
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
	vo := verifyOptions{checkOwner: p.isRoot, parallel: p.parallel, rp: p.rp, readDir: p.cachedDir, extras: extras.without(p.dropped), aheadDirs: p.hooks.aheadDirs(), dirRead: p.hooks.verifyDirRead}
	if !p.refused.Empty() {
		res.Incomplete, res.Refused = true, &p.refused
		r.log("target refused entries; replica incomplete", "dataset", req.Dataset, "summary", p.refused.String())
	}
	if req.Verify == VerifyChanged {
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

	p.flush.stop() // publish's syncfs waits for the disk anyway
	if err := p.publish(l, req, man); err != nil {
		return res, discard(err)
	}
	res.PublishedBy, res.PublishedEpoch = req.Agent, req.Epoch

	res.StagingPath = ""

	if !req.Defer && req.Replaces == "" {
		l.retain(req.Keep, req.Epoch, r.log)
	}

	r.log("pulled replica", "dataset", req.Dataset, "replica", req.ReplicaName, "image", req.ImageID,
		"files", res.Files, "linked", res.Linked, "cloned", res.Cloned, "restored", res.Restored, "distrusted", res.Distrusted,
		"recycled", res.Recycled, "kept", res.Kept, LogWarn, res.Distrusted > 0)

	return res, nil
}
