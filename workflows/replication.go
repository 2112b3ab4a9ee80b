package workflows

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/replctl/replctl/activities"
	"github.com/replctl/replctl/config"
)

// ErrTypeLeftQuiesced is the error type of a run whose resume step could not run: the
// application host may still be frozen.
const ErrTypeLeftQuiesced = "HostLeftQuiesced"

// jobName is what a job name may look like: the config's rule.
var jobName = regexp.MustCompile(config.NamePattern)

// Replication runs one replication of a job: plan, quiesce, push, resume, pull. Resume runs
// whenever quiesce started, even when the run fails or is cancelled.
//
// Its input is decoded strictly here (input.go), and a run refuses to start unless its
// workflow ID is its job's, before any script runs.
func Replication(ctx workflow.Context, raw converter.RawValue) (Status, error) {
	// First: every GetVersion of a change in the baseline comes after it (versions.go).
	ctx = withBaseline(ctx)
	// A pure function of the payload bytes (it sorts the keys it reads from a map):
	//workflowcheck:ignore
	in, lenient, inErr := decodeReplicationInput(raw)
	// Runs recorded before strict input took the SDK's lenient decoding and any workflow ID.
	if !changed(ctx, "strict-input-one-run-per-job") {
		in, inErr = lenient, nil
	} else if inErr == nil && jobName.MatchString(in.Job) {
		// (A bad job name is refused by setup with the name rule.)
		inErr = holdsJob(ctx, in.Job)
	}
	w, err := newReplication(ctx, in.Job)
	if err != nil {
		return w.status, err
	}
	w.in = in
	w.inputErr = inErr
	// Runs recorded before it sent one command per search attribute update.
	if changed(ctx, "coalesce-search-attributes") {
		w.coalesceUpserts(ctx)
		defer w.flushUpserts(workflowDisconnected(ctx))
	}
	return w.run(ctx)
}

// newReplication is the state of a run of job (a replication, a maintenance, a test
// failover: they share the plan and the takeover protocol), answering the status query.
func newReplication(ctx workflow.Context, job string) (*replication, error) {
	info := workflow.GetInfo(ctx)
	w := &replication{in: ReplicationInput{Job: job}}
	w.status = Status{Job: job, RunID: info.WorkflowExecution.RunID, Phase: PhasePlanning, StartedAt: info.WorkflowStartTime}
	err := workflow.SetQueryHandler(ctx, StatusQuery, func() (Status, error) { return w.status, nil })
	resumed := workflow.GetSignalChannel(ctx, HostResumedSignal)
	workflow.Go(ctx, func(ctx workflow.Context) {
		for {
			var s HostResumed
			resumed.Receive(ctx, &s)
			w.hostResumed(s)
		}
	})
	return w, err
}

// hostResumed records that an agent thawed the application outside the run. While the run
// holds the host quiesced and the push may still read, the image can no longer be called
// application-consistent. The signal can only make the run claim less, never more: Temporal
// is an untrusted transport.
func (w *replication) hostResumed(s HostResumed) {
	if s.Host == "" || s.Host != w.status.QuiescedHost {
		w.note(fmt.Sprintf("ignored a %s signal for host %q: the run does not hold it quiesced", HostResumedSignal, s.Host))
		return
	}
	if w.status.Phase == PhaseQuiescing || w.status.Phase == PhasePushing {
		w.status.CrashConsistent = true
	}
	w.note(fmt.Sprintf("host %s was resumed outside the run by agent %s (%s) while the run held it quiesced; the image is crash-consistent if the push was still reading", s.Host, s.Agent, s.Reason))
}

