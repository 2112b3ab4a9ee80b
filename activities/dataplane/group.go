package dataplane

// Consistency groups: several datasets imaged at one point in time are published together,
// all or none. Each dataset's replica is built and verified by a deferred Pull
// (PullRequest.Defer); PublishGroup then makes them visible with ONE rename:
//
//	T/.replctl/groups/<job>/<replica>/<D>  → ../../../replicas/<D>/<replica>   (one per dataset)
//	T/.replctl/groups/<job>/current        → <replica>                          (swapped by rename(2))
//	T/<D>                                  → .replctl/groups/<job>/current/<D>  (fixed)
//
// A reader opening T/<D> resolves the group's current link at that moment, so every path
// it opens afterwards comes from one replica of one group. A reader that wants several
// datasets of the same instant resolves `current` once (readlink) and reads every dataset
// through T/.replctl/groups/<job>/<that replica>/<D>.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// GroupPublishRequest names the replicas (built with PullRequest.Defer) of every dataset of
// a consistency group to publish at once.
type GroupPublishRequest struct {
	TargetRoot  string
	Job         string
	ReplicaName string
	Datasets    []string
	// Epoch fences the publish: it advances every dataset's fence, and publishing is
	// refused if any dataset records a newer one.
	Epoch         int64
	Agent         string
	WriteDeadline time.Time
	// Keep is the number of replicas kept per dataset (default 3, including the current).
	Keep int
	// KeepWithin also keeps every replica younger than this, measured from the newest (0 = off).
	KeepWithin time.Duration
}

// GroupPublishResult says where the group's replicas are visible.
type GroupPublishResult struct {
	// Current is the group's current link, Dir the directory it now points to.
	Current, Dir string
	// Links are the dataset paths T/<D>, in the order of the request.
	Links []string
}

// groupDir is T/.replctl/groups/<job>.
func groupDir(root, job string) string {
	return filepath.Join(root, replctlDir, "groups", escapeDataset(job))
}

// groupReplica resolves T/D through the group's current link: the replica
// name, "" when the group was never published (the link dangles).
func (l layout) groupReplica() (string, error) {
	real, err := filepath.EvalSymlinks(l.link)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}

	if err != nil {
		return "", fmt.Errorf("resolving %s: %w", l.link, err)
	}

	replicas, err := filepath.EvalSymlinks(l.replicas)
	if err != nil || filepath.Dir(real) != replicas {
		return "", fmt.Errorf("%w: %s links to %s, which is not a replica of %s; move it away", ErrBadInput, l.link, real, l.dataset)
	}

	return filepath.Base(real), nil
}

// PublishGroup points every dataset of a group at its new replica with one
// rename of the group's current link. The replicas must have been built by
// deferred pulls with the same ReplicaName. Under the fence locks of every
// dataset (taken in dataset order) it checks the epoch, builds the group's
// replica directory, makes each T/D the fixed link into the group (a dataset
// published before the group existed is re-pointed once) and swaps current.
func PublishGroup(ctx context.Context, req GroupPublishRequest) (GroupPublishResult, error) {
	var res GroupPublishResult

	if err := checkAbs("TargetRoot", req.TargetRoot); err != nil {
		return res, err
	}

	if err := checkName("ReplicaName", req.ReplicaName); err != nil {
		return res, err
	}

	if len(req.Datasets) == 0 {
		return res, badInput("Datasets", "a group needs at least one dataset")
	}

	if req.Keep == 0 {
		req.Keep = 3
	}

	ls := make([]layout, len(req.Datasets))
	for i, d := range req.Datasets {
		if err := checkDataset("Datasets", d); err != nil {
			return res, err
		}

		ls[i] = newLayout(req.TargetRoot, d)

		m, err := readMeta(ls[i].metaFile(req.ReplicaName))
		if err != nil || !m.Verified {
			return res, fmt.Errorf("%w: dataset %s has no verified replica %s: pull every dataset of the group before publishing", ErrBadInput, d, req.ReplicaName)
		}

		if _, err := os.Lstat(ls[i].replicaDir(req.ReplicaName)); err != nil {
			return res, fmt.Errorf("%w: replica %s of dataset %s: %v", ErrBadInput, req.ReplicaName, d, err)
		}

		if err := ls[i].checkLinkParents(); err != nil {
			return res, err
		}
	}

	// Locks are taken in one order by every publisher, so two never deadlock.
	order := make([]int, len(ls))
	for i := range order {
		order[i] = i
	}

	sort.Slice(order, func(a, b int) bool { return ls[order[a]].dataset < ls[order[b]].dataset })

	fences := make([]*Fence, len(ls))
	for i, l := range ls {
		fences[i] = OpenFence(req.TargetRoot, l.dataset)
		if err := fences[i].Advance(req.Epoch, req.Agent); err != nil {
			return res, err
		}
	}

	// Restored data and meta records must be durable before any name points to them.
	if err := syncFS(ls[0].replicas); err != nil {
		return res, err
	}

	gd := groupDir(req.TargetRoot, req.Job)
	res.Current, res.Dir = filepath.Join(gd, "current"), filepath.Join(gd, req.ReplicaName)

	var locked func(k int) error
	locked = func(k int) error {
		if k < len(order) {
			return fences[order[k]].withLock(func() error { return locked(k + 1) })
		}

		for _, f := range fences {
			if err := publishAllowed(ctx, f, PullRequest{Epoch: req.Epoch, WriteDeadline: req.WriteDeadline}); err != nil {
				return err
			}
		}

		return publishGroupLocked(ls, gd, req.ReplicaName)
	}

	if err := locked(0); err != nil {
		return res, err
	}

	for _, l := range ls {
		res.Links = append(res.Links, l.link)
		l.retain(Retention{Last: req.Keep, Within: req.KeepWithin}, req.Epoch, func(string, ...any) {})
	}

	pruneGroupDirs(gd, ls[0])

	return res, nil
}

