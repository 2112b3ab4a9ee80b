package activities

import (
	"context"
	"errors"
	"time"

	"github.com/replctl/replctl/activities/dataplane"
)

// Registered names of Push and Precopy: stable, because recorded histories refer to them.
const (
	PushName    = "Push"
	PrecopyName = "Precopy"
)

// pushCheckpointInterval bounds what a taker re-reads after a push was lost.
const pushCheckpointInterval = 3 * time.Second

// PushInput is the input of Push.
type PushInput struct {
	Job       string
	RunID     string
	Agent     string
	SourceDir string
	Dataset   string
	Repo      RepoLocation
	// Resume is the failed attempt's last progress, if any. The repository's checkpoints
	// carry what was uploaded; this is for the record.
	Resume *Progress
	// FollowLink (failback): SourceDir is a target's dataset link; the replica it points to
	// is pushed, and a dataset without a replica is refused.
	FollowLink bool `json:",omitempty"`
	// OnUnsupported is the job's on_unsupported ("fail" or "skip"); the agent refuses any
	// other value than its own config's.
	OnUnsupported string `json:",omitempty"`
	// Quiesce, when set, is the application's quiesce script, run by this same activity
	// before it pushes (quiescepush.go): same job, run and agent, checked against the
	// agent's own config like a RunScript's.
	Quiesce *ScriptInput `json:",omitempty"`
	// Before, with Quiesce, is what the same activity does before the script: the run's
	// preflight and the precopy (precopyinpush.go). Nothing is quiesced when it fails.
	// Without Quiesce it is the preflight alone, done before the push (preflightinpush.go).
	Before *BeforeQuiesce `json:",omitempty"`
	// Thaw, with Quiesce, is the application's resume script, run by this same activity
	// once its push succeeded (thawinpush.go): same job, run, agent and host as Quiesce.
	Thaw *ScriptInput `json:",omitempty"`
}

// BeforeQuiesce is the part of a push carrying the quiesce that runs before the script:
// the run's preflight of the pushed dataset, then, when the job has one, its precopy.
type BeforeQuiesce struct {
	// Preflight must name the push's job, run and agent, and its dataset alone.
	Preflight PreflightInput
	// Precopy: copy the live source into the repository first, when the agent finds it
	// saves time (precopy: auto); PrecopyFirst: also without a previous image (always).
	Precopy      bool `json:",omitempty"`
	PrecopyFirst bool `json:",omitempty"`
}

// PushResult names the image a push made.
type PushResult struct {
	Agent    string
	ImageID  string
	Bytes    int64
	Files    int64
	Reused   int64
	Duration time.Duration
	// Unsupported is what the image lacks (on_unsupported: skip); nil when nothing.
	Unsupported *Unsupported `json:",omitempty"`
	// SlotWait is how long of Duration the push waited for a slot (max_concurrent_steps).
	SlotWait time.Duration `json:",omitempty"`
	// ReusedDirs is how many directories the push took from the previous image without
	// listing them (`--change-journal=push`); PartialDirs how many it listed only in the
	// entries the journal named.
	ReusedDirs  int `json:",omitempty"`
	PartialDirs int `json:",omitempty"`
	// Quiesce is what the input's quiesce script did, when it had one.
	Quiesce *ScriptResult `json:",omitempty"`
	// Preflight and Precopy are what the input's Before did (Precopy nil when it had none).
	Preflight *PreflightResult `json:",omitempty"`
	Precopy   *PrecopyResult   `json:",omitempty"`
	// Thawed is what the input's Thaw did when it succeeded; ThawFailed says why it did
	// not (the workflow then resumes the application in a step of its own).
	Thawed     *ScriptResult `json:",omitempty"`
	ThawFailed string        `json:",omitempty"`
}

// PrecopyInput is the input of Precopy.
type PrecopyInput struct {
	Job       string
	RunID     string
	Agent     string
	SourceDir string
	Dataset   string
	Repo      RepoLocation
	// First: copy also when the job has no image yet (config precopy: always).
	First bool `json:",omitempty"`
	// Preflight, when set, is the run's preflight, done by this step before it copies; it
	// must name the same job, run and agent.
	Preflight *PreflightInput `json:",omitempty"`
}

// PrecopyResult tells what a precopy stored.
type PrecopyResult struct {
	Agent    string
	Bytes    int64
	Files    int64
	Reused   int64 // files not read: unchanged since the job's previous image
	Duration time.Duration
	// Skipped: nothing to gain (the job has no image yet and First was not set).
	Skipped bool `json:",omitempty"`
	// SlotWait is how long of Duration the precopy waited for a slot (max_concurrent_steps).
	SlotWait time.Duration `json:",omitempty"`
	// Preflight is what the preflight the input carried checked.
	Preflight *PreflightResult `json:",omitempty"`
	// Failed (only in a push that carried the precopy) is why the copy failed: the run
	// went on, and the push read everything while quiesced.
	Failed string `json:",omitempty"`
}

