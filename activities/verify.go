package activities

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/replctl/replctl/activities/dataplane"
	"go.temporal.io/sdk/activity"
)

// VerifyName is the activity that checks a job's replicas on the target against their
// images (replctl verify).
const VerifyName = "VerifyReplicas"

// VerifyMaxDifferences is how many differences a replica's check names (all are counted).
const VerifyMaxDifferences = 100

// VerifyInput names the replicas to check: Replica ("" = the current one), or All. With
// Repair, each damaged replica is rebuilt from its image as a new replica that takes its
// place (dataplane.PullRequest.Replaces), named RepairName plus a suffix of the damaged
// one's name and fenced by Epoch like a pull.
type VerifyInput struct {
	Job        string
	Agent      string
	TargetRoot string
	Dataset    string
	Replica    string `json:",omitempty"`
	All        bool   `json:",omitempty"`
	Repo       RepoLocation
	Repair     bool   `json:",omitempty"`
	RepairName string `json:",omitempty"`
	Epoch      int64  `json:",omitempty"`
}

// RepairedReplica is the replica a repair built in place of a damaged one.
type RepairedReplica struct {
	Name string
	Path string
	// Linked files of the damaged replica were read, matched the image and were reused;
	// Restored ones were written from the repository.
	Linked, Restored int64
}

// ReplicaCheck is one replica's verification against its image.
type ReplicaCheck struct {
	Name    string
	Path    string
	Current bool
	Image   string
	// Damaged: the replica differs from its image (Differences names them).
	Damaged     bool
	Differences dataplane.Differences
	// Note says why a replica could not be checked (no meta record, another job's).
	Note string `json:",omitempty"`
	// Repaired is the verified replica that took this damaged one's place (--repair).
	Repaired *RepairedReplica `json:",omitempty"`
}

// VerifyResult is every replica checked, newest first.
type VerifyResult struct {
	Agent    string
	Dataset  string
	Replicas []ReplicaCheck
	Duration time.Duration
}

// VerifyReplicas checks replicas of a target dataset against their images: names, types,
// content, sizes, modes, owners, mtimes, holes and the extras (xattrs, ACLs, capabilities,
// hard-link groups, special files). It lists every difference; it writes nothing.
func (a *Agent) VerifyReplicas(ctx context.Context, in VerifyInput) (VerifyResult, error) {
	start := time.Now()
	ctx, l, err := a.begin(ctx, in.Agent, Progress{Step: StepVerify, Phase: "verify", Dataset: in.Dataset})
	if err != nil {
		return VerifyResult{}, err
	}
	defer l.stop()
	source, onUnsupported, err := a.authorizeVerify(ctx, &in)
	if err != nil {
		return VerifyResult{}, err
	}
	slot, err := a.slot(ctx, l, in.Job)
	if err != nil {
		return VerifyResult{}, err
	}
	defer slot.release()
	list, err := dataplane.ListReplicas(in.TargetRoot, in.Dataset)
	if err != nil {
		return VerifyResult{}, a.fault(ctx, in.Job, StepVerify, err, l.progress())
	}
	res := VerifyResult{Agent: a.Host, Dataset: in.Dataset}
	found := false
	for _, r := range list {
		if !in.All && !(in.Replica == "" && r.Current) && r.Name != in.Replica {
			continue
		}
		found = true
		rc := ReplicaCheck{Name: r.Name, Path: r.Path, Current: r.Current, Image: r.Image}
		switch {
		case r.Image == "":
			rc.Note = "no meta record: cannot tell its image"
		case r.Job != in.Job:
			rc.Note = fmt.Sprintf("made by job %q, not %q", r.Job, in.Job)
		default:
			d, err := a.dataplane().CheckReplica(ctx, a.repoConfig(in.Repo), in.Job, source, r.Image, r.Path, 0, VerifyMaxDifferences)
			if err != nil {
				return VerifyResult{}, a.fault(ctx, in.Job, StepVerify, fmt.Errorf("replica %s: %w", r.Name, err), l.progress())
			}
			rc.Differences, rc.Damaged = d, d.Count > 0
			if rc.Damaged && in.Repair {
				if rc.Repaired, err = a.repairReplica(ctx, in, l, r, source, onUnsupported); err != nil {
					return VerifyResult{}, a.fault(ctx, in.Job, StepVerify, fmt.Errorf("repairing replica %s: %w", r.Name, err), l.progress())
				}
			}
		}
		res.Replicas = append(res.Replicas, rc)
	}
	if !found {
		what := "no current replica"
		if in.Replica != "" {
			what = fmt.Sprintf("no replica %q", in.Replica)
		}
		return VerifyResult{}, badInput(fmt.Errorf("dataset %s of job %s has %s under %s", in.Dataset, in.Job, what, in.TargetRoot))
	}
	res.Duration = time.Since(start)
	return res, nil
}

