package dataplane

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/kopia/kopia/repo/manifest"
	"github.com/kopia/kopia/repo/object"
	"github.com/kopia/kopia/snapshot"
	"golang.org/x/sys/unix"
)

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

// linkResumedFile hard-links file from (in a resume dir beside the staging
// dir, or in the damaged replica a repair replaces) as name in the staging
// dir's subdirectory dir, both parents opened beneath their roots without
// following symlinks.
func (p *puller) linkResumedFile(from, dir, name string) error {
	base, baseFd := filepath.Dir(p.staging), p.tdirs.staging
	if p.replaced != nil && strings.HasPrefix(from, p.lay.replicas+string(filepath.Separator)) {
		base, baseFd = p.lay.replicas, p.tdirs.replicas
	}

	rel, err := filepath.Rel(base, filepath.Dir(from))
	if err != nil || !filepath.IsLocal(rel) {
		return fmt.Errorf("resume file %s is not beneath %s", from, base)
	}

	src, err := openBeneath(baseFd, filepath.ToSlash(rel), unix.O_PATH|unix.O_DIRECTORY)
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
