package activities

// What an activity's error says about the world, for the takeover protocol
// (workflows/takeover.go):
//
//   - bad input (the request is wrong) and a fence refusal (a newer attempt owns the target):
//     final, another agent would be refused the same way;
//   - a storage fault (ENOSPC, EDQUOT, EROFS, EIO from the target, the source or the
//     repository): the storage refuses whoever asks, so the step is not taken over and no
//     takeover script runs; the error names the storage, and the workflow fails the step or
//     waits within the job's timeouts.storage_retry;
//   - a failed verification: final, with the staging dir kept for inspection;
//   - entries the data plane cannot replicate (on_unsupported: fail): final, every agent
//     would find them;
//   - a lost lease (frozen or cut-off agent): the agent's own fault, reported as such;
//   - anything else: retryable on the same agent, then taken over, with the last progress
//     attached so the taker resumes.
// An agent that dies never returns an error at all: the workflow sees a heartbeat or
// schedule-to-start timeout and takes over.

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.temporal.io/sdk/temporal"

	"github.com/replctl/replctl/activities/dataplane"
)

// fault classifies a step's error for the workflow, naming the storage of a storage fault
// as this agent's own config knows it.
func (a *Agent) fault(ctx context.Context, job string, step Step, err error, last Progress) error {
	expireIfDue(ctx)
	err = validUTF8(err)
	if errno, ok := dataplane.StorageFault(err); ok && leaseCause(ctx) == nil && ctx.Err() == nil &&
		!errors.Is(err, dataplane.ErrBadInput) && !errors.Is(err, dataplane.ErrFenced) {
		return storageFault(step, job, a.Host, a.storagesOf(job), errno.Error(), err, last)
	}
	return classify(ctx, step, err, last)
}

// classify turns a data-plane error into what the workflow needs to decide: bad input, a
// fence refusal and a failed verification are final; anything else may be retried, and its
// last progress travels with it so a taker can resume.
func classify(ctx context.Context, step Step, err error, last Progress) error {
	expireIfDue(ctx)
	err = validUTF8(err)
	switch {
	case errors.Is(err, dataplane.ErrBadInput), errors.Is(err, dataplane.ErrNotFound):
		return badInput(err)
	case errors.Is(err, dataplane.ErrFenced):
		return temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeFenced, err)
	case errors.Is(err, dataplane.ErrUnsupported):
		// Every agent would find the same entries: final, with the summary as details.
		var ue *dataplane.UnsupportedError
		if errors.As(err, &ue) {
			return temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeUnsupported, err, ue.Summary)
		}
		return temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeUnsupported, err)
	case errors.Is(err, dataplane.ErrVerify):
		return temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeVerify, err, last)
	case leaseCause(ctx) != nil:
		return fmt.Errorf("%s stopped: %w", step, leaseCause(ctx))
	case ctx.Err() != nil:
		return ctx.Err()
	}
	return temporal.NewApplicationErrorWithCause(fmt.Sprintf("%s: %v", step, err), "StepFailed", err, last)
}

func badInput(err error) error {
	return temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeBadInput, err)
}

// storageAt is a storage as one agent sees it: for naming the storage of a fault.
type storageAt struct {
	// Use is "repository" or the storage's role in the job ("source", "target", or
	// "storage" when it has none).
	Use  string
	Name string
	Dir  string
}

func (s storageAt) String() string {
	if s.Use == "repository" {
		return fmt.Sprintf("storage %s (the job's repository at %s)", s.Name, s.Dir)
	}
	return fmt.Sprintf("storage %s (%s, at %s)", s.Name, s.Use, s.Dir)
}

// storagesOf lists the storages this agent's own config gives it for job: the repository
// first (it lies inside a storage, and the longer path must win), then every attached one.
func (a *Agent) storagesOf(job string) []storageAt {
	cfg, err := a.loadConfig()
	if err != nil {
		return nil
	}
	p, err := NewPlan(cfg, job)
	if err != nil {
		return nil
	}
	var out []storageAt
	if r, err := p.Repo(a.Host); err == nil {
		out = append(out, storageAt{Use: "repository", Name: p.Repository.Storage, Dir: r.Dir})
	}
	h, err := p.Host(a.Host)
	if err != nil {
		return out
	}
	targets := map[string]bool{}
	for _, t := range p.AllTargets() {
		targets[t.Storage] = true
	}
	for _, m := range h.Mounts {
		name, use := m.Storage, "storage"
		switch {
		case name == p.Source.Storage:
			use = "source"
		case targets[name]:
			use = "target"
		}
		out = append(out, storageAt{Use: use, Name: name, Dir: m.Path})
	}
	return out
}

// storageFault is the non-retryable error of a step the storage refused. It names the
// storage whose path the error mentions (the deepest match), or every candidate.
func storageFault(step Step, job, agent string, storages []storageAt, what string, err error, last Progress) error {
	msg := err.Error()
	var hit []storageAt
	for _, s := range storages {
		if s.Dir != "" && (strings.Contains(msg, s.Dir+"/") || strings.HasSuffix(msg, s.Dir)) {
			hit = append(hit, s)
		}
	}
	sort.SliceStable(hit, func(i, j int) bool { return len(hit[i].Dir) > len(hit[j].Dir) })
	named := "its storage"
	switch {
	case len(hit) > 0:
		named = hit[0].String()
	case len(storages) > 0:
		var all []string
		for _, s := range storages {
			all = append(all, s.String())
		}
		named = "one of " + strings.Join(all, ", ")
	}
	out := fmt.Sprintf("%s: storage fault on %s: %s, seen by agent %s; every agent of this storage would meet it, so the step is not taken over: %v",
		step, named, what, agent, err)
	if len(hit) > 0 && hit[0].Use == "repository" && step.WritesRepository() {
		out += fmt.Sprintf("; the data this %s stored before the fault (it had read %d bytes) stays in the repository for the next push to reuse: "+
			"free space on storage %s and run again, or reclaim it with `replctl maintain %s --full`", step, last.BytesDone, hit[0].Name, job)
	}
	return temporal.NewNonRetryableApplicationError(out, ErrTypeStorageFault, err, last)
}

// validUTF8 keeps err (for errors.Is) but makes its message valid UTF-8: a failure whose
// message is not cannot be sent to the server (protobuf strings), so the step would end in
// a heartbeat timeout on every agent instead of failing with its reason. Paths that are not
// valid UTF-8 are shown quoted with their bytes escaped.
func validUTF8(err error) error {
	if err == nil || utf8.ValidString(err.Error()) {
		return err
	}
	return &utf8Error{msg: strconv.QuoteToGraphic(err.Error()), err: err}
}

type utf8Error struct {
	msg string
	err error
}

func (e *utf8Error) Error() string { return e.msg }

// Is answers errors.Is for the original error. There is no Unwrap: the SDK sends an error's
// chain to the server, and the original message is the one it cannot send.
func (e *utf8Error) Is(target error) bool { return errors.Is(e.err, target) }
