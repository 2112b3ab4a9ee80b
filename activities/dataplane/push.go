package dataplane

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/snapshot"
	"github.com/kopia/kopia/snapshot/policy"
	"github.com/kopia/kopia/snapshot/upload"
)

// PushRequest asks for a point-in-time image of SourceDir.
type PushRequest struct {
	Repo RepoConfig
	// Job names the replication job; images of a job share one snapshot
	// source, so every push is incremental against the job's previous image,
	// whichever host or mount path took it.
	Job string
	// SourceDir is the absolute, quiesced source directory. It must not itself
	// be a symlink; symlinks inside it are stored as symlinks (never followed).
	SourceDir string
	// Dataset is the relative dataset path (part of the snapshot source identity).
	Dataset string
	// Tags are recorded on the image (e.g. run id, agent).
	Tags map[string]string
	// CheckpointInterval between checkpoints of a long push (default 5s, max 45m):
	// a rerun after a crash reuses what was checkpointed.
	CheckpointInterval time.Duration
	// Parallel file reads (default pushReaders()).
	Parallel int
	// Precopy copies the LIVE source into the repository without making an image: the
	// quiesced push that follows re-reads only what changed since the job's previous image,
	// from the page cache, and finds its content already stored. Files that vanish or
	// fail to read while the application writes are skipped.
	Precopy bool
	// PrecopyFirst runs a precopy always (config precopy: always), also when the job has
	// no image yet or a small one.
	PrecopyFirst bool
	// OnUnsupported is what a push does with entries an image cannot hold (unsupported.go):
	// "fail" (also "") refuses the push with ErrUnsupported before any image is kept; "skip"
	// keeps the image without them and reports them in PushResult.Unsupported and in the
	// image's tag "unsupported". A precopy never checks, unless ScanUnsupported.
	OnUnsupported string
	// ScanUnsupported makes a precopy look, in its own listing, for what ScanUnsupported
	// looks for (the run's preflight, without a walk of its own): it stops at the first
	// such entry and returns the summary in PushResult.Unsupported, with no error. A
	// skipped precopy (PushResult.Skipped) looked at nothing.
	ScanUnsupported bool
	// Limiter bounds the bytes read from the source (nil: unlimited): the job's and the
	// host's bandwidth.
	Limiter Limiter
	// Changed, when set, is what the agent's change journal says changed since the push
	// of the job's image Changed.Image: a push (not a precopy) then lists only what
	// changed and takes the rest from that image (reuse.go).
	Changed *ChangedSince
}

// A precopy (config precopy: auto) runs only when the job's previous image holds at least
// PrecopyMinFiles files or PrecopyMinBytes bytes: below both, the quiesced push takes
// about as long as the precopy's own bookkeeping (measured: an empty dataset's run took
// 0.18 s longer with a precopy than without).
//
// It also runs only when the newest image's push read, while quiesced, at least
// PrecopyReadPerEntry bytes per entry of the tree (its tag "read"; an image without it
// counts as read in full). What a precopy saves is that reading; what it costs is one more
// walk of every entry: measured on dataset B (200,000 files, 1 % changed, page cache
// dropped), a run took 8.90 s with the precopy (precopy 2.97 s, push 1.78 s) and 6.91 s
// without (push 1.87 s): the push read 9 MB, less than the walk costs. Reading and hashing
// 4 KiB takes about as long here as listing one entry. A change much larger than the last
// one makes that run's freeze longer; the next run has its precopy again.
const (
	PrecopyMinFiles     = 10_000
	PrecopyMinBytes     = 256 << 20
	PrecopyReadPerEntry = 4 << 10
)

// readTag is the image tag holding the bytes its push read from the source (the rest
// was unchanged since the previous image).
const readTag = "read"

// PushResult describes the image a push created.
type PushResult struct {
	ImageID string // snapshot manifest ID
	RootID  string // root directory object ID
	Bytes   int64  // total file bytes in the image
	Files   int64  // total files in the image
	Reused  int64  // files not re-read (unchanged since the previous image)
	// ReusedDirs is how many directories a push the change journal guides took from the
	// previous image without listing them (reuse.go); PartialDirs how many it listed only
	// in the entries the journal named.
	ReusedDirs, PartialDirs int
	StartTime               time.Time
	// Skipped: a precopy that had nothing to gain (no previous image, not PrecopyFirst).
	Skipped bool
	// Unsupported is what the image lacks (nil: nothing, or a precopy).
	Unsupported *Unsupported
}

