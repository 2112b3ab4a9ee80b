package activities

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"golang.org/x/sys/unix"

	"github.com/replctl/replctl/activities/dataplane"
	"github.com/replctl/replctl/config"
	"github.com/replctl/replctl/internal/storagecheck"
)

// PreflightName checks the source storage and datasets on disk before quiesce: stable,
// because recorded histories refer to it.
const PreflightName = "Preflight"

// PreflightInput is the input of Preflight: the run's source datasets as the source agent
// sees them.
type PreflightInput struct {
	Job   string
	RunID string
	Agent string
	// Storage is the source storage; Datasets are its datasets in the job's order and
	// SourceDirs each of them as Agent sees it.
	Storage    string
	Datasets   []string
	SourceDirs []string
}

// PreflightResult is what Preflight checked.
type PreflightResult struct {
	Agent string
	// Roots are the storage roots of the agent's host, "storage at path".
	Roots []string
	// SourceDirs are the source datasets found to be directories beneath their root.
	SourceDirs []string
}

// Preflight checks on disk, before a run quiesces the application, what the push will read:
// the storage this agent's host attaches (storagecheck: real directories, no two of them one
// directory or nested) and each source dataset, which must be an existing directory reached
// beneath the source storage root without a symlink. A problem fails the run as bad input
// (ErrTypeBadInput) naming the paths: another agent would not do better, a person must fix it.
func (a *Agent) Preflight(ctx context.Context, in PreflightInput) (PreflightResult, error) {
	ctx, l, err := a.begin(ctx, in.Agent, Progress{Step: StepPreflight, Phase: "check"})
	if err != nil {
		return PreflightResult{}, err
	}
	defer l.stop()
	res, scan, err := a.preflightCheck(ctx, in)
	if err != nil || scan == nil {
		return res, err
	}
	return res, scan(ctx)
}

// preflightCheck does the preflight's checks of the storage and the datasets, and returns
// its scan for entries an image cannot hold (nil when the job skips them), which walks the
// live source and so may run beside a precopy.
func (a *Agent) preflightCheck(ctx context.Context, in PreflightInput) (PreflightResult, func(context.Context) error, error) {
	// From here on the host's mounts, the root and the dataset dirs are this agent's own.
	own, err := a.authorizePreflight(ctx, in)
	if err != nil {
		return PreflightResult{}, nil, err
	}
	host, root, dirs := own.host, own.root, own.dirs
	res := PreflightResult{Agent: a.Host}
	roots := make([]storagecheck.Root, len(host.Mounts))
	for i, m := range host.Mounts {
		roots[i] = storagecheck.Root{Host: host.Name, Storage: m.Storage, Path: m.Path}
		res.Roots = append(res.Roots, m.Storage+" at "+m.Path)
	}
	if err := storagecheck.Check(roots); err != nil {
		return res, nil, badInput(fmt.Errorf("job %s: storage check on agent %s before quiesce (nothing was run): %w", in.Job, a.Host, err))
	}
	var errs []error
	for i, ds := range in.Datasets {
		if err := checkSourceDataset(root, ds, dirs[i]); err != nil {
			errs = append(errs, err)
			continue
		}
		res.SourceDirs = append(res.SourceDirs, dirs[i])
	}
	if err := errors.Join(errs...); err != nil {
		return res, nil, badInput(fmt.Errorf("job %s: source check on agent %s before quiesce (nothing was run): %w", in.Job, a.Host, err))
	}
	if own.onUnsupported == config.OnUnsupportedSkip {
		return res, nil, nil
	}
	return res, func(ctx context.Context) error { return a.preflightUnsupported(ctx, in.Job, in.Datasets, dirs) }, nil
}

