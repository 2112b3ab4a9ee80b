// Package activities holds the steps of a replication as Temporal activities. One Agent value
// per host is registered on that host's task queue (RunScript, Push, Pull) and on the shared
// queue (Plan). The I/O lives in the subpackages dataplane (images and replicas) and hostexec
// (a host's scripts, locally or over SSH).
package activities

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/replctl/replctl/activities/dataplane"
	"github.com/replctl/replctl/activities/hostexec"
	"github.com/replctl/replctl/config"
)

// Registered activity names: stable, because recorded histories refer to them.
const (
	PlanName      = "Plan"
	RunScriptName = "RunScript"
	PushName      = "Push"
	PrecopyName   = "Precopy"
	PullName      = "Pull"
	MaintainName  = "Maintain"
	TestCopyName  = "TestCopy"
	// PublishGroupName publishes every dataset of a consistency group at once.
	PublishGroupName = "PublishGroup"
	// PreflightName checks the source storage and datasets on disk before quiesce.
	PreflightName = "Preflight"
)

// Error types of the non-retryable application errors activities return. The workflow never
// hands these to another agent: another agent would fail the same way.
const (
	ErrTypeBadInput        = "BadInput"
	ErrTypeFenced          = "Fenced"
	ErrTypeVerify          = "VerifyFailed"
	ErrTypeScriptFailed    = "ScriptFailed"
	ErrTypeHostUnreachable = "HostUnreachable"
	ErrTypeHostKey         = "HostKeyMismatch"
	ErrTypeMisrouted       = "Misrouted"
	// ErrTypeStorageFault: the storage refused (full, over quota, read-only, failing); every
	// agent of that storage would meet it, so the step is not taken over (faults.go).
	ErrTypeStorageFault = "StorageFault"
	// ErrTypeUnsupported: the source holds entries the data plane cannot replicate and the
	// job's on_unsupported is fail; the details are the dataplane.Unsupported summary.
	ErrTypeUnsupported = "Unsupported"
)

// Agent is the activities of one host, with what they keep between calls.
type Agent struct {
	// Host is the name of the host this agent runs on: it must match the queue it polls.
	Host string
	// ConfigFile is read by Plan at the start of every run.
	ConfigFile string
	// StateDir is the agent's private directory (repository client state and caches).
	StateDir string

	reposOnce sync.Once
	repos     *dataplane.Repos
	// quiesced holds what this agent quiesced until a resume thaws it (quiesced.go).
	quiesced Quiesced
	// limits are the agent's data step slots and host bandwidth (limits.go).
	limits limits
}

// NewAgent returns the activities of host. stateDir "" picks a directory under the user's
// cache dir.
func NewAgent(host, configFile, stateDir string) (*Agent, error) {
	if stateDir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return nil, fmt.Errorf("agent %s: no state dir configured and no user cache dir: %w", host, err)
		}
		stateDir = filepath.Join(base, "replctl", host)
	}
	return &Agent{Host: host, ConfigFile: configFile, StateDir: stateDir}, nil
}

// Close releases the repositories the agent keeps open.
func (a *Agent) Close() error {
	if a.repos != nil {
		return a.repos.Close()
	}
	return nil
}

func (a *Agent) dataplane() *dataplane.Repos {
	a.reposOnce.Do(func() { a.repos = dataplane.NewRepos(func(string, ...any) {}) })
	return a.repos
}

// PlanInput is the input of Plan.
type PlanInput struct {
	Job string
}

// PlanResult is the plan of one run.
type PlanResult struct {
	Plan Plan
	// Agent is the agent that read the config.
	Agent string
}

// Plan reads the config file and resolves a job. A missing job or an invalid config is bad
// input: no other agent would do better.
func (a *Agent) Plan(ctx context.Context, in PlanInput) (PlanResult, error) {
	if in.Job == "" {
		return PlanResult{}, badInput(errors.New(`workflow input needs a job name: {"job": "NAME"}`))
	}
	cfg, err := config.Load(a.ConfigFile)
	if err != nil {
		return PlanResult{}, badInput(fmt.Errorf("agent %s: %w", a.Host, err))
	}
	p, err := NewPlan(cfg, in.Job)
	if err != nil {
		return PlanResult{}, badInput(err)
	}
	return PlanResult{Plan: p, Agent: a.Host}, nil
}

// ScriptInput is the input of RunScript.
type ScriptInput struct {
	Job   string
	RunID string
	// Step is StepQuiesce, StepResume, StepTakeover or StepCheck.
	Step Step
	// Agent is the agent whose queue this was sent to.
	Agent string
	// Host is the host the script belongs to and runs on.
	Host   HostPlan
	Script string
	// FailedHost is the host being taken over (takeover scripts).
	FailedHost string
	// SourcePath is the source dataset as Host sees it ("" if not attached).
	SourcePath string
	Timeout    time.Duration
}