// unsupportedTag is the image tag holding the JSON Unsupported summary of an image pushed
// with OnUnsupported "skip": the replica built from it is incomplete.
const unsupportedTag = "unsupported"

// extrasOrphanAge is how old extras no image names must be before a prune deletes them: a
// push saves its extras just before its image.
const extrasOrphanAge = time.Hour

// imagePin marks our images: kopia's own retention (run at every checkpoint)
// never deletes pinned snapshots; PruneImages owns image retention.
const imagePin = "replctl"

// sourceInfo is the snapshot source identity shared by all images of a job.
func sourceInfo(job, dataset string) snapshot.SourceInfo {
	return snapshot.SourceInfo{Host: "replctl", UserName: job, Path: "/" + dataset}
}

// precopySourceInfo is where a precopy's checkpoints go: apart from the job's images, so
// no image listing, retention or incremental push ever sees the live (inconsistent) tree.
func precopySourceInfo(job, dataset string) snapshot.SourceInfo {
	return snapshot.SourceInfo{Host: "replctl-precopy", UserName: job, Path: "/" + dataset}
}

func checkJob(job string) error {
	if job == "" {
		return badInput("Job", "must not be empty")
	}

	if strings.ContainsAny(job, "@:/\x00\n") {
		return badInput("Job", "%q must not contain '@', ':', '/', NUL or newline", job)
	}

	return nil
}

// pushReaders is a push's default number of file readers: four per CPU, at most 32. Each
// reader reads, hashes, encrypts and packs its file in one goroutine, so with one reader
// per CPU a CPU idles while its reader waits for a cold disk. Measured on 2 CPUs
// (TestMeasureParallel, alternated, cold, design.md "Issue 16"): 8 readers against 2 took
// a full push of A from 5.2 s to 3.7 s and of B from 21.7 s to 19.9 s; 16 were no better
// than 8. The cap bounds the buffers of readers of large files on large machines.
func pushReaders() int { return min(4*runtime.NumCPU(), 32) }

// pushPolicy is the snapshot policy of every push: exact copies, no ignore
// files, no compression (fastest here), errors fail the push. A precopy reads a
// live tree, where files vanish under it: its read errors are skipped.
func pushPolicy(parallel int, precopy bool) *policy.Policy {
	p := *policy.DefaultPolicy
	p.FilesPolicy = policy.FilesPolicy{}
	p.CompressionPolicy = policy.CompressionPolicy{CompressorName: "none"}
	p.MetadataCompressionPolicy = policy.MetadataCompressionPolicy{CompressorName: "none"}
	f := policy.OptionalBool(precopy)
	p.ErrorHandlingPolicy.IgnoreFileErrors = &f
	p.ErrorHandlingPolicy.IgnoreDirectoryErrors = &f
	par := policy.OptionalInt(parallel)
	p.UploadPolicy.MaxParallelFileReads = &par
	none := policy.LogDetailNone
	p.LoggingPolicy = policy.LoggingPolicy{
		Directories: policy.DirLoggingPolicy{Snapshotted: &none, Ignored: &none},
		Entries:     policy.EntryLoggingPolicy{Snapshotted: &none, Ignored: &none, CacheHit: &none, CacheMiss: &none},
	}

	return &p
}