// precopyWithPreflight is a precopy that first does the run's preflight (one step less before
// quiesce): the checks, then the look for unsupported entries. For a job of one dataset the
// copy's own listing is looked at (one walk of the live source, not two); otherwise, and
// when the precopy is skipped, the preflight's bounded scan runs (beside the copy). The
// preflight's failure is the step's (bad input, unsupported entries) and stops the copy.
func (a *Agent) precopyWithPreflight(ctx context.Context, in PrecopyInput) (PrecopyResult, error) {
	pf := *in.Preflight
	if pf.Job != in.Job || pf.RunID != in.RunID || pf.Agent != in.Agent {
		return PrecopyResult{}, badInput(fmt.Errorf("precopy of job %s (run %s, agent %s) carries the preflight of job %q (run %q, agent %q): refused", in.Job, in.RunID, in.Agent, pf.Job, pf.RunID, pf.Agent))
	}
	ctx, hb, err := a.begin(ctx, in.Agent, Progress{Step: StepPrecopy, Phase: "check"})
	if err != nil {
		return PrecopyResult{}, err
	}
	defer hb.stop()
	checked, scan, err := a.preflightCheck(ctx, pf)
	if err != nil {
		return PrecopyResult{Agent: a.Host}, err
	}
	if scan != nil && len(pf.Datasets) == 1 && pf.Datasets[0] == in.Dataset {
		res, copyErr, err := a.precopyLooking(ctx, hb, in, scan)
		if err == nil {
			err = copyErr
		}
		if err != nil {
			return PrecopyResult{Agent: a.Host}, err
		}
		r := precopyResult(res)
		r.Preflight = &checked
		return r, nil
	}
	cctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	scanned := make(chan error, 1)
	if scan == nil { // the job skips unsupported entries
		scanned <- nil
	} else {
		go func() {
			err := scan(cctx)
			if err != nil {
				stop(err)
			}
			scanned <- err
		}()
	}
	res, err := a.pushLeased(cctx, hb, precopyPush(in), StepPrecopy, pushHow{precopyFirst: in.First})
	// The scan is bounded: its finding, if any, names what is wrong better than the copy's
	// failure, which may just have been its consequence.
	if serr := <-scanned; serr != nil {
		return PrecopyResult{Agent: a.Host}, serr
	}
	r := precopyResult(res)
	r.Preflight = &checked
	return r, err
}

// precopyLooking is a precopy under the caller's lease whose listing is also the preflight's
// look for unsupported entries; scan is that look on its own, run when the copy is skipped
// (nil when the job skips such entries). copyErr is the copy's own failure, err what the
// look found.
func (a *Agent) precopyLooking(ctx context.Context, hb *lease, in PrecopyInput, scan func(context.Context) error) (res pushResult, copyErr, err error) {
	res, copyErr = a.pushLeased(ctx, hb, precopyPush(in), StepPrecopy, pushHow{precopyFirst: in.First, scanUnsupported: scan != nil})
	switch {
	case copyErr != nil:
	case res.skipped && scan != nil:
		err = scan(ctx)
	case !res.Unsupported.Empty():
		err = unsupportedBeforeQuiesce(in.Job, a.Host, *res.Unsupported)
	}
	return res, copyErr, err
}

// preflightScanTime bounds the scan of the live source datasets for entries an image cannot
// hold (measured on a 2-core VM: about 1-2.5 s per 200,000 files, warm). What the bounded
// scan does not reach, the push finds while quiesced.
const preflightScanTime = 10 * time.Second

