package activities

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/log"

	"github.com/replctl/replctl/activities/dataplane"
)

// PullName is the registered name of Pull: stable, because recorded histories refer to it.
const PullName = "Pull"

// PullInput is the input of Pull.
type PullInput struct {
	Job         string
	RunID       string
	Agent       string
	ImageID     string
	TargetRoot  string
	Dataset     string
	Repo        RepoLocation
	ReplicaName string
	// Epoch fences this attempt: the target refuses it once a newer one was recorded.
	Epoch int64
	// ResumeFrom is the staging dir of a failed attempt whose restored files may be reused,
	// relative to the target root.
	ResumeFrom string
	Keep       int
	// Verify is the plan's (the job's config): the agent refuses any other, so it is never
	// "" (the data plane's default, the config's, is VerifyChanged).
	Verify dataplane.VerifyMode
	// SourceDataset and KeepImages: after publishing, images of the job beyond the newest
	// KeepImages are deleted from the repository (0 = keep all).
	SourceDataset string
	KeepImages    int
	// Defer (consistency groups): build, verify and move the replica into place, but leave
	// the dataset link to PublishGroup.
	Defer bool `json:",omitempty"`
	// InPlace (failback): the replica is built beside the dataset and then switched with the
	// dataset directory in one atomic step; the directory that was there is kept under
	// .replctl/failback/ (failback.go).
	InPlace bool `json:",omitempty"`
	// KeepWithin and KeepImagesWithin add keep-within windows to Keep and KeepImages (0 = off).
	KeepWithin       time.Duration `json:",omitempty"`
	KeepImagesWithin time.Duration `json:",omitempty"`
}

// replicaRetention is what the pull keeps of the target's replicas.
func (in PullInput) replicaRetention() dataplane.Retention {
	return dataplane.Retention{Last: in.Keep, Within: in.KeepWithin}
}

// imageRetention is what the pull keeps of the source dataset's images.
func (in PullInput) imageRetention() dataplane.Retention {
	return dataplane.Retention{Last: in.KeepImages, Within: in.KeepImagesWithin}
}

// PullResult names the replica a pull published.
type PullResult struct {
	Agent       string
	ReplicaName string
	ReplicaPath string
	LinkPath    string
	Bytes       int64
	Files       int64
	Linked      int64
	Restored    int64
	// Cloned files are independent copies (FICLONE) of unchanged files of the replica before.
	Cloned int64 `json:",omitempty"`
	// Distrusted files of the current replica had changed on the target since they were
	// published (inode or ctime not as recorded): written anew, not linked.
	Distrusted int64 `json:",omitempty"`
	// Recycled is the replica retention retired that the pull brought up to date as this
	// one; Kept counts its files that were already right (included in Linked).
	Recycled string `json:",omitempty"`
	Kept     int64  `json:",omitempty"`
	Verified bool
	// Incomplete: the image lacks entries the data plane cannot replicate (on_unsupported:
	// skip); Verified says only that the replica matches the image.
	Incomplete bool `json:",omitempty"`
	// Refused is what the target did not take (on_unsupported: skip left it out).
	Refused *Unsupported `json:",omitempty"`
	Epoch   int64
	// ResumedFrom is the failed attempt's staging dir this pull reused ("" = fresh).
	ResumedFrom string
	// SavedPrevious (failback) is where the directory that was at the dataset path was kept.
	SavedPrevious string `json:",omitempty"`
	Duration      time.Duration
	// SlotWait is how long of Duration the pull waited for a slot (max_concurrent_steps).
	SlotWait time.Duration `json:",omitempty"`
}