// Push takes an image of req.SourceDir into the job's repository, creating
// the repository if it does not exist.
func (r *Repos) Push(ctx context.Context, req PushRequest, progress func(Progress)) (PushResult, error) {
	if err := validatePush(&req); err != nil {
		return PushResult{}, err
	}
	defer raiseProcs()()

	rep, err := r.open(ctx, req.Repo, true)
	if err != nil {
		return PushResult{}, err
	}

	rp := newReporter(progress)
	defer rp.final()

	rp.setPhase("scan", 0, 0)

	si := sourceInfo(req.Job, req.Dataset)

	wctx, w, err := rep.NewWriter(ctx, repo.WriteSessionOptions{Purpose: "replctl push " + req.Job})
	if err != nil {
		return PushResult{}, fmt.Errorf("opening repository writer for %s: %w", req.Repo.Dir, err)
	}
	defer w.Close(context.WithoutCancel(ctx)) //nolint:errcheck

	prev, err := snapshot.FindPreviousManifests(wctx, w, si, nil)
	if err != nil {
		return PushResult{}, fmt.Errorf("finding previous images of job %s: %w", req.Job, err)
	}

	// Progress totals come from the newest previous image: kopia's estimator
	// (a second walk of the whole source) cost ~9% of a push's CPU.
	var estBytes, estFiles, entries int64
	var newest time.Time
	lastRead := int64(-1) // what the newest image's push read (-1: not known)

	for _, m := range prev {
		if m.RootEntry == nil || m.RootEntry.DirSummary == nil || !m.StartTime.ToTime().After(newest) {
			continue
		}

		s := m.RootEntry.DirSummary
		newest, estBytes, estFiles = m.StartTime.ToTime(), s.TotalFileSize, s.TotalFileCount
		entries = s.TotalFileCount + s.TotalDirCount + s.TotalSymlinkCount
		lastRead = -1
		if v, err := strconv.ParseInt(m.Tags[readTag], 10, 64); err == nil && v >= 0 {
			lastRead = v
		}
	}

	keepView := false
	if req.Precopy {
		switch {
		case req.PrecopyFirst:
		case len(prev) == 0 && !localTimes(-1, req.SourceDir):
			// The quiesced push could not trust its view (precopy_view.go), so it would read
			// everything again.
			r.log("precopy skipped: no previous image, and the source's times are not this host's", "job", req.Job, "dataset", req.Dataset)
			return PushResult{Skipped: true}, nil
		case len(prev) == 0:
			// The first copy: the quiesced push takes what this one stores from its view.
		case estFiles < PrecopyMinFiles && estBytes < PrecopyMinBytes:
			// A push of so small a tree is as quick as the precopy's own bookkeeping.
			r.log("precopy skipped: small dataset", "job", req.Job, "dataset", req.Dataset, "files", estFiles, "bytes", estBytes)
			return PushResult{Skipped: true}, nil
		case lastRead >= 0 && lastRead < PrecopyReadPerEntry*entries:
			// It would save less reading than its own walk costs.
			r.log("precopy skipped: the last push read little", "job", req.Job, "dataset", req.Dataset, "read", lastRead, "entries", entries)
			return PushResult{Skipped: true}, nil
		}

		// The precopy is incremental against the job's images and against a lost
		// precopy's checkpoints (a taker does not read again what it stored).
		pre, err := snapshot.FindPreviousManifests(wctx, w, precopySourceInfo(req.Job, req.Dataset), nil)
		if err != nil {
			return PushResult{}, fmt.Errorf("finding precopy checkpoints of job %s: %w", req.Job, err)
		}

		// Only a first copy keeps a view: an image serves the quiesced push otherwise.
		keepView = len(prev) == 0
		prev = append(prev, pre...)
		si = precopySourceInfo(req.Job, req.Dataset)
	}

	rp.setPhase("upload", estBytes, estFiles)

	plan := r.planReuse(wctx, w, req, prev)
	// The precopy's views serve a first copy only, and only a first copy's precopy keeps
	// one. Beside an image, kopia would read every directory object of both to spare the
	// reading of files changed since the image, which the precopy left in the page cache
	// (B's first 1 % freeze after a full copy: 2.96 s against 1.75 s; bench at f08adb2,
	// design.md).
	var views []*snapshot.Manifest
	if !req.Precopy && len(prev) == 0 {
		if views, err = precopyViews(wctx, w, req); err != nil {
			return PushResult{}, err
		}
	}
	start := time.Now()
	var up *uploaded
	for {
		up, err = r.upload(ctx, wctx, w, req, si, append(slices.Clip(prev), views...), rp, plan, keepView)
		if err == nil && up.precopyFound != nil {
			return PushResult{Unsupported: up.precopyFound}, nil
		}
		if n, part, _ := plan.used(); err != nil || n+part == 0 || !up.partialLinks {
			break
		}
		// A file it listed has a link it did not list: in a reused directory or outside
		// the tree, it cannot tell which.
		r.log("push lists the whole tree: a file has more links than it listed", "job", req.Job, "dataset", req.Dataset)
		plan = nil
	}
	if err != nil {
		return PushResult{}, err
	}
	man, unsupported, extras := up.man, up.unsupported, up.extras
	n, part, files := plan.used()
	if n > 0 || part > 0 {
		r.log("push took unchanged directories from the previous image", "job", req.Job, "dataset", req.Dataset, "image", req.Changed.Image,
			"changed", len(req.Changed.Dirs), "new_trees", len(req.Changed.Trees), "reused", n, "listed_in_part", part)
	}

	man.Tags = req.Tags

	if req.Precopy && ctx.Err() == nil {
		return r.finishPrecopy(wctx, w, req, up, start)
	}

	if man.IncompleteReason != "" || ctx.Err() != nil {
		// Keep what was uploaded as an incomplete image so a rerun reuses it.
		sctx := context.WithoutCancel(wctx)
		if man.IncompleteReason == "" {
			man.IncompleteReason = upload.IncompleteReasonCanceled
		}

		if _, serr := snapshot.SaveSnapshot(sctx, w, man); serr == nil {
			_ = w.Flush(sctx)
		}

		if ctx.Err() != nil {
			return PushResult{}, fmt.Errorf("push of %s stopped: %w", req.SourceDir, context.Cause(ctx))
		}

		return PushResult{}, fmt.Errorf("push of %s incomplete: %s", req.SourceDir, man.IncompleteReason)
	}

	if man.Stats.ErrorCount > 0 {
		return PushResult{}, fmt.Errorf("push of %s: %d entries could not be read%s", req.SourceDir, man.Stats.ErrorCount, firstFailed(man))
	}

	man.Pins = []string{imagePin}
	// What the run read: the precopy's reads count, or the next run would take this one's
	// change for a small one and skip its precopy.
	setTag(man, readTag, strconv.FormatInt(up.hashed+viewRead(views), 10))

	if !extras.Empty() {
		xid, err := saveExtras(wctx, w, req.Job, req.Dataset, extras)
		if err != nil {
			return PushResult{}, err
		}
		setTag(man, extrasTag, string(xid))
		xa, sp, ln := extras.Count()
		r.log("image keeps extras", "job", req.Job, "dataset", req.Dataset, "with_xattrs", xa, "special", sp, "hard_linked", ln)
	}

	if unsupported != nil {
		b, err := json.Marshal(unsupported)
		if err != nil {
			return PushResult{}, err
		}
		setTag(man, unsupportedTag, string(b))
		r.log("image lacks unsupported entries", "job", req.Job, "dataset", req.Dataset, "summary", unsupported.String())
	}

	id, err := snapshot.SaveSnapshot(wctx, w, man)
	if err != nil {
		return PushResult{}, fmt.Errorf("saving image of %s: %w", req.SourceDir, err)
	}
	// The image holds what the views held that it needs; a view left would keep the rest.
	if err := deleteManifests(wctx, w, manifestIDs(views), "precopy view"); err != nil {
		return PushResult{}, err
	}

	if err := w.Flush(wctx); err != nil {
		return PushResult{}, fmt.Errorf("flushing repository %s: %w", req.Repo.Dir, err)
	}

	res := manifestResult(man)
	res.ImageID, res.RootID = string(id), man.RootObjectID().String()
	res.Unsupported = unsupported
	res.ReusedDirs, res.PartialDirs = n, part
	res.Reused += files

	r.log("pushed image", "job", req.Job, "image", res.ImageID, "files", res.Files, "bytes", res.Bytes,
		"reused", res.Reused, "took", time.Since(start).Round(time.Millisecond))

	return res, nil
}

