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

	"golang.org/x/sys/unix"
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
	// Keep is what is kept of each dataset's replicas (Keep.Last default 3, counting the
	// current).
	Keep Retention
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

	if req.Keep.Last == 0 {
		req.Keep.Last = 3
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

		return publishGroupLocked(ls, req.Job, req.ReplicaName)
	}

	if err := locked(0); err != nil {
		return res, err
	}

	for _, l := range ls {
		res.Links = append(res.Links, l.link)
		l.retain(req.Keep, req.Epoch, func(string, ...any) {})
	}

	pruneGroupDirs(req.Job, ls[0])

	return res, nil
}

// publishGroupLocked does the group's publish under every fence lock. T, the
// group dir and each T/D's parent are resolved again here, beneath T without
// following symlinks, and every link and rename is made relative to their fds.
func publishGroupLocked(ls []layout, job, name string) error {
	root, err := openRoot(ls[0].root)
	if err != nil {
		return err
	}
	defer unix.Close(root) //nolint:errcheck

	parents := make([]int, len(ls))
	for i := range parents {
		parents[i] = -1
	}

	defer func() {
		for _, fd := range parents {
			closeFd(fd)
		}
	}()

	for i, l := range ls {
		if parents[i], err = l.linkParent(root, true); err != nil {
			return err
		}

		// Never clobber user data at T/D.
		if _, err := l.currentReplicaAt(parents[i]); err != nil {
			return err
		}
	}

	gd := groupDir(ls[0].root, job)

	gfd, err := ctlDir(root, ls[0].root, true, dirMode, "groups", escapeDataset(job))
	if err != nil {
		return err
	}
	defer unix.Close(gfd) //nolint:errcheck

	if target, err := readlinkAt(gfd, "current"); err == nil && target == name {
		return nil // published by an earlier attempt whose result was lost
	}

	// The group's replica dir: one link per dataset. Built aside and renamed into place,
	// so a half-built one is never the target of current.
	dir := filepath.Join(gd, name)
	tmp := ".tmp-" + name + "-" + randHex(4)

	tfd, err := dirAt(gfd, gd, tmp, true, true, dirMode)
	if err != nil {
		return err
	}

	for _, l := range ls {
		rel, err := filepath.Rel(dir, l.replicaDir(name))
		if err == nil {
			err = unix.Symlinkat(rel, tfd, l.esc)
		}

		if err != nil {
			closeFd(tfd)
			return fmt.Errorf("linking %s into the group: %w", l.dataset, err)
		}
	}

	closeFd(tfd)

	if err := removeAllAt(gfd, name); err != nil { // a leftover of an earlier attempt, never current
		return fmt.Errorf("removing %s: %w", dir, err)
	}

	if err := unix.Renameat(gfd, tmp, gfd, name); err != nil {
		return fmt.Errorf("renaming %s: %w", filepath.Join(gd, tmp), err)
	}

	// Fixed dataset links into the group. Before the first swap they dangle (none
	// visible); afterwards they show the old group replica until the swap.
	for i, l := range ls {
		if err := l.linkIntoGroup(parents[i], gd); err != nil {
			return err
		}
	}

	if err := fsyncDirFd(gfd, gd); err != nil {
		return err
	}

	return replaceLinkAt(gfd, gd, "current", name, ".current-", "publishing group")
}

// linkIntoGroup makes T/D (in its parent dir, open as parent) the link
// T/D → .replctl/groups/<job>/current/<D>.
func (l layout) linkIntoGroup(parent int, gd string) error {
	dir := filepath.Dir(l.link)

	target, err := filepath.Rel(dir, filepath.Join(gd, "current", l.esc))
	if err != nil {
		return err
	}

	if t, err := readlinkAt(parent, filepath.Base(l.link)); err == nil && t == target {
		return nil
	}

	return replaceLinkAt(parent, dir, filepath.Base(l.link), target, ".replctl-link-", "linking into its group")
}

// pruneGroupDirs removes group replica dirs whose replicas retention removed
// (never the current one).
func pruneGroupDirs(job string, first layout) {
	root, err := openRoot(first.root)
	if err != nil {
		return
	}
	defer unix.Close(root) //nolint:errcheck

	gfd, err := ctlDir(root, first.root, false, dirMode, "groups", escapeDataset(job))
	if err != nil {
		return
	}
	defer unix.Close(gfd) //nolint:errcheck

	rfd, err := ctlDir(root, first.root, false, dirMode, "replicas", first.esc)
	if err != nil {
		return
	}
	defer unix.Close(rfd) //nolint:errcheck

	cur, _ := readlinkAt(gfd, "current")

	names, err := dirNames(gfd)
	if err != nil {
		return
	}

	for _, n := range names {
		if n == "current" || n == cur || strings.HasPrefix(n, ".") {
			continue
		}

		if !existsAt(rfd, n) {
			_ = removeAllAt(gfd, n)
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