// Pull materialises an image on the target, verifies it and publishes it atomically.
func (a *Agent) Pull(ctx context.Context, in PullInput) (PullResult, error) {
	start := time.Now()
	if err := a.checkRoute(in.Agent); err != nil {
		return PullResult{}, err
	}
	grant, err := a.authorizePull(ctx, in)
	if err != nil {
		return PullResult{}, err
	}
	in.TargetRoot, in.Repo = grant.Root, grant.Repo
	// A failback builds the new tree under a root of its own beside the dataset and switches
	// it in at the end (failback.go).
	root := in.TargetRoot
	var fb failbackPaths
	if in.InPlace {
		if fb, err = newFailbackPaths(in); err != nil {
			return PullResult{}, badInput(err)
		}
		root = fb.build
	}
	// The staging dir travels in heartbeats relative to the target root: the taker may see
	// the target storage at another mount path.
	staging, err := dataplane.StagingPath(root, in.Dataset, in.ReplicaName, in.Epoch)
	if err != nil {
		return PullResult{}, badInput(err)
	}
	stagingRel, err := filepath.Rel(in.TargetRoot, staging)
	if err != nil {
		return PullResult{}, badInput(err)
	}
	resumeFrom := ""
	if in.ResumeFrom != "" {
		if !filepath.IsLocal(in.ResumeFrom) {
			return PullResult{}, badInput(fmt.Errorf("resume staging dir %q must be relative to the target root", in.ResumeFrom))
		}
		resumeFrom = filepath.Join(in.TargetRoot, in.ResumeFrom)
	}
	ctx, hb, err := a.begin(ctx, in.Agent, Progress{Step: StepPull, Phase: "open", Epoch: in.Epoch, Staging: stagingRel, Dataset: in.Dataset})
	if err != nil {
		return PullResult{}, err
	}
	defer hb.stop()
	slot, err := a.slot(ctx, hb, in.Job)
	if err != nil {
		return PullResult{}, err
	}
	defer slot.release()
	if in.InPlace {
		done, err := failbackStart(in, fb)
		if err != nil {
			return PullResult{}, a.fault(ctx, in.Job, StepPull, err, hb.progress())
		}
		if done != nil {
			return *done, nil
		}
	}
	res, err := a.dataplane().Pull(ctx, dataplane.PullRequest{
		Repo:          a.repoConfig(in.Repo),
		Job:           in.Job,
		ImageID:       in.ImageID,
		TargetRoot:    root,
		Dataset:       in.Dataset,
		SourceDataset: in.SourceDataset,
		ReplicaName:   in.ReplicaName,
		Epoch:         in.Epoch,
		Agent:         a.Host,
		ResumeFrom:    resumeFrom,
		Verify:        in.Verify,
		OnUnsupported: grant.OnUnsupported,
		Keep:          in.replicaRetention(),
		NoRecycle:     !grant.Recycle,
		Defer:         in.Defer || in.InPlace,
		Limiter:       slot.limiter,
	}, func(p dataplane.Progress) {
		pr := fromDataplane(StepPull, a.Host, p, stagingRel, in.Epoch)
		pr.Dataset = in.Dataset
		hb.update(pr)
	})
	observe(ctx, in.Job, string(StepPull), start, err, res.Bytes, res.Files)
	if err != nil {
		return PullResult{}, a.fault(ctx, in.Job, StepPull, err, hb.progress())
	}
	var saved string
	if in.InPlace {
		if saved, err = switchInPlace(in, fb); err != nil {
			return PullResult{}, a.fault(ctx, in.Job, StepPull, err, hb.progress())
		}
		res.ReplicaPath, res.LinkPath = fb.link, fb.link
	}
	if in.KeepImages > 0 && !in.InPlace {
		a.pruneImagesAfter(ctx, in)
	}
	// The replica may have been published by an earlier attempt whose result was lost:
	// report who really published it.
	return PullResult{Agent: res.PublishedBy, ReplicaName: res.ReplicaName, ReplicaPath: res.ReplicaPath, LinkPath: res.LinkPath, Bytes: res.Bytes, Files: res.Files, Linked: res.Linked, Restored: res.Restored, Cloned: res.Cloned, Distrusted: res.Distrusted, Recycled: res.Recycled, Kept: res.Kept, Verified: res.Verified, Incomplete: res.Incomplete, Refused: res.Refused, Epoch: res.PublishedEpoch, ResumedFrom: in.ResumeFrom, SavedPrevious: saved, Duration: time.Since(start), SlotWait: slot.waited}, nil
}

// pruneImagesAfter starts the image retention of in's job as housekeeping, after the pull's
// result: the replica is published, and a failure only leaves older images for the next
// pull (or maintenance) to prune.
func (a *Agent) pruneImagesAfter(ctx context.Context, in PullInput) {
	var logger log.Logger // tests call Pull directly: no activity logger
	if activity.IsActivity(ctx) {
		logger = activity.GetLogger(ctx)
	}
	cfg, job, dataset, pol := a.repoConfig(in.Repo), in.Job, in.SourceDataset, in.imageRetention()
	a.housekeep.start(job, func(hctx context.Context) {
		if a.beforeRetention != nil {
			a.beforeRetention()
		}
		n, err := a.dataplane().PruneImages(hctx, cfg, job, dataset, pol)
		switch {
		case logger == nil:
		case err != nil:
			logger.Warn("image retention failed", "job", job, "error", err)
		case n > 0:
			logger.Info("pruned images", "job", job, "deleted", n)
		}
	})
}