// ScriptResult is what a script run did. It is recorded in history, so the output is a tail.
type ScriptResult struct {
	Step       Step
	Host       string
	Agent      string
	Script     string
	Remote     bool
	ExitCode   int
	TimedOut   bool
	OutputTail string
	Duration   time.Duration
}

// RunScript runs a host's script on that host: as a local process when the host is this
// machine (or is configured `connect: local`), over SSH otherwise. A non-zero exit fails the
// activity with ErrTypeScriptFailed and the result as details.
func (a *Agent) RunScript(ctx context.Context, in ScriptInput) (_ ScriptResult, rerr error) {
	ctx, l, err := a.begin(ctx, in.Agent, Progress{Step: in.Step, Phase: "script " + in.Script})
	if err != nil {
		return ScriptResult{}, err
	}
	// From here on, the host, its scripts dir, SSH target and source path are this agent's
	// own values: the input's were only compared with them.
	in.Host, in.SourcePath, err = a.authorizeScript(ctx, in)
	if err != nil {
		l.stop()
		return ScriptResult{}, err
	}
	req := a.scriptRequest(in)
	settled := a.trackScript(ctx, in)
	began := time.Now()
	res, err := hostexec.Run(ctx, req)
	l.stop()
	settled(err == nil && res.ExitCode == 0 && !res.TimedOut)
	defer func() { observe(ctx, in.Job, "script_"+string(in.Step), began, rerr, 0, 0) }()
	out := ScriptResult{Step: in.Step, Host: in.Host.Name, Agent: a.Host, Script: in.Script, Remote: res.Remote, ExitCode: res.ExitCode, TimedOut: res.TimedOut, OutputTail: res.OutputTail, Duration: res.Duration}
	switch {
	case errors.Is(err, hostexec.ErrHostKey):
		return out, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeHostKey, err)
	case errors.Is(err, hostexec.ErrUnreachable):
		return out, temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeHostUnreachable, err)
	case errors.Is(err, hostexec.ErrNoScript):
		return out, badInput(err)
	case err != nil:
		if c := leaseCause(ctx); c != nil {
			return out, c
		}
		return out, err
	}
	if res.ExitCode != 0 || res.TimedOut {
		why := fmt.Sprintf("exited %d", res.ExitCode)
		if res.TimedOut {
			why = fmt.Sprintf("timed out after %s", in.Timeout)
		}
		msg := fmt.Sprintf("%s script %s on host %s (run by agent %s) %s: %s", in.Step, in.Script, in.Host.Name, a.Host, why, strings.ToValidUTF8(lastLine(res.OutputTail), "\uFFFD"))
		return out, temporal.NewNonRetryableApplicationError(msg, ErrTypeScriptFailed, nil, out)
	}
	return out, nil
}

// pushCheckpointInterval bounds what a taker re-reads after a push was lost.
const pushCheckpointInterval = 3 * time.Second

// RepoLocation is a repository as the executing host sees it.
type RepoLocation struct {
	Dir          string
	PasswordFile string
	// Via, when set, says this host is not attached to the repository storage: the
	// repository is reached over SFTP through the first of these hosts that answers,
	// and Dir is Via[0]'s view of it.
	Via []RepoHost `json:",omitempty"`
}

// Progress is the heartbeat detail of a step: a resume cursor for the agent that takes over.
type Progress struct {
	Step       Step
	Phase      string
	BytesDone  int64
	BytesTotal int64
	FilesDone  int64
	FilesTotal int64
	// Staging is the pull's staging directory, relative to the target root: a taker links
	// what is already there.
	Staging string
	Agent   string
	Epoch   int64
	// Dataset is the dataset a pull of a consistency group was working on.
	Dataset string `json:",omitempty"`
}

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
}

// Unsupported summarises the source entries an image cannot hold (dataplane.Unsupported).
type Unsupported = dataplane.Unsupported

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
}

// Precopy copies the LIVE source dataset into the job's repository before the application
// is quiesced, making no image: the push that follows, while quiesced, re-reads only the
// files changed since the previous image (from the page cache) and stores nothing the
// precopy already stored, so the freeze window shrinks to about a walk of the tree.
func (a *Agent) Precopy(ctx context.Context, in PrecopyInput) (PrecopyResult, error) {
	res, err := a.push(ctx, PushInput{Job: in.Job, RunID: in.RunID, Agent: in.Agent, SourceDir: in.SourceDir, Dataset: in.Dataset, Repo: in.Repo}, StepPrecopy, in.First)
	return PrecopyResult{Agent: res.Agent, Bytes: res.Bytes, Files: res.Files, Reused: res.Reused, Duration: res.Duration, Skipped: res.skipped, SlotWait: res.SlotWait}, err
}

