package workflows

// Per-target pulls: consistency groups (several datasets published together, all or none),
// fan-out (one source, several targets, each with its own pull step and takeover order) and
// failback (the target's replica copied back to the source).

import (
	"fmt"
	"strings"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/replctl/replctl/activities"
)

// pullTargets pulls the images to every target. Targets run in parallel (one coroutine
// each, deterministic); a failed target does not stop the others, but fails the run.
func (w *replication) pullTargets(ctx workflow.Context) error {
	if w.failback != nil {
		// The push may have taken long: the primary must still be stopped before its
		// dataset is replaced.
		if err := w.recheckPrimary(ctx); err != nil {
			return err
		}
	}
	w.setPhase(ctx, PhasePulling)
	targets := w.plan.AllTargets()
	if w.failback != nil {
		// Failback: the source storage is the one target, written in place.
		targets = []activities.TargetPlan{{Endpoint: w.plan.Source, Order: w.plan.Order.Source}}
	}
	w.status.Targets = make([]TargetStatus, len(targets))
	roles := make([]*role, len(targets))
	for i, t := range targets {
		w.status.Targets[i] = TargetStatus{Storage: t.Storage, Phase: TargetPending}
		roles[i] = newRole(RoleTarget, t.Order)
		if len(targets) > 1 {
			roles[i].target = t.Storage
		}
	}
	if w.failback != nil {
		roles[0] = w.roles.target
	}
	errs := make([]error, len(targets))
	if len(targets) == 1 {
		errs[0] = w.pullTarget(ctx, 0, targets[0], roles[0])
	} else {
		wg := workflow.NewWaitGroup(ctx)
		for i := range targets {
			wg.Add(1)
			workflow.Go(ctx, func(ctx workflow.Context) {
				defer wg.Done()
				errs[i] = w.pullTarget(ctx, i, targets[i], roles[i])
			})
		}
		wg.Wait(ctx)
	}
	var failed []string
	var first error
	for i, err := range errs {
		if err == nil {
			continue
		}
		if temporal.IsCanceledError(err) {
			return err
		}
		if first == nil {
			first = err
		}
		failed = append(failed, fmt.Sprintf("target %s: %s", targets[i].Storage, rootMessage(err)))
	}
	switch {
	case first == nil:
		return nil
	case len(targets) == 1:
		return first
	}
	ok := len(targets) - len(failed)
	return temporal.NewNonRetryableApplicationError(
		fmt.Sprintf("%d of %d targets failed (%d published): %s", len(failed), len(targets), ok, strings.Join(failed, "; ")), "TargetsFailed", first)
}

// pullTarget is one target's pull step: every dataset is pulled (a group's with its
// publish deferred) and a group is then published at once, all under the takeover protocol.
func (w *replication) pullTarget(ctx workflow.Context, idx int, t activities.TargetPlan, r *role) error {
	ts := &w.status.Targets[idx]
	replicaName := replicaName(ctx)
	srcs := w.plan.Source.List()
	if w.failback != nil {
		srcs = w.failback.List()
	}
	group := t.Group() && w.failback == nil
	err := w.onRole(ctx, r, activities.StepPull, func(ctx workflow.Context, agent string, resume *activities.Progress) error {
		ts.Agent, ts.Phase, ts.Replicas = agent, TargetPulling, nil
		root, err := w.plan.RootOf(agent, t.Storage)
		if err != nil {
			return nonRetryable(err)
		}
		repo, err := w.plan.Repo(agent)
		if err != nil {
			return nonRetryable(err)
		}
		var done Progress
		for i, ds := range t.List() {
			in := activities.PullInput{
				Job: w.plan.Job, RunID: w.status.RunID, Agent: agent, ImageID: w.images[i], TargetRoot: root,
				Dataset: ds, Repo: repo,
				ReplicaName: replicaName, Epoch: w.nextEpoch(ctx), Keep: w.plan.Retention.Replicas,
				SourceDataset: srcs[i], KeepImages: w.plan.Retention.Images, Verify: w.plan.Verify,
				KeepWithin: w.plan.Retention.ReplicasWithin, KeepImagesWithin: w.plan.Retention.ImagesWithin,
				Defer: group, InPlace: w.failback != nil,
			}
			if w.failback != nil {
				in.KeepImages = 0
			}
			if resume != nil && resume.Step == activities.StepPull && (resume.Dataset == "" || resume.Dataset == ds) {
				in.ResumeFrom = resume.Staging
			}
			var res activities.PullResult
			if err := workflow.ExecuteActivity(ctx, activities.PullName, in).Get(ctx, &res); err != nil {
				return err
			}
			done.BytesDone += res.Bytes
			done.FilesDone += res.Files
			w.addRefused(res.Refused)
			ts.Replicas = append(ts.Replicas, Replica{Dataset: ds, Name: res.ReplicaName, Path: res.ReplicaPath, Link: res.LinkPath, Agent: res.Agent, Epoch: res.Epoch, Verified: res.Verified, Incomplete: res.Incomplete || w.status.Unsupported != nil, Linked: res.Linked, Restored: res.Restored, Cloned: res.Cloned, Distrusted: res.Distrusted, Recycled: res.Recycled, Kept: res.Kept, ResumedFrom: res.ResumedFrom})
			if res.SavedPrevious != "" {
				w.note(fmt.Sprintf("failback: the directory that was at %s is kept at %s", res.LinkPath, res.SavedPrevious))
			}
		}
		if group {
			ts.Phase = TargetPublishing
			var res activities.PublishGroupResult
			err := workflow.ExecuteActivity(ctx, activities.PublishGroupName, activities.PublishGroupInput{
				Job: w.plan.Job, Agent: agent, TargetRoot: root, ReplicaName: replicaName, Datasets: t.List(),
				Epoch: w.nextEpoch(ctx), Keep: w.plan.Retention.Replicas, KeepWithin: w.plan.Retention.ReplicasWithin,
			}).Get(ctx, &res)
			if err != nil {
				return err
			}
			ts.Group = res.Current
		}
		if idx == 0 {
			w.status.Progress = Progress{Step: activities.StepPull, BytesDone: done.BytesDone, BytesTotal: done.BytesDone, FilesDone: done.FilesDone, FilesTotal: done.FilesDone}
			rep := ts.Replicas[0]
			w.status.Replica = &rep
		}
		return nil
	})
	if err != nil {
		ts.Phase, ts.Error = TargetFailed, rootMessage(err)
		return err
	}
	ts.Phase = TargetCompleted
	return nil
}
