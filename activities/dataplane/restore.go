package dataplane

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// RestoreRequest asks for an image of a job's dataset to be materialised in a new (or
// empty) directory Rel beneath the storage root Root: a point in time brought back beside the
// replicas, verified, never into a live dataset (the caller checks which paths are).
type RestoreRequest struct {
	Repo     RepoConfig
	Job      string
	Dataset  string // the dataset the image was pushed from
	ImageID  string
	Root     string // absolute storage root
	Rel      string // clean relative path beneath Root
	Parallel int
}

// RestoreResult is what was restored where.
type RestoreResult struct {
	Path         string
	Files, Bytes int64
	Verified     bool
	Incomplete   bool
}

// Restore writes image ImageID into Root/Rel (created, or empty) with everything the pull
// writes (owners, modes, mtimes, holes, extras) and verifies it in full. On failure what it
// wrote is removed; a directory it did not create is left empty.
func (r *Repos) Restore(ctx context.Context, req RestoreRequest, progress func(Progress)) (RestoreResult, error) {
	res := RestoreResult{Path: filepath.Join(req.Root, filepath.FromSlash(req.Rel))}
	if err := req.Repo.validate(); err != nil {
		return res, err
	}
	if err := checkJob(req.Job); err != nil {
		return res, err
	}
	if err := checkDataset("Dataset", req.Dataset); err != nil {
		return res, err
	}
	if err := checkAbs("Root", req.Root); err != nil {
		return res, err
	}
	if req.Rel == "" || req.Rel == "." || path.IsAbs(req.Rel) || path.Clean(req.Rel) != req.Rel || req.Rel == ".." || len(req.Rel) > 2 && req.Rel[:3] == "../" {
		return res, badInput("Rel", "%q is not a clean path beneath %s", req.Rel, req.Root)
	}
	if req.ImageID == "" {
		return res, badInput("ImageID", "must not be empty")
	}
	dr, err := r.open(ctx, req.Repo, false)
	if err != nil {
		return res, err
	}
	man, err := loadImage(ctx, dr, req.ImageID, req.Job, req.Dataset)
	if err != nil {
		return res, err
	}
	extras, err := loadExtras(ctx, dr, man)
	if err != nil {
		return res, err
	}
	res.Files, res.Bytes = treeTotals(man.RootEntry)
	_, res.Incomplete = imageUnsupported(man)

	rootFd, err := openRoot(req.Root)
	if err != nil {
		return res, err
	}
	defer unix.Close(rootFd) //nolint:errcheck
	parent, base := splitRel(req.Rel)
	pfd, err := dirAt(rootFd, req.Root, parent, true, false, 0o755)
	if err != nil {
		return res, err
	}
	defer unix.Close(pfd) //nolint:errcheck
	created := false
	switch err := unix.Mkdirat(pfd, base, 0o700); {
	case err == nil:
		created = true
	case !errors.Is(err, unix.EEXIST):
		return res, fmt.Errorf("creating %s: %w", res.Path, err)
	}
	fd, err := openBeneath(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return res, describeRefusal(pfd, filepath.Dir(res.Path), base, err)
	}
	defer unix.Close(fd) //nolint:errcheck
	if names, err := dirNames(fd); err != nil {
		return res, err
	} else if len(names) > 0 {
		return res, badInput("To", "%s is not empty: a restore never writes over anything", res.Path)
	}

	rp := newReporter(progress)
	defer rp.final()
	p := &puller{
		ctx: ctx, dr: dr, g: newGuard(ctx, nil, 0, time.Time{}), rp: rp, staging: res.Path, stagingFd: fd,
		isRoot: os.Geteuid() == 0, parallel: max(req.Parallel, 1), trusted: map[string]*dirTrust{}, log: r.log,
		dirCache: map[string]cachedDir{}, cacheLeft: dirCacheEntries,
	}
	p.useExtras(extras, req.Job, false)
	fail := func(err error) (RestoreResult, error) {
		if created {
			_ = removeAllAt(pfd, base)
		} else if names, derr := dirNames(fd); derr == nil {
			for _, n := range names {
				_ = removeAllAt(fd, n)
			}
		}
		return res, err
	}
	if err := p.build(man.RootEntry); err != nil {
		return fail(err)
	}
	vo := verifyOptions{checkOwner: p.isRoot, parallel: p.parallel, rp: rp, readDir: p.cachedDir, extras: extras, aheadDirs: p.hooks.aheadDirs(), dirRead: p.hooks.verifyDirRead}
	if err := verifyTree(ctx, dr, man.RootEntry, res.Path, vo); err != nil {
		return fail(err)
	}
	if err := syncFS(res.Path); err != nil {
		return fail(err)
	}
	res.Verified = true
	r.log("restored image", "job", req.Job, "image", req.ImageID, "to", res.Path, "files", res.Files, "bytes", res.Bytes)
	return res, nil
}