// replication is the state of one run.
type replication struct {
	in ReplicationInput
	// inputErr refuses the run before anything is planned: bad input, or not the job's ID.
	inputErr error
	plan     activities.Plan
	status   Status
	roles    struct{ application, source, target *role }
	epoch    int64
	image    string
	// images are the images of every dataset pushed (a consistency group has several).
	images []string
	// groups is set when the run uses the per-target pull (consistency groups, fan-out;
	// versioned: runs recorded before it pulled one dataset to one target).
	groups bool
	// failback is the target a failback run copies from (nil: a replication).
	failback *activities.TargetPlan
	// guard is a failback's opt-in and primary check (failback.go).
	guard failbackGuard
	// quiesceStarted is set once the quiesce step began: from then on resume must run.
	quiesceStarted bool
	// quiesceScheduled is set once a quiesce script was sent to an agent.
	quiesceScheduled bool
	// fuse is the quiesce step's first attempt when it also does the preflight and the
	// precopy (beforeInPush), nil otherwise.
	fuse *activities.PushInput
	// fused is the push part's outcome of a quiesce step that pushed too (quiescepush.go),
	// until the push step takes it as its first attempt.
	fused *fusedPush
	// thawed is set when the fused push also resumed the application (thawinpush.go);
	// thawLost names its agent when it was lost while it did.
	thawed   bool
	thawLost *lostThaw
	// pushPreflight is set when each push attempt carries its agent's preflight
	// (preflightinpush.go).
	pushPreflight bool
	// quiesceMayHaveRun is set once an attempt at the quiesce script ended other than by a
	// schedule-to-start timeout (which means no agent ever received it).
	quiesceMayHaveRun bool
	// takenOver are the failed hosts whose takeover script ran in this run.
	takenOver []string
	// scriptRunning are the failed hosts whose takeover script is running now.
	scriptRunning map[string]bool
	// coalescing holds search attribute updates in pendingAttrs until the run's coroutine
	// blocks, then sends them as one command (coalesceUpserts).
	coalescing   bool
	pendingAttrs []temporal.SearchAttributeUpdate
}

func (w *replication) run(ctx workflow.Context) (Status, error) {
	err := w.inputErr
	if err == nil {
		err = w.setup(ctx)
	}
	if err == nil && w.in.Direction == DirectionFailback {
		err = w.setupFailback(ctx)
	}
	if err == nil {
		err = w.replicate(ctx)
	}
	w.status.FinishedAt = workflow.Now(ctx)
	switch {
	case err == nil:
		w.setPhase(ctx, PhaseCompleted)
	case temporal.IsCanceledError(err):
		w.status.Error = "cancelled"
		w.setPhase(workflowDisconnected(ctx), PhaseCancelled)
	default:
		w.status.Error = rootMessage(err)
		w.setPhase(workflowDisconnected(ctx), PhaseFailed)
	}
	w.upsertMemo(workflowDisconnected(ctx))
	mh := workflow.GetMetricsHandler(ctx).WithTags(map[string]string{"job": w.in.Job})
	mh.WithTags(map[string]string{"phase": w.status.Phase}).Counter("replctl_runs_total").Inc(1)
	if err == nil {
		// Prometheus alerts on time() - this: the age of the newest good replica (RPO).
		mh.Gauge("replctl_last_replica_timestamp_seconds").Update(float64(w.status.FinishedAt.Unix()))
	}
	return w.status, err
}

// setup checks the input and has an agent resolve the job into a plan.
func (w *replication) setup(ctx workflow.Context) error {
	if !jobName.MatchString(w.in.Job) {
		return badWorkflowInput(fmt.Sprintf(`job %q: want {"job": "NAME"} with NAME matching %s`, w.in.Job, jobName))
	}
	switch w.in.Direction {
	case "", DirectionReplicate, DirectionFailback:
	default:
		return badWorkflowInput(fmt.Sprintf(`direction %q: want %q (default) or %q, e.g. {"job": %q, "direction": "failback"}`, w.in.Direction, DirectionReplicate, DirectionFailback, w.in.Job))
	}
	if w.in.From != "" && w.in.Direction != DirectionFailback {
		return badWorkflowInput(fmt.Sprintf(`"from" (%q) is only used with "direction": "failback"`, w.in.From))
	}
	if err := w.checkFailbackInput(ctx); err != nil {
		return err
	}
	w.upsert(ctx, AttrJob.ValueSet(w.in.Job), AttrPhase.ValueSet(PhasePlanning))
	res, err := w.planJob(ctx)
	if err != nil {
		return err
	}
	w.plan = res.Plan
	w.roles.application = newRole(RoleApplication, w.plan.Order.Application)
	w.roles.source = newRole(RoleSource, w.plan.Order.Source)
	w.roles.target = newRole(RoleTarget, w.plan.Order.Target)
	w.upsert(ctx, AttrSourceStorage.ValueSet(w.plan.Source.Storage), AttrTargetStorage.ValueSet(w.plan.Target.Storage))
	return nil
}

