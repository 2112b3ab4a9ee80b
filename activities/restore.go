package activities

import (
	"context"
	"fmt"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/replctl/replctl/activities/dataplane"
)

// RestoreName is the activity that brings an image back into a new directory on the target
// storage (replctl restore).
const RestoreName = "RestoreImage"

// RestoreInput names the image and where it goes: To, an absolute path beneath the target
// storage root (TargetRoot) that is no dataset and not replctl's own directory.
type RestoreInput struct {
	Job        string
	Agent      string
	TargetRoot string
	Dataset    string
	ImageID    string
	To         string
	Repo       RepoLocation
}

// RestoreResult says what was restored where.
type RestoreResult struct {
	Agent      string
	Path       string
	Image      string
	Files      int64
	Bytes      int64
	Verified   bool
	Incomplete bool `json:",omitempty"`
	Duration   time.Duration
}

// RestoreImage materialises an image of the job in To, verified in full; To must be new or
// empty. It never writes into a dataset or a replica.
func (a *Agent) RestoreImage(ctx context.Context, in RestoreInput) (RestoreResult, error) {
	start := time.Now()
	ctx, l, err := a.begin(ctx, in.Agent, Progress{Step: StepRestore, Phase: "restore", Dataset: in.Dataset})
	if err != nil {
		return RestoreResult{}, err
	}
	defer l.stop()
	source, rel, err := a.authorizeRestore(ctx, &in)
	if err != nil {
		return RestoreResult{}, err
	}
	slot, err := a.slot(ctx, l, in.Job)
	if err != nil {
		return RestoreResult{}, err
	}
	defer slot.release()
	res, err := a.dataplane().Restore(ctx, dataplane.RestoreRequest{
		Repo: a.repoConfig(in.Repo), Job: in.Job, Dataset: source, ImageID: in.ImageID, Root: in.TargetRoot, Rel: rel, Parallel: 4,
	}, func(p dataplane.Progress) { l.update(fromDataplane(StepRestore, a.Host, p, rel, 0)) })
	if err != nil {
		return RestoreResult{}, a.fault(ctx, in.Job, StepRestore, err, l.progress())
	}
	return RestoreResult{Agent: a.Host, Path: res.Path, Image: in.ImageID, Files: res.Files, Bytes: res.Bytes, Verified: res.Verified, Incomplete: res.Incomplete, Duration: time.Since(start)}, nil
}

// authorizeRestore checks a restore against the agent's own config and returns the source
// dataset of the images and To relative to the root: To must be beneath the agent's own
// mount of the target storage, and neither replctl's directory nor any dataset of the job
// on that storage (nor inside or above one).
func (a *Agent) authorizeRestore(ctx context.Context, in *RestoreInput) (string, string, error) {
	g, err := a.authorize(ctx, RestoreName, in.Job)
	if err != nil {
		return "", "", err
	}
	t, i, err := g.target(in.Dataset)
	if err != nil {
		return "", "", err
	}
	if err := g.root("TargetRoot", in.TargetRoot, t.Storage); err != nil {
		return "", "", err
	}
	rel, err := filepath.Rel(in.TargetRoot, in.To)
	if !filepath.IsAbs(in.To) || filepath.Clean(in.To) != in.To || err != nil || !filepath.IsLocal(rel) {
		return "", "", g.refuse("To", in.To, nil, fmt.Sprintf("%s is not a clean absolute path beneath the target storage root %s", in.To, in.TargetRoot))
	}
	rel = filepath.ToSlash(rel)
	var live []string
	for _, tp := range g.plan.AllTargets() {
		if tp.Storage == t.Storage {
			live = append(live, tp.List()...)
		}
	}
	if g.plan.Source.Storage == t.Storage {
		live = append(live, g.plan.Source.List()...)
	}
	within := func(a, b string) bool { return a == b || strings.HasPrefix(a, b+"/") }
	if first, _, _ := strings.Cut(rel, "/"); first == ".replctl" || slices.ContainsFunc(live, func(d string) bool {
		d = path.Clean(d)
		return within(rel, d) || within(d, rel)
	}) {
		return "", "", g.refuse("To", in.To, nil, fmt.Sprintf("%s is (in or above) a dataset or replctl's directory on storage %s: a restore goes beside them, never into them", in.To, t.Storage))
	}
	if in.Repo, err = g.repo(in.Repo); err != nil {
		return "", "", err
	}
	return g.plan.Source.List()[i], rel, nil
}
