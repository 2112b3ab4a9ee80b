package dataplane

import (
	"context"
	"errors"
	"fmt"
	"path"
	"sync"

	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/repo/object"
	"github.com/kopia/kopia/snapshot"
	"golang.org/x/sys/unix"
)

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
	p.cacheMu.Lock()
	c, ok := p.dirCache[rel]
	if ok {
		delete(p.dirCache, rel)
		p.cacheLeft += len(c.ents)
	}
	p.cacheMu.Unlock()

	if ok && c.oid == oid {
		return c.ents, nil
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

	err = p.planTree(root.ObjectID, p.prevRoot, srcFd, dstFd)
	// Recycling's unlinks changed inodes the current replica keeps: its record follows,
	// whether or not the plan completed.
	p.carryRecycled()

	if err != nil {
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
		ents := g.ents[bt.start:bt.end]

		if err := p.writeDir(g, ents); err != nil {
			return err
		}

		// Nothing reads a written entry again (verification decodes the image anew), and a
		// full pull lists every file of the image: let the collector have them now rather
		// than after the last write (design.md, Issue 16).
		clear(ents)

		return nil
	}); err != nil {
		if gerr := p.g.tripped(); gerr != nil {
			return gerr
		}

		return err
	}

	if err := applyExtras(p.stagingFd, p.extras, p.isRoot, p.refuse); err != nil {
		return fmt.Errorf("staging %s: what the image keeps beside its files: %w", p.staging, err)
	}

	// Last, entries get back names that are not valid UTF-8 (written under image names).
	if err := renameEntries(p.stagingFd, p.names); err != nil {
		return fmt.Errorf("staging %s: %w", p.staging, err)
	}

	// Children first, so setting a parent's mtime is the last change in it.
	for i := len(p.dirs) - 1; i >= 0; i-- {
		d := p.dirs[i]
		if err := p.setDirAttrs(p.stagingFd, p.staging, p.names.disk(d.rel), d.de); err != nil {
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
	staged       *stagedInos // a reused staging dir's listed inode numbers, or nil (stat them)
}

// planQueueDepth is the least number of plan workers. They spend a cold pull
// waiting for inode reads (the current replica's fstatat, linkat), not on a
// CPU, so more of them than CPUs keep more reads in the disk's queue (issue 16,
// design.md).
const planQueueDepth = 8

// planTree walks the image from root: directories are created by this
// goroutine (pre-order, as build needs them), while parallel workers stat and
// link each directory's files, so a mostly unchanged tree is linked on every
// core.
func (p *puller) planTree(root object.ID, prev *object.ID, srcFd, dstFd int) error {
	workers := max(p.parallel, planQueueDepth)
	if p.hooks.planWorkers > 0 {
		workers = p.hooks.planWorkers
	}

	jobs := make(chan fileJob, 2*workers)

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

	for range workers {
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

	p.ahead = newReadAhead()
	err := p.plan(ctx, jobs, p.ahead.start(ctx, p, root, prev), root, prev, ".", srcFd, dstFd)

	close(jobs)
	wg.Wait()
	// Reads started for directories the walk did not reach (it failed) end with ctx.
	cancel()
	p.ahead.wait()

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
//
// plan and walkVerify (verify.go) both walk the image's directory objects, on
// purpose without a shared walker: what they have in common is only "decode,
// wrap the error, recurse into subdirectories". plan threads per-subtree state
// down (the previous image's object, so an unchanged directory is not decoded
// twice, and fds in the current replica and in staging, closed when the
// subtree is done), checks the write guard (ctx and fencing), fills the
// directory cache and hands the whole directory to the workers before
// descending. A walker serving both would need per-directory and per-subtree
// state, a cleanup and a post-order hook: more hooks than lines shared.
func (p *puller) plan(ctx context.Context, jobs chan<- fileJob, rd *dirRead, d object.ID, prev *object.ID, rel string, srcFd, dstFd int) error {
	if err := p.g.check(false); err != nil {
		return err
	}

	<-rd.done

	ents, err := rd.ents, rd.err
	if err != nil {
		return fmt.Errorf("image directory %s: %w", rel, err)
	}

	p.cacheMu.Lock()
	if len(ents) <= p.cacheLeft {
		p.dirCache[rel] = cachedDir{oid: d, ents: ents}
		p.cacheLeft -= len(ents)
	}
	p.cacheMu.Unlock()

	// The same directory object in both images: identical entries, no need
	// to decode the previous one.
	same := prev != nil && *prev == d

	var prevEnts map[string]*snapshot.DirEntry
	if prev != nil {
		prevEnts = rd.prev
	}

	prevOf := func(de *snapshot.DirEntry) *snapshot.DirEntry {
		if same {
			return de
		}

		return prevEnts[de.Name]
	}

	var staged *stagedInos

	if p.recycling != nil {
		if staged, err = p.pruneDir(dstFd, rel, ents); err != nil {
			return err
		}
	}

	dt := &dirTrust{oid: d, flags: make([]trust, len(ents)), stamps: make([]stamp, len(ents))}
	p.trusted[rel] = dt

	job := fileJob{rel: rel, dt: dt, ents: ents, prevOf: prevOf, srcFd: -1, dstFd: -1, staged: staged}

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

	return p.planSubdirs(ctx, jobs, ents, prevOf, rel, srcFd, dstFd)
}

// planDir creates a subdirectory in staging and plans it.
func (p *puller) planDir(ctx context.Context, jobs chan<- fileJob, de, prev *snapshot.DirEntry, rd *dirRead, rel string, srcFd, dstFd int) error {
	if err := unix.Mkdirat(dstFd, de.Name, 0o700); err != nil {
		if p.recycling == nil || !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("creating %s in staging: %w", rel, err)
		}

		if err := reuseDir(dstFd, de.Name); err != nil {
			return fmt.Errorf("reusing %s in staging: %w", rel, err)
		}
	}

	p.dirs = append(p.dirs, dirItem{rel: rel, de: de})

	subDst, err := openDirFd(dstFd, de.Name)
	if err != nil {
		return fmt.Errorf("staging %s: %w", rel, err)
	}
	defer unix.Close(subDst) //nolint:errcheck

	var psub *object.ID

	subSrc := -1

	if pid := prevDirID(prev, srcFd); pid != nil {
		if fd, err := openDirFd(srcFd, de.Name); err == nil {
			psub, subSrc = pid, fd
			defer unix.Close(subSrc) //nolint:errcheck
		}
	}

	return p.plan(ctx, jobs, rd, de.ObjectID, psub, rel, subSrc, subDst)
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
			if p.recycling != nil {
				if err := p.recycling.remove(j.dstFd, de.Name); err != nil {
					return fmt.Errorf("staging %s: %w", path.Join(j.rel, de.Name), err)
				}
			}

			writes = append(writes, writeEnt{de: de, idx: i})

		case snapshot.EntryTypeFile:
			if err := p.g.check(true); err != nil {
				return err
			}

			switch from, t, st := p.planFile(j.rel, de, j.prevOf(de), j.srcFd, j.dstFd, j.staged); {
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