// Precopy copies the LIVE source dataset into the job's repository before the application
// is quiesced, making no image: the push that follows, while quiesced, re-reads only the
// files changed since the previous image (from the page cache) and stores nothing the
// precopy already stored, so the freeze window shrinks to about a walk of the tree.
func (a *Agent) Precopy(ctx context.Context, in PrecopyInput) (PrecopyResult, error) {
	if in.Preflight != nil {
		return a.precopyWithPreflight(ctx, in)
	}
	res, err := a.push(ctx, precopyPush(in), StepPrecopy, in.First)
	return precopyResult(res), err
}

func precopyPush(in PrecopyInput) PushInput {
	return PushInput{Job: in.Job, RunID: in.RunID, Agent: in.Agent, SourceDir: in.SourceDir, Dataset: in.Dataset, Repo: in.Repo}
}

func precopyResult(res pushResult) PrecopyResult {
	return PrecopyResult{Agent: res.Agent, Bytes: res.Bytes, Files: res.Files, Reused: res.Reused, Duration: res.Duration, Skipped: res.skipped, SlotWait: res.SlotWait}
}

// Push makes a point-in-time image of the (quiesced) source dataset in the job's repository.
func (a *Agent) Push(ctx context.Context, in PushInput) (PushResult, error) {
	if in.Quiesce != nil {
		return a.quiesceAndPush(ctx, in)
	}
	if in.Before != nil {
		return a.preflightAndPush(ctx, in)
	}
	res, err := a.push(ctx, in, StepPush, false)
	return res.PushResult, err
}

// pushResult is a PushResult plus whether a precopy was skipped.
type pushResult struct {
	PushResult
	skipped bool
}

// push runs a push, or (step "precopy") a precopy of the live source.
func (a *Agent) push(ctx context.Context, in PushInput, step Step, precopyFirst bool) (pushResult, error) {
	ctx, hb, err := a.begin(ctx, in.Agent, Progress{Step: step, Phase: "open"})
	if err != nil {
		return pushResult{}, err
	}
	defer hb.stop()
	return a.pushLeased(ctx, hb, in, step, pushHow{precopyFirst: precopyFirst})
}

// pushHow is how the agent itself (never the activity input) asks a push to go.
type pushHow struct {
	precopyFirst    bool // a precopy even without a previous image (precopy: always)
	scanUnsupported bool // a precopy that does the preflight's look for unsupported entries
}

// pushLeased is push under a lease the caller holds.
func (a *Agent) pushLeased(ctx context.Context, hb *lease, in PushInput, step Step, how pushHow) (pushResult, error) {
	start := time.Now()
	in, err := a.authorizePush(ctx, step, in)
	if err != nil {
		return pushResult{}, err
	}
	slot, err := a.slot(ctx, hb, in.Job)
	if err != nil {
		return pushResult{}, err
	}
	defer slot.release()
	if in.FollowLink {
		real, err := replicaBehind(in.SourceDir)
		if err != nil {
			return pushResult{}, badInput(err)
		}
		in.SourceDir = real
	}
	var changed *dataplane.ChangedSince
	pushed := func(string) {}
	if step == StepPush && !in.FollowLink {
		changed, pushed = a.pushChanges(ctx, in.Job, in.Dataset, in.SourceDir)
	}
	res, err := a.dataplane().Push(ctx, dataplane.PushRequest{
		Repo:      a.repoConfig(in.Repo),
		Job:       in.Job,
		SourceDir: in.SourceDir,
		Dataset:   in.Dataset,
		Tags:      map[string]string{"run": in.RunID, "agent": a.Host},
		// A taker re-reads what the lost attempt read since its last checkpoint: measured
		// as about one interval of work, so keep it short (the goal is <= 5 s of work).
		CheckpointInterval: pushCheckpointInterval,
		Precopy:            step == StepPrecopy,
		PrecopyFirst:       how.precopyFirst,
		ScanUnsupported:    how.scanUnsupported,
		OnUnsupported:      in.OnUnsupported,
		Limiter:            slot.limiter,
		Changed:            changed,
	}, func(p dataplane.Progress) { hb.update(fromDataplane(step, a.Host, p, "", 0)) })
	pushed(res.ImageID)
	observe(ctx, in.Job, string(step), start, err, res.Bytes, res.Files)
	if err != nil {
		var ue *dataplane.UnsupportedError
		if errors.As(err, &ue) {
			observeUnsupported(ctx, in.Job, &ue.Summary)
		}
		return pushResult{}, a.fault(ctx, in.Job, step, err, hb.progress())
	}
	observeUnsupported(ctx, in.Job, res.Unsupported)
	return pushResult{PushResult{Agent: a.Host, ImageID: res.ImageID, Bytes: res.Bytes, Files: res.Files, Reused: res.Reused, Duration: time.Since(start), Unsupported: res.Unsupported, SlotWait: slot.waited, ReusedDirs: res.ReusedDirs, PartialDirs: res.PartialDirs}, res.Skipped}, nil
}
