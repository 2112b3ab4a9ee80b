package dataplane

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/repo/manifest"
	"github.com/kopia/kopia/snapshot"
)

// ImageInfo describes one image of a job's dataset in the repository.
type ImageInfo struct {
	ID    string    `json:"id"`
	Time  time.Time `json:"time"`
	Files int64     `json:"files"`
	Bytes int64     `json:"bytes"`
	// Incomplete: a checkpoint of a push that did not finish (kept for resume), not a
	// point in time to restore.
	Incomplete string `json:"incomplete,omitempty"`
	// Lacks: the image was pushed with on_unsupported: skip and lacks these entries.
	Lacks *Unsupported `json:"lacks,omitempty"`
	// Extras: the image keeps xattrs, hard links or special files beside its entries.
	Extras bool              `json:"extras,omitempty"`
	Tags   map[string]string `json:"tags,omitempty"`
}

// ListImages lists the images of the job's dataset, newest first.
func (r *Repos) ListImages(ctx context.Context, cfg RepoConfig, job, dataset string) ([]ImageInfo, error) {
	if err := checkJob(job); err != nil {
		return nil, err
	}
	if err := checkDataset("Dataset", dataset); err != nil {
		return nil, err
	}
	rep, err := r.open(ctx, cfg, false)
	if err != nil {
		return nil, err
	}
	mans, err := snapshot.ListSnapshots(ctx, rep, sourceInfo(job, dataset))
	if err != nil {
		return nil, fmt.Errorf("listing images of job %s: %w", job, err)
	}
	out := make([]ImageInfo, 0, len(mans))
	for _, m := range mans {
		ii := ImageInfo{ID: string(m.ID), Time: m.StartTime.ToTime().UTC(), Incomplete: m.IncompleteReason, Extras: m.Tags[extrasTag] != ""}
		ii.Files, ii.Bytes = treeTotals(m.RootEntry)
		ii.Lacks, _ = imageUnsupported(m)
		ii.Tags = map[string]string{}
		for k, v := range m.Tags {
			if k != extrasTag && k != unsupportedTag {
				ii.Tags[k] = v
			}
		}
		out = append(out, ii)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Time.After(out[j].Time) })
	return out, nil
}

// PruneImages keeps the complete images of the job's dataset that pol selects
// (the newest pol.Last, plus those within pol.Within of the newest) and
// deletes the others, plus incomplete checkpoints older than the newest
// complete image. It returns how many image manifests were deleted. The
// space of deleted images is reclaimed by kopia maintenance (not run here).
// It then keeps the repository's index epochs short (tidyIndexes, epochs.go).
func (r *Repos) PruneImages(ctx context.Context, cfg RepoConfig, job, dataset string, pol Retention) (int, error) {
	if err := checkJob(job); err != nil {
		return 0, err
	}

	if err := checkDataset("Dataset", dataset); err != nil {
		return 0, err
	}

	if pol.Last < 1 {
		return 0, badInput("keep", "%d must be at least 1", pol.Last)
	}

	rep, err := r.open(ctx, cfg, false)
	if err != nil {
		return 0, err
	}
	// After the prune's own write session (defers run last in, first out).
	defer r.tidyIndexes(ctx, rep, cfg.Dir)

	mans, err := snapshot.ListSnapshots(ctx, rep, sourceInfo(job, dataset))
	if err != nil {
		return 0, fmt.Errorf("listing images of job %s: %w", job, err)
	}

	sort.Slice(mans, func(i, j int) bool { return mans[i].StartTime.After(mans[j].StartTime) })

	var (
		del          []*snapshot.Manifest
		done         []retentionItem
		newestDone   *snapshot.Manifest
		newestDoneAt time.Time
	)

	for _, m := range mans {
		if m.IncompleteReason == "" {
			done = append(done, retentionItem{Name: string(m.ID), Time: m.StartTime.ToTime()})
			if newestDone == nil {
				newestDone, newestDoneAt = m, m.StartTime.ToTime()
			}
		}
	}

	kept := selectRetained(done, pol)

	for _, m := range mans {
		if m.IncompleteReason == "" && !kept[string(m.ID)] {
			del = append(del, m)
		}
	}

	for _, m := range mans {
		if m.IncompleteReason != "" && newestDone != nil && m.StartTime.ToTime().Before(newestDoneAt) {
			del = append(del, m)
		}
	}

	// The extras of the images kept stay; others go with their image, or (a push that
	// failed between saving its extras and its image) once they are an hour old.
	xs, err := snapshot.ListSnapshots(ctx, rep, extrasSourceInfo(job, dataset))
	if err != nil {
		return 0, fmt.Errorf("listing image extras of job %s: %w", job, err)
	}

	deleted := map[manifest.ID]bool{}
	for _, m := range del {
		deleted[m.ID] = true
	}

	inUse := map[string]bool{}
	for _, m := range mans {
		if !deleted[m.ID] && m.Tags[extrasTag] != "" {
			inUse[m.Tags[extrasTag]] = true
		}
	}

	var xdel []*snapshot.Manifest
	for _, x := range xs {
		if !inUse[string(x.ID)] && time.Since(x.StartTime.ToTime()) > extrasOrphanAge {
			xdel = append(xdel, x)
		}
	}

	if len(del) == 0 && len(xdel) == 0 {
		return 0, nil
	}

	wctx, w, err := rep.NewWriter(ctx, repo.WriteSessionOptions{Purpose: "replctl prune " + job})
	if err != nil {
		return 0, fmt.Errorf("opening repository writer for %s: %w", cfg.Dir, err)
	}
	defer w.Close(context.WithoutCancel(ctx)) //nolint:errcheck

	n := 0

	for _, m := range del {
		if err := w.DeleteManifest(wctx, m.ID); err != nil {
			return n, fmt.Errorf("deleting image %s of job %s: %w", m.ID, job, err)
		}

		n++
	}

	for _, x := range xdel {
		if err := w.DeleteManifest(wctx, x.ID); err != nil {
			return n, fmt.Errorf("deleting image extras %s of job %s: %w", x.ID, job, err)
		}
	}

	if err := w.Flush(wctx); err != nil {
		return 0, fmt.Errorf("flushing repository %s: %w", cfg.Dir, err)
	}

	r.log("pruned images", "job", job, "dataset", dataset, "deleted", n, "kept", len(kept))

	return n, nil
}