// authorizeVerify checks a verification against the agent's own config: the dataset is a
// target dataset whose order holds the agent, the root is its own mount of that storage,
// the repository its own. It returns the source dataset the images were pushed from.
// It also returns the job's on_unsupported from the agent's own config, for a repair.
func (a *Agent) authorizeVerify(ctx context.Context, in *VerifyInput) (string, string, error) {
	g, err := a.authorize(ctx, VerifyName, in.Job)
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
	if in.Repair {
		if err := dataplane.CheckName("RepairName", in.RepairName); err != nil {
			return "", "", g.refuse("RepairName", in.RepairName, nil, "not one replica name: "+err.Error())
		}
		if in.Epoch <= 0 {
			return "", "", badInput(fmt.Errorf("a repair needs a fencing epoch, got %d", in.Epoch))
		}
	}
	// Replica is only compared with the names of the replicas listed under the agent's own
	// root: no path is made of it. RepairName becomes a replica name, which the data plane
	// checks as one path component.
	if in.Repo, err = g.repo(in.Repo); err != nil {
		return "", "", err
	}
	return g.plan.Source.List()[i], g.plan.OnUnsupported, nil
}

// repairReplica rebuilds damaged replica r from its image in its place (see
// dataplane.PullRequest.Replaces). The new name is derived from r's, so an agent taking
// over finds and finishes what an earlier attempt built.
func (a *Agent) repairReplica(ctx context.Context, in VerifyInput, l *lease, r dataplane.ReplicaInfo, source, onUnsupported string) (*RepairedReplica, error) {
	sum := sha256.Sum256([]byte(r.Name))
	name := in.RepairName + "-" + hex.EncodeToString(sum[:4])
	res, err := a.dataplane().Pull(ctx, dataplane.PullRequest{
		Repo: a.repoConfig(in.Repo), Job: in.Job, ImageID: r.Image, TargetRoot: in.TargetRoot,
		Dataset: in.Dataset, SourceDataset: source, ReplicaName: name, Epoch: in.Epoch,
		Agent: a.Host, OnUnsupported: onUnsupported, Replaces: r.Name, Verify: dataplane.VerifyFull,
	}, func(p dataplane.Progress) {
		pr := fromDataplane(StepVerify, a.Host, p, "", in.Epoch)
		pr.Dataset = in.Dataset
		l.update(pr)
	})
	if err != nil {
		return nil, err
	}
	activity.GetLogger(ctx).Info("replica repaired", "job", in.Job, "damaged", r.Name, "replica", res.ReplicaName, "restored", res.Restored, "linked", res.Linked)
	return &RepairedReplica{Name: res.ReplicaName, Path: res.ReplicaPath, Linked: res.Linked, Restored: res.Restored}, nil
}

// ImagesName is the activity that lists a job's images in the repository (replctl images).
const ImagesName = "ListImages"

// ImagesInput names the job whose images to list; the agent reads them from the repository
// its own config gives it.
type ImagesInput struct {
	Job   string
	Agent string
	Repo  RepoLocation
}

// ImagesResult is the job's images, newest first.
type ImagesResult struct {
	Agent   string
	Dataset string
	Images  []dataplane.ImageInfo
}

// ListImages lists the images of the job's (first) source dataset.
func (a *Agent) ListImages(ctx context.Context, in ImagesInput) (ImagesResult, error) {
	ctx, l, err := a.begin(ctx, in.Agent, Progress{Step: "images", Phase: "list"})
	if err != nil {
		return ImagesResult{}, err
	}
	defer l.stop()
	g, err := a.authorize(ctx, ImagesName, in.Job)
	if err != nil {
		return ImagesResult{}, err
	}
	if in.Repo, err = g.repo(in.Repo); err != nil {
		return ImagesResult{}, err
	}
	ds := g.plan.Source.List()[0]
	imgs, err := a.dataplane().ListImages(ctx, a.repoConfig(in.Repo), in.Job, ds)
	if err != nil {
		return ImagesResult{}, a.fault(ctx, in.Job, "images", err, l.progress())
	}
	return ImagesResult{Agent: a.Host, Dataset: ds, Images: imgs}, nil
}