// planJob has an agent resolve the job into a plan. Any agent may plan, so the plan is a
// local activity of the workflow worker that runs this task (issue 16: one activity task and
// one workflow task fewer per run, about 20 ms of an empty run). Runs recorded before that
// planned with an activity on the shared queue every agent polls.
func (w *replication) planJob(ctx workflow.Context) (activities.PlanResult, error) {
	retry := &temporal.RetryPolicy{MaximumAttempts: 5, NonRetryableErrorTypes: []string{activities.ErrTypeBadInput}}
	in := activities.PlanInput{Job: w.in.Job}
	var res activities.PlanResult
	if changed(ctx, "plan-local-activity") {
		lctx := workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
			StartToCloseTimeout: 30 * time.Second, RetryPolicy: retry, Summary: "plan " + w.in.Job,
		})
		err := workflow.ExecuteLocalActivity(lctx, activities.PlanName, in).Get(ctx, &res)
		return res, err
	}
	pctx := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 30 * time.Second, RetryPolicy: retry, Summary: "plan " + w.in.Job,
	})
	err := workflow.ExecuteActivity(pctx, activities.PlanName, in).Get(ctx, &res)
	return res, err
}

// replicate runs the steps. The push runs while the application is quiesced, so the image
// is application-consistent; the pull runs after resume, so the application is frozen only
// for the push.
func (w *replication) replicate(ctx workflow.Context) error {
	// Runs recorded before consistency groups and fan-out pulled one dataset to one target.
	w.groups = w.failback != nil || changed(ctx, "groups-fanout")
	w.warmTargets(ctx)
	// The preflight and the precopy travel in the quiesce step's push where they can
	// (precopyinpush.go), the preflight alone in the push of a job that quiesces nothing
	// (preflightinpush.go); else they are steps of their own.
	if !w.beforeInPush(ctx) && !w.preflightInPush(ctx) {
		if err := w.beforeQuiesce(ctx); err != nil {
			return err
		}
	}
	err := w.quiesce(ctx)
	if err == nil {
		err = w.push(ctx)
	}
	if err == nil && w.quiesceStarted && w.resumeBesidePull(ctx) {
		return w.resumeAndPull(ctx)
	}
	if w.quiesceStarted {
		// Resume even if the run is failing or cancelled: never leave the application frozen.
		if rerr := w.resume(workflowDisconnected(ctx)); rerr != nil {
			return leftQuiesced(rerr, "before that", err)
		}
	}
	if err != nil {
		return err
	}
	return w.pullAll(ctx)
}

// beforeQuiesce runs the preflight and the precopy as steps of their own.
func (w *replication) beforeQuiesce(ctx workflow.Context) error {
	folded := w.preflightInPrecopy(ctx)
	if !folded {
		if err := w.preflight(ctx); err != nil {
			return err
		}
	}
	return w.precopy(ctx, folded)
}

// pullAll pulls the run's images to its targets.
func (w *replication) pullAll(ctx workflow.Context) error {
	if w.groups {
		return w.pullTargets(ctx)
	}
	return w.pull(ctx)
}

func (w *replication) quiesce(ctx workflow.Context) error {
	app := w.plan.Application
	if app.Quiesce == "" {
		w.status.CrashConsistent = true
		w.note("job has no quiesce script: the image is crash-consistent")
		return nil
	}
	host, err := w.plan.Host(app.Host)
	if err != nil {
		return err
	}
	w.setPhase(ctx, PhaseQuiescing)
	w.quiesceStarted = true
	w.status.QuiescedHost = app.Host
	w.upsert(ctx, AttrQuiescedHost.ValueSet(app.Host))
	fuse := w.fuse
	if fuse == nil {
		fuse = w.fusedInput(ctx)
	}
	// Set when an attempt that carried the preflight ended without proving it done: the
	// next attempt elsewhere runs it first (precopyinpush.go).
	needPreflight := false
	err = w.onRole(ctx, w.roles.application, activities.StepQuiesce, func(ctx workflow.Context, agent string, _ *activities.Progress) error {
		w.quiesceScheduled = true
		var err error
		if fuse != nil && agent == fuse.Agent {
			in := *fuse
			err = w.quiesceAndPush(ctx, in, host)
			// The first attempt only, unless it quiesced nothing: then it is sent again
			// whole (preflight and precopy included).
			if in.Before == nil || !notQuiesced(err) {
				fuse = nil
			}
			needPreflight = in.Before != nil && !preflightDone(err)
		} else {
			if needPreflight {
				// On the agent taking over, as a run without the fused push would have.
				if err := w.beforeQuiesce(ctx); err != nil {
					return err
				}
				needPreflight = false
				w.setPhase(ctx, PhaseQuiescing)
			}
			err = w.script(ctx, activities.StepQuiesce, agent, host, app.Quiesce, "")
		}
		if !neverStarted(err) && !notQuiesced(err) {
			w.quiesceMayHaveRun = true
		}
		return err
	})
	// Every application agent was lost earlier in the run, or none received the script
	// (schedule-to-start timeouts on all), so no quiesce script ran: there is nothing to
	// resume, and the host was never frozen. (Runs recorded before this change went on to
	// a resume step that found no agent and reported the host left quiesced.)
	neverRan := !w.quiesceScheduled || err != nil && !w.quiesceMayHaveRun &&
		changed(ctx, "quiesce-never-started")
	if err != nil && neverRan && changed(ctx, "no-resume-without-quiesce") {
		w.quiesceStarted = false
		w.clearQuiesced(ctx)
	}
	if w.continueUnreachable(err, "quiesce of host "+app.Host, app.Host) {
		return nil
	}
	return err
}