// preflightUnsupported fails the run before quiesce when the source holds entries the data
// plane cannot replicate (the job's on_unsupported is fail): the push would refuse them
// while the application is frozen. A scan cut short by its bound that found nothing lets the
// run go on.
func (a *Agent) preflightUnsupported(ctx context.Context, job string, datasets, dirs []string) error {
	var sum dataplane.Unsupported
	deadline := time.Now().Add(preflightScanTime)
	for i, dir := range dirs {
		left := time.Until(deadline)
		if left <= 0 {
			sum.Partial = true
			break
		}
		u, err := a.scanUnsupported(ctx, dir, dataplane.ScanOptions{Name: datasets[i], MaxTime: left})
		if err != nil {
			// The push reads the same tree and reports what it cannot read.
			if activity.IsActivity(ctx) {
				activity.GetLogger(ctx).Warn("preflight scan for unsupported entries failed; the push checks again", "job", job, "dir", dir, "error", err)
			}
			return nil
		}
		sum.Merge(u)
	}
	if sum.Empty() {
		return nil
	}
	observeUnsupported(ctx, job, &sum)
	return unsupportedBeforeQuiesce(job, a.Host, sum)
}

// unsupportedBeforeQuiesce is the preflight's refusal of a source holding entries the data
// plane cannot replicate.
func unsupportedBeforeQuiesce(job, host string, sum dataplane.Unsupported) error {
	ue := &dataplane.UnsupportedError{Job: job, Summary: sum}
	msg := fmt.Sprintf("job %s: source check on agent %s before quiesce (nothing was run): %s", job, host, strings.TrimPrefix(ue.Error(), "push: "))
	if sum.Partial {
		msg += fmt.Sprintf(" (the check stopped after %v: there may be more)", preflightScanTime)
	}
	return temporal.NewNonRetryableApplicationError(msg, ErrTypeUnsupported, nil, sum)
}

// checkSourceDataset refuses a source dataset dir (ds beneath root) that is missing, is not
// a directory, or has a symlink anywhere on its way beneath root.
func checkSourceDataset(root, ds, dir string) error {
	fd, err := dataplane.OpenDirBeneath(root, path.Clean(ds), false)
	switch {
	case err == nil:
		_ = unix.Close(fd)
		return nil
	case errors.Is(err, dataplane.ErrUnsafePath):
		return fmt.Errorf("source dataset %s at %s: %w", ds, dir, err)
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("source dataset %s at %s does not exist (storage root %s)", ds, dir, root)
	}
	return fmt.Errorf("source dataset %s at %s: %w", ds, dir, err)
}

// authorizePreflight checks a preflight against the agent's own config and returns its own
// host, source storage root, source dataset dirs and on_unsupported policy.
// preflightOwn is what a preflight uses of the agent's own config.
type preflightOwn struct {
	host          HostPlan
	root          string
	dirs          []string
	onUnsupported string
}

func (a *Agent) authorizePreflight(ctx context.Context, in PreflightInput) (preflightOwn, error) {
	g, err := a.authorize(ctx, PreflightName, in.Job)
	if err != nil {
		return preflightOwn{}, err
	}
	p := g.plan
	if err := g.inOrder(RoleSource, p.Order.Source); err != nil {
		return preflightOwn{}, err
	}
	if err := g.same("Storage", in.Storage, p.Source.Storage); err != nil {
		return preflightOwn{}, err
	}
	if err := g.same("Datasets", in.Datasets, p.Source.List()); err != nil {
		return preflightOwn{}, err
	}
	own := make([]string, len(in.Datasets))
	for i, ds := range in.Datasets {
		if own[i], err = p.DatasetDir(a.Host, p.Source.Storage, ds); err != nil {
			return preflightOwn{}, g.refuse("SourceDirs", in.SourceDirs, "", fmt.Sprintf("cannot be resolved from its own config: %v", err))
		}
	}
	if err := g.same("SourceDirs", in.SourceDirs, own); err != nil {
		return preflightOwn{}, err
	}
	host, err := p.Host(a.Host)
	if err != nil {
		return preflightOwn{}, g.refuse("Agent", a.Host, nil, err.Error())
	}
	root, err := host.Mount(p.Source.Storage)
	if err != nil {
		return preflightOwn{}, g.refuse("Storage", in.Storage, nil, err.Error())
	}
	return preflightOwn{host: host, root: root, dirs: own, onUnsupported: p.OnUnsupported}, nil
}