// Push makes a point-in-time image of the (quiesced) source dataset in the job's repository.
func (a *Agent) Push(ctx context.Context, in PushInput) (PushResult, error) {
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
	start := time.Now()
	ctx, hb, err := a.begin(ctx, in.Agent, Progress{Step: step, Phase: "open"})
	if err != nil {
		return pushResult{}, err
	}
	defer hb.stop()
	in, err = a.authorizePush(ctx, step, in)
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
		PrecopyFirst:       precopyFirst,
		OnUnsupported:      in.OnUnsupported,
		Limiter:            slot.limiter,
	}, func(p dataplane.Progress) { hb.update(fromDataplane(step, a.Host, p, "", 0)) })
	observe(ctx, in.Job, string(step), start, err, res.Bytes, res.Files)
	if err != nil {
		var ue *dataplane.UnsupportedError
		if errors.As(err, &ue) {
			observeUnsupported(ctx, in.Job, &ue.Summary)
		}
		return pushResult{}, a.fault(ctx, in.Job, step, err, hb.progress())
	}
	observeUnsupported(ctx, in.Job, res.Unsupported)
	return pushResult{PushResult{Agent: a.Host, ImageID: res.ImageID, Bytes: res.Bytes, Files: res.Files, Reused: res.Reused, Duration: time.Since(start), Unsupported: res.Unsupported, SlotWait: slot.waited}, res.Skipped}, nil
}

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
	Verified   bool
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
	var err error
	var onUnsupported string
	if in.TargetRoot, in.Repo, onUnsupported, err = a.authorizePull(ctx, in); err != nil {
		return PullResult{}, err
	}
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
		OnUnsupported: onUnsupported,
		Keep:          in.replicaRetention(),
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
		// Image retention is housekeeping: the replica is published, a failure here only
		// leaves older images for the next run (or maintenance) to prune.
		if n, perr := a.dataplane().PruneImages(ctx, a.repoConfig(in.Repo), in.Job, in.SourceDataset, in.imageRetention()); perr != nil {
			activity.GetLogger(ctx).Warn("image retention failed", "job", in.Job, "error", perr)
		} else if n > 0 {
			activity.GetLogger(ctx).Info("pruned images", "job", in.Job, "deleted", n)
		}
	}
	// The replica may have been published by an earlier attempt whose result was lost:
	// report who really published it.
	return PullResult{Agent: res.PublishedBy, ReplicaName: res.ReplicaName, ReplicaPath: res.ReplicaPath, LinkPath: res.LinkPath, Bytes: res.Bytes, Files: res.Files, Linked: res.Linked, Restored: res.Restored, Cloned: res.Cloned, Distrusted: res.Distrusted, Verified: res.Verified, Incomplete: res.Incomplete, Refused: res.Refused, Epoch: res.PublishedEpoch, ResumedFrom: in.ResumeFrom, SavedPrevious: saved, Duration: time.Since(start), SlotWait: slot.waited}, nil
}

// MaintainInput is the input of Maintain.
type MaintainInput struct {
	Job   string
	Agent string
	Repo  RepoLocation
	// Full also collects contents no image refers to (after pruning, killed pushes).
	Full bool
}

// MaintainResult says who maintained the repository and how long it took.
type MaintainResult struct {
	Agent    string
	Full     bool
	Duration time.Duration
}

// Maintain runs repository maintenance. Only one agent may do it at a time for a
// repository: the RepositoryMaintenance workflow (one workflow ID per repository) is the
// single owner.
func (a *Agent) Maintain(ctx context.Context, in MaintainInput) (MaintainResult, error) {
	start := time.Now()
	ctx, l, err := a.begin(ctx, in.Agent, Progress{Step: StepMaintain, Phase: "maintain"})
	if err != nil {
		return MaintainResult{}, err
	}
	defer l.stop()
	if in.Repo, err = a.authorizeMaintain(ctx, in); err != nil {
		return MaintainResult{}, err
	}
	err = a.dataplane().Maintain(ctx, a.repoConfig(in.Repo), in.Full)
	observe(ctx, in.Job, string(StepMaintain), start, err, 0, 0)
	if err != nil {
		return MaintainResult{}, a.fault(ctx, in.Job, StepMaintain, err, l.progress())
	}
	return MaintainResult{Agent: a.Host, Full: in.Full, Duration: time.Since(start)}, nil
}