func (w *replication) push(ctx workflow.Context) error {
	w.setPhase(ctx, PhasePushing)
	// A consistency group's datasets are all pushed in this one step, while quiesced: the
	// images are of one point in time. A failback pushes the target's replicas.
	storage, datasets := w.plan.Source.Storage, w.plan.Source.List()
	if w.failback != nil {
		storage, datasets = w.failback.Storage, w.failback.List()
	}
	return w.onRole(ctx, w.roles.source, activities.StepPush, func(ctx workflow.Context, agent string, resume *activities.Progress) error {
		if f := w.takeFused(agent); f != nil {
			// The quiesce step's activity pushed too: its push part is this first attempt.
			if f.err != nil {
				return f.err
			}
			w.status.SourcePath = f.source
			w.pushed([]activities.PushResult{f.res})
			return nil
		}
		repo, err := w.plan.Repo(agent)
		if err != nil {
			return nonRetryable(err)
		}
		results := make([]activities.PushResult, len(datasets))
		for i, ds := range datasets {
			src, err := w.plan.DatasetDir(agent, storage, ds)
			if err != nil {
				return nonRetryable(err)
			}
			if i == 0 {
				w.status.SourcePath = src
			}
			in := activities.PushInput{
				Job: w.plan.Job, RunID: w.status.RunID, Agent: agent, SourceDir: src, Dataset: ds,
				Repo: repo, Resume: resume,
				FollowLink: w.failback != nil, OnUnsupported: w.plan.OnUnsupported,
			}
			if err := w.withPreflight(&in); err != nil {
				return err
			}
			err = workflow.ExecuteActivity(ctx, activities.PushName, in).Get(ctx, &results[i])
			if err != nil {
				return err
			}
		}
		w.pushed(results)
		return nil
	})
}

// pushed records the images of a push step, one per dataset.
func (w *replication) pushed(results []activities.PushResult) {
	images := make([]string, len(results))
	var unsupported []*activities.Unsupported
	var total Progress
	for i, res := range results {
		if res.Unsupported != nil {
			unsupported = append(unsupported, res.Unsupported)
		}
		images[i] = res.ImageID
		total.BytesDone += res.Bytes
		total.FilesDone += res.Files
	}
	w.image, w.images = images[0], images
	w.setUnsupported(unsupported)
	w.status.Image = images[0]
	if len(images) > 1 {
		w.status.Images = images
	}
	w.status.Progress = Progress{Step: activities.StepPush, BytesDone: total.BytesDone, BytesTotal: total.BytesDone, FilesDone: total.FilesDone, FilesTotal: total.FilesDone}
}

func (w *replication) pull(ctx workflow.Context) error {
	w.setPhase(ctx, PhasePulling)
	replicaName := replicaName(ctx)
	return w.onRole(ctx, w.roles.target, activities.StepPull, func(ctx workflow.Context, agent string, resume *activities.Progress) error {
		root, err := w.plan.TargetRoot(agent)
		if err != nil {
			return nonRetryable(err)
		}
		repo, err := w.plan.Repo(agent)
		if err != nil {
			return nonRetryable(err)
		}
		in := activities.PullInput{
			Job: w.plan.Job, RunID: w.status.RunID, Agent: agent, ImageID: w.image, TargetRoot: root,
			Dataset: w.plan.Target.Dataset, Repo: repo,
			ReplicaName: replicaName, Epoch: w.nextEpoch(ctx), Keep: w.plan.Retention.Replicas,
			SourceDataset: w.plan.Source.Dataset, KeepImages: w.plan.Retention.Images, Verify: w.plan.Verify,
			KeepWithin: w.plan.Retention.ReplicasWithin, KeepImagesWithin: w.plan.Retention.ImagesWithin,
		}
		if resume != nil && resume.Step == activities.StepPull {
			in.ResumeFrom = resume.Staging
		}
		var res activities.PullResult
		if err := workflow.ExecuteActivity(ctx, activities.PullName, in).Get(ctx, &res); err != nil {
			return err
		}
		w.status.Progress = Progress{Step: activities.StepPull, BytesDone: res.Bytes, BytesTotal: res.Bytes, FilesDone: res.Files, FilesTotal: res.Files}
		w.addRefused(res.Refused)
		w.status.Replica = &Replica{Name: res.ReplicaName, Path: res.ReplicaPath, Link: res.LinkPath, Agent: res.Agent, Epoch: res.Epoch, Verified: res.Verified, Incomplete: res.Incomplete || w.status.Unsupported != nil, Linked: res.Linked, Restored: res.Restored, Cloned: res.Cloned, Distrusted: res.Distrusted, Recycled: res.Recycled, Kept: res.Kept, ResumedFrom: res.ResumedFrom}
		return nil
	})
}