func publishGroupLocked(ls []layout, gd, name string) error {
	for _, l := range ls {
		// Never clobber user data at T/D.
		if _, err := l.currentReplica(); err != nil {
			return err
		}
	}

	if err := os.MkdirAll(gd, dirMode); err != nil {
		return fmt.Errorf("creating %s: %w", gd, err)
	}

	cur := filepath.Join(gd, "current")
	if target, err := os.Readlink(cur); err == nil && target == name {
		return nil // published by an earlier attempt whose result was lost
	}

	// The group's replica dir: one link per dataset. Built aside and renamed into place,
	// so a half-built one is never the target of current.
	dir := filepath.Join(gd, name)
	tmp := filepath.Join(gd, ".tmp-"+name+"-"+randHex(4))
	if err := os.Mkdir(tmp, dirMode); err != nil {
		return fmt.Errorf("creating %s: %w", tmp, err)
	}

	for _, l := range ls {
		rel, err := filepath.Rel(dir, l.replicaDir(name))
		if err != nil {
			return err
		}

		if err := os.Symlink(rel, filepath.Join(tmp, l.esc)); err != nil {
			return fmt.Errorf("linking %s into the group: %w", l.dataset, err)
		}
	}

	if err := os.RemoveAll(dir); err != nil { // a leftover of an earlier attempt, never current
		return fmt.Errorf("removing %s: %w", dir, err)
	}

	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("renaming %s: %w", tmp, err)
	}

	// Fixed dataset links into the group. Before the first swap they dangle (none
	// visible); afterwards they show the old group replica until the swap.
	for _, l := range ls {
		if err := l.linkIntoGroup(gd); err != nil {
			return err
		}
	}

	if err := syncDir(gd); err != nil {
		return err
	}

	return replaceLink(name, cur, ".current-", "publishing group")
}

// linkIntoGroup makes T/D the link T/D → .replctl/groups/<job>/current/<D>.
func (l layout) linkIntoGroup(gd string) error {
	parent := filepath.Dir(l.link)
	if err := os.MkdirAll(parent, dirMode); err != nil {
		return fmt.Errorf("creating %s: %w", parent, err)
	}

	target, err := filepath.Rel(parent, filepath.Join(gd, "current", l.esc))
	if err != nil {
		return err
	}

	if t, err := os.Readlink(l.link); err == nil && t == target {
		return nil
	}

	return replaceLink(target, l.link, ".replctl-link-", "linking into its group")
}

// pruneGroupDirs removes group replica dirs whose replicas retention removed
// (never the current one).
func pruneGroupDirs(gd string, first layout) {
	cur, _ := os.Readlink(filepath.Join(gd, "current"))

	ents, err := os.ReadDir(gd)
	if err != nil {
		return
	}

	for _, e := range ents {
		n := e.Name()
		if n == "current" || n == cur || strings.HasPrefix(n, ".") {
			continue
		}

		if _, err := os.Lstat(first.replicaDir(n)); errors.Is(err, fs.ErrNotExist) {
			_ = os.RemoveAll(filepath.Join(gd, n))
		}
	}
}

// ReplicaPaths returns where a dataset's replica name and its meta record live under
// targetRoot (for failback, which turns a replica into a plain directory).
func ReplicaPaths(targetRoot, dataset, name string) (dir, meta string, err error) {
	if err := checkAbs("TargetRoot", targetRoot); err != nil {
		return "", "", err
	}

	if err := checkDataset("Dataset", dataset); err != nil {
		return "", "", err
	}

	l := newLayout(targetRoot, dataset)

	return l.replicaDir(name), l.metaFile(name), nil
}