// planReuse is the reuse plan of a push the change journal guides (nil: list everything).
func (r *Repos) planReuse(ctx context.Context, rep repo.Repository, req PushRequest, prev []*snapshot.Manifest) *reusePlan {
	if req.Changed == nil || req.Precopy {
		return nil
	}
	var img *snapshot.Manifest
	for _, m := range prev {
		if string(m.ID) == req.Changed.Image {
			img = m
		}
	}
	plan, why := newReusePlan(ctx, rep, img, req.Changed)
	if plan == nil {
		r.log("push lists the whole tree", "job", req.Job, "dataset", req.Dataset, "reason", why)
		return nil
	}
	plan.root = img.RootEntry
	return plan
}

// finishPrecopy makes what a precopy stored durable and drops its checkpoints and older
// views: it leaves content in the repository and, where it listed racy files as such, its
// tree as a view (precopy_view.go), never an image.
func (r *Repos) finishPrecopy(ctx context.Context, w repo.RepositoryWriter, req PushRequest, up *uploaded, start time.Time) (PushResult, error) {
	man := up.man
	if err := w.Flush(ctx); err != nil {
		return PushResult{}, fmt.Errorf("flushing repository %s after precopy: %w", req.Repo.Dir, err)
	}

	pre := precopySourceInfo(req.Job, req.Dataset)

	cps, err := snapshot.ListSnapshotManifests(ctx, w, &pre, nil)
	if err != nil {
		return PushResult{}, fmt.Errorf("listing precopy checkpoints of job %s: %w", req.Job, err)
	}
	if err := deleteManifests(ctx, w, cps, "precopy checkpoint"); err != nil {
		return PushResult{}, err
	}

	if up.view {
		setTag(man, viewTag, strconv.FormatInt(up.hashed, 10))
		if _, err := snapshot.SaveSnapshot(ctx, w, man); err != nil {
			return PushResult{}, fmt.Errorf("saving the precopy's view of job %s: %w", req.Job, err)
		}
	}

	if len(cps) > 0 || up.view {
		if err := w.Flush(ctx); err != nil {
			return PushResult{}, fmt.Errorf("flushing repository %s after precopy: %w", req.Repo.Dir, err)
		}
	}

	res := manifestResult(man)

	r.log("precopy done", "job", req.Job, "dataset", req.Dataset, "files", res.Files, "bytes", res.Bytes,
		"reused", res.Reused, "read", man.Stats.NonCachedFiles, "skipped_errors", man.Stats.ErrorCount, "took", time.Since(start).Round(time.Millisecond))

	return res, nil
}