// setUnsupported records what the pushed images lack (on_unsupported: skip), one summary per
// dataset: the replicas made from them are incomplete.
func (w *replication) setUnsupported(per []*activities.Unsupported) {
	w.status.Unsupported = nil
	if len(per) == 0 {
		return
	}
	sum := &activities.Unsupported{}
	for _, u := range per {
		// Merge ranges over a map only to add counts per key: the result is the same in any order.
		//workflowcheck:ignore
		sum.Merge(u)
	}
	w.status.Unsupported = sum
}

// script runs one of host's scripts on agent and records the result.
func (w *replication) script(ctx workflow.Context, step activities.Step, agent string, host activities.HostPlan, script, failedHost string) error {
	in := w.scriptInput(step, agent, host, script, failedHost)
	var res activities.ScriptResult
	err := workflow.ExecuteActivity(ctx, activities.RunScriptName, in).Get(ctx, &res)
	if err != nil {
		var appErr *temporal.ApplicationError
		if errors.As(err, &appErr) && appErr.Type() == activities.ErrTypeScriptFailed && appErr.HasDetails() {
			_ = appErr.Details(&res)
		}
	}
	if res.Step != "" {
		w.status.Scripts = append(w.status.Scripts, res)
	}
	return err
}

// scriptInput is the input of one of host's scripts run by agent.
func (w *replication) scriptInput(step activities.Step, agent string, host activities.HostPlan, script, failedHost string) activities.ScriptInput {
	src, _ := w.plan.SourceDir(host.Name) // "" when the host does not see the source
	return activities.ScriptInput{
		Job: w.plan.Job, RunID: w.status.RunID, Step: step, Agent: agent, Host: host, Script: script,
		FailedHost: failedHost, SourcePath: src, Timeout: w.plan.Application.Timeout,
	}
}

// nextEpoch issues the fencing epoch of a pull attempt: it only increases, within a run
// (max with the last one) and across runs (runs of a job never overlap and time moves on).
func (w *replication) nextEpoch(ctx workflow.Context) int64 {
	e := workflow.Now(ctx).UnixNano()
	if e <= w.epoch {
		e = w.epoch + 1
	}
	w.epoch = e
	return e
}

func (w *replication) note(s string) { w.status.Notes = append(w.status.Notes, s) }

// addRefused adds what a target refused (on_unsupported: skip) to what the run's replicas
// lack.
func (w *replication) addRefused(r *activities.Unsupported) {
	if r.Empty() {
		return
	}
	if w.status.Unsupported == nil {
		w.status.Unsupported = &activities.Unsupported{}
	}
	// Merge ranges over a map only to add counts (the order cannot change the result).
	//workflowcheck:ignore
	w.status.Unsupported.Merge(r)
}

func workflowDisconnected(ctx workflow.Context) workflow.Context {
	d, _ := workflow.NewDisconnectedContext(ctx)
	return d
}

func nonRetryable(err error) error {
	return temporal.NewNonRetryableApplicationError(err.Error(), activities.ErrTypeBadInput, err)
}

// replicaName names the replica a run builds: its start time and a short run ID.
func replicaName(ctx workflow.Context) string {
	info := workflow.GetInfo(ctx)
	return info.WorkflowStartTime.UTC().Format("20060102T150405Z") + "-" + shortID(info.WorkflowExecution.RunID)
}

func shortID(id string) string {
	// Run IDs are UUIDv7: the leading digits are a timestamp, the trailing ones random.
	id = strings.ReplaceAll(id, "-", "")
	if len(id) > 8 {
		return id[len(id)-8:]
	}
	return id
}