// TestCopyInput is the input of TestCopy.
type TestCopyInput struct {
	Job        string
	Agent      string
	TargetRoot string
	Dataset    string
	// Replica to copy ("" = the current one); Name of the copy.
	Replica string
	Name    string
	// Cleanup removes the copy instead of opening it.
	Cleanup bool
}

// TestCopyResult is where the writable test copy is.
type TestCopyResult struct {
	Agent   string
	Name    string
	Path    string
	Replica string
	Files   int64
	Bytes   int64
	Cloned  int64
	Removed bool
}

// TestCopy opens (or, with Cleanup, removes) a writable copy of a replica on the target for
// a failover test; published replicas are never touched.
func (a *Agent) TestCopy(ctx context.Context, in TestCopyInput) (TestCopyResult, error) {
	ctx, l, err := a.begin(ctx, in.Agent, Progress{Step: StepTestCopy, Phase: "copy"})
	if err != nil {
		return TestCopyResult{}, err
	}
	defer l.stop()
	if err := a.authorizeTestCopy(ctx, in); err != nil {
		return TestCopyResult{}, err
	}
	if in.Cleanup {
		if err := dataplane.RemoveTestCopy(in.TargetRoot, in.Dataset, in.Name); err != nil {
			return TestCopyResult{}, a.fault(ctx, in.Job, StepTestCopy, err, l.progress())
		}
		return TestCopyResult{Agent: a.Host, Name: in.Name, Removed: true}, nil
	}
	tc, err := dataplane.OpenTestCopy(ctx, in.TargetRoot, in.Dataset, in.Replica, in.Name)
	if err != nil {
		return TestCopyResult{}, a.fault(ctx, in.Job, StepTestCopy, err, l.progress())
	}
	return TestCopyResult{Agent: a.Host, Name: tc.Name, Path: tc.Path, Replica: tc.Replica, Files: tc.Files, Bytes: tc.Bytes, Cloned: tc.Cloned}, nil
}

func (a *Agent) repoConfig(r RepoLocation) dataplane.RepoConfig {
	cfg := dataplane.RepoConfig{Dir: r.Dir, PasswordFile: r.PasswordFile, ClientDir: filepath.Join(a.StateDir, "repositories")}
	for _, h := range r.Via {
		cfg.Remote = append(cfg.Remote, dataplane.RemoteHost{Name: h.Name, Target: h.SSH, Dir: h.Dir})
	}
	return cfg
}

// begin starts an attempt on this agent: it refuses work sent to another agent's queue and
// starts the write lease with p as the first heartbeat.
func (a *Agent) begin(ctx context.Context, agent string, p Progress) (context.Context, *lease, error) {
	if err := a.checkRoute(agent); err != nil {
		return ctx, nil, err
	}
	p.Agent = a.Host
	return startLease(ctx, p)
}

// checkRoute refuses work sent to the wrong agent: two agents configured with the same host
// name would otherwise both take a host's steps.
func (a *Agent) checkRoute(agent string) error {
	if agent != a.Host {
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("step for agent %q reached agent %q: two agents poll the same host queue; check --host", agent, a.Host), ErrTypeMisrouted, nil)
	}
	return nil
}

func fromDataplane(step Step, agent string, p dataplane.Progress, staging string, epoch int64) Progress {
	return Progress{Step: step, Phase: p.Phase, BytesDone: p.BytesDone, BytesTotal: p.BytesTotal, FilesDone: p.FilesDone, FilesTotal: p.FilesTotal, Staging: staging, Agent: agent, Epoch: epoch}
}

func lastLine(s string) string {
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' {
			return s[i+1:]
		}
	}
	return s
}

// observe records a step's duration and outcome (and data volume) in the agent's metrics.
func observe(ctx context.Context, job, step string, start time.Time, err error, bytes, files int64) {
	if !activity.IsActivity(ctx) {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	mh := activity.GetMetricsHandler(ctx).WithTags(map[string]string{"job": job, "step": step})
	mh.WithTags(map[string]string{"result": result}).Timer("replctl_step_duration_seconds").Record(time.Since(start))
	if err == nil && bytes > 0 {
		mh.Counter("replctl_" + step + "_bytes_total").Inc(bytes)
		mh.Counter("replctl_" + step + "_files_total").Inc(files)
	}
}

// observeUnsupported counts the entries a push found it cannot replicate, by kind.
func observeUnsupported(ctx context.Context, job string, u *dataplane.Unsupported) {
	if u.Empty() || !activity.IsActivity(ctx) {
		return
	}
	mh := activity.GetMetricsHandler(ctx)
	for kind, n := range u.ByKind {
		mh.WithTags(map[string]string{"job": job, "kind": kind}).Counter("replctl_unsupported_entries_total").Inc(int64(n))
	}
}