// manifestResult is what an upload's manifest tells of a push or precopy. man.Stats counts
// only the files this upload read; the root's summary covers all.
func manifestResult(man *snapshot.Manifest) PushResult {
	res := PushResult{Reused: int64(man.Stats.CachedFiles), StartTime: man.StartTime.ToTime()}
	res.Files, res.Bytes = treeTotals(man.RootEntry)

	return res
}

// treeTotals is the number of files and bytes under an image directory (0, 0 without a
// summary).
func treeTotals(e *snapshot.DirEntry) (files, bytes int64) {
	if e == nil || e.DirSummary == nil {
		return 0, 0
	}

	return e.DirSummary.TotalFileCount, e.DirSummary.TotalFileSize
}

func validatePush(req *PushRequest) error {
	if err := req.Repo.validate(); err != nil {
		return err
	}

	if err := checkJob(req.Job); err != nil {
		return err
	}

	if err := checkDataset("Dataset", req.Dataset); err != nil {
		return err
	}

	if err := checkAbs("SourceDir", req.SourceDir); err != nil {
		return err
	}

	st, err := os.Lstat(req.SourceDir)
	if err != nil {
		return badInput("SourceDir", "%v", err)
	}

	if st.Mode()&os.ModeSymlink != 0 {
		return badInput("SourceDir", "%s is a symlink; the source dir itself must not be a symlink (pass the real path)", req.SourceDir)
	}

	if !st.IsDir() {
		return badInput("SourceDir", "%s is not a directory", req.SourceDir)
	}

	for k := range req.Tags {
		switch k {
		case "type", "hostname", "username", "path", unsupportedTag, extrasTag, "":
			return badInput("Tags", "key %q is reserved", k)
		}
	}

	switch {
	case req.CheckpointInterval == 0:
		req.CheckpointInterval = 5 * time.Second
	case req.CheckpointInterval < 0 || req.CheckpointInterval > upload.DefaultCheckpointInterval:
		return badInput("CheckpointInterval", "%v must be in (0, %v]", req.CheckpointInterval, upload.DefaultCheckpointInterval)
	}

	if req.Parallel <= 0 {
		req.Parallel = pushReaders()
	}

	if req.Changed != nil {
		if err := req.Changed.validate(); err != nil {
			return err
		}
	}

	switch req.OnUnsupported {
	case "":
		req.OnUnsupported = OnUnsupportedFail
	case OnUnsupportedFail, OnUnsupportedSkip:
	default:
		return badInput("OnUnsupported", "%q is not valid: want %q or %q", req.OnUnsupported, OnUnsupportedFail, OnUnsupportedSkip)
	}

	return nil
}

// setTag sets an image tag on a copy of the tags (the request's map is not changed).
func setTag(man *snapshot.Manifest, k, v string) {
	man.Tags = maps.Clone(man.Tags)
	if man.Tags == nil {
		man.Tags = map[string]string{}
	}
	man.Tags[k] = v
}

// firstFailed is ": <path>: <error>" of the first entry the upload could not read ("" if the
// manifest does not say).
func firstFailed(man *snapshot.Manifest) string {
	if man.RootEntry == nil || man.RootEntry.DirSummary == nil || len(man.RootEntry.DirSummary.FailedEntries) == 0 {
		return ""
	}
	f := man.RootEntry.DirSummary.FailedEntries[0]
	return fmt.Sprintf(" (first: %s: %s)", ShowPath(f.EntryPath), strings.ToValidUTF8(f.Error, "\uFFFD"))
}
