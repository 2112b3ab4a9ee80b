package dataplane

import (
	"context"
	"fmt"
	"maps"
	"sync/atomic"
	"time"

	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/snapshot"
	"github.com/kopia/kopia/snapshot/policy"
	"github.com/kopia/kopia/snapshot/upload"
)

// uploaded is what one upload of a push made.
type uploaded struct {
	man         *snapshot.Manifest
	hashed      int64 // bytes read from the source
	unsupported *Unsupported
	extras      *Extras
	// precopyFound is what a precopy's look for unsupported entries found (it stops there).
	precopyFound *Unsupported
	// partialLinks: a file listed has more links than names listed.
	partialLinks bool
	// view: a precopy that listed racy files as such, whose tree may be kept as a view.
	view bool
}

// upload runs kopia's uploader over the source once, with the scan fed by its listing.
// keepView (set only for a precopy) lists racy files as such where the source's times are
// this host's.
func (r *Repos) upload(ctx, wctx context.Context, w repo.RepositoryWriter, req PushRequest, si snapshot.SourceInfo,
	prev []*snapshot.Manifest, rp *reporter, plan *reusePlan, keepView bool) (*uploaded, error) {
	root, err := openSourceRoot(req.SourceDir, &r.hooks)
	if err != nil {
		return nil, err
	}
	defer root.close()
	root.lim, root.ctx = req.Limiter, ctx
	if plan != nil {
		root.reuse, root.prev = plan, plan.root
	}
	src, err := root.dir()
	if err != nil {
		return nil, err
	}

	u := upload.NewUploader(pushSlots.bound(w))
	u.ParallelUploads = req.Parallel
	u.CheckpointInterval = req.CheckpointInterval
	u.DisableIgnoreRules = true
	u.EnableActions = false
	u.CheckpointLabels = req.Tags
	view := keepView && localTimes(root.fd, "")
	if view {
		// A view's checkpoints are views too (a taker's quiesced push may use them).
		root.racyFrom = time.Now().Add(-racyMargin).UnixNano()
		u.CheckpointLabels = maps.Clone(req.Tags)
		if u.CheckpointLabels == nil {
			u.CheckpointLabels = map[string]string{}
		}
		u.CheckpointLabels[viewTag] = ""
	}
	up := &uploadProgress{rp: rp}
	u.Progress = up

	// The uploader does not watch ctx; cancel it explicitly.
	stop := context.AfterFunc(ctx, u.Cancel)
	defer stop()

	// The scan is fed by the upload's own listing (the application is quiesced meanwhile);
	// a refusal stops the upload as soon as it is known.
	if !req.Precopy {
		root.scan = newScan(ctx, req.SourceDir, ScanOptions{Name: req.Dataset}, true)
		root.scan.onFind = func(err error) {
			// A failed scan fails the push whatever the job does with unsupported entries.
			if err != nil || req.OnUnsupported != OnUnsupportedSkip {
				u.Cancel()
			}
		}
	} else if req.ScanUnsupported {
		root.scan = newScan(ctx, req.SourceDir, ScanOptions{Name: req.Dataset}, false)
		root.scan.onFind = func(err error) {
			if err == nil {
				u.Cancel()
			}
		}
	}

	man, err := u.Upload(wctx, src, policy.BuildTree(nil, pushPolicy(req.Parallel, req.Precopy)), si, prev...)

	res := &uploaded{man: man, hashed: up.hashed.Load(), view: view}
	if root.scan != nil && req.Precopy {
		sum, _, serr := root.scan.result()
		switch {
		case serr != nil:
			// As the preflight's own scan: the quiesced push reads the tree again.
			r.log("precopy's look for unsupported entries failed; the push checks again", "job", req.Job, "dataset", req.Dataset, "error", serr)
		case !sum.Empty():
			res.precopyFound = sum
			return res, nil
		}
	} else if root.scan != nil {
		res.partialLinks = root.scan.x.partial()
		plan.addExtras(root.scan.x)
		sum, x, serr := root.scan.result()
		res.extras = x
		if serr != nil && ctx.Err() == nil {
			return nil, fmt.Errorf("push of %s: %w", req.SourceDir, serr)
		}
		if !sum.Empty() {
			if req.OnUnsupported != OnUnsupportedSkip {
				return nil, &UnsupportedError{Job: req.Job, Summary: *sum}
			}
			res.unsupported = sum
		}
	}

	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("push of %s stopped: %w", req.SourceDir, context.Cause(ctx))
		}

		return nil, fmt.Errorf("uploading %s: %w", req.SourceDir, err)
	}
	return res, nil
}

// uploadProgress adapts kopia's upload progress to our reporter.
type uploadProgress struct {
	upload.NullUploadProgress

	rp *reporter
	// hashed is what the upload read from the source (the rest was unchanged).
	hashed atomic.Int64
}

// Enabled is false: it only switches kopia's size estimator off (a second
// walk of the source); the callbacks below are still called.
func (p *uploadProgress) Enabled() bool { return false }

func (p *uploadProgress) HashingFile(fname string)         { p.rp.setPath(fname) }
func (p *uploadProgress) HashedBytes(n int64)              { p.rp.addBytes(n); p.hashed.Add(n) }
func (p *uploadProgress) CachedFile(_ string, size int64)  { p.rp.addBytes(size) }
func (p *uploadProgress) FinishedFile(_ string, err error) { p.rp.addFile(0) }
