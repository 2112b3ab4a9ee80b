package dataplane

import (
	"context"
	"fmt"
	"sort"
	"time"

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
