package dataplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/kopia/kopia/snapshot"
	"golang.org/x/sys/unix"
)

// publish moves the verified staging dir to its replica name and swaps the
// T/D symlink to it, under the fence lock and only if no newer epoch exists.
// The directories are resolved and checked again here, and the renames and
// the link are made relative to their fds: a directory swapped for a symlink
// while the pull ran is refused, not followed.
func (p *puller) publish(l layout, req PullRequest, man *snapshot.Manifest) error {
	p.rp.setPhase("publish", 0, 0)

	if err := p.g.check(false); err != nil {
		return err
	}

	// Restored data must be durable before any name points to it.
	if err := unix.Syncfs(p.stagingFd); err != nil {
		return fmt.Errorf("syncfs %s: %w", p.staging, err)
	}

	final := l.replicaDir(req.ReplicaName)
	fence := p.g.fence

	return fence.withLock(func() error {
		if err := publishAllowed(p.ctx, fence, req); err != nil {
			return err
		}

		pd, err := l.openDirs()
		if err != nil {
			return err
		}
		defer pd.close()

		// T/D may have changed since we started: never clobber user data, never
		// follow a parent that became a symlink.
		parent, err := l.linkParent(pd.root, !req.Defer)
		if err == nil {
			_, err = l.currentReplicaAt(parent)
			closeFd(parent)
		} else if req.Defer && errors.Is(err, fs.ErrNotExist) {
			err = nil
		}

		if err != nil {
			return err
		}

		// The meta record goes first: a replica dir that exists always has one, so a
		// retry after a crash between the two steps can finish the publish.
		rm := replicaMeta{
			Job: req.Job, Image: req.ImageID, Root: man.RootObjectID().String(),
			Epoch: req.Epoch, Agent: req.Agent, Verified: true, Published: time.Now().UTC(),
		}
		if p.replaced != nil {
			rm.Published, rm.Repaired, rm.Replaced = p.replaced.Published, rm.Published, req.Replaces
		}
		rm.Unsupported, rm.Incomplete = imageUnsupported(man)
		if !p.refused.Empty() {
			if rm.Unsupported == nil {
				rm.Unsupported = &Unsupported{}
			}
			rm.Unsupported.Merge(&p.refused)
			rm.Incomplete = true
		}
		meta, err := json.Marshal(rm)
		if err != nil {
			return err
		}

		// The trust record before the meta record: a replica with meta has both.
		if err := writeTrust(pd.meta, l.meta, req.ReplicaName, newTrustRecord(p.trustStamps())); err != nil {
			return err
		}

		if err := writeFileAt(pd.meta, l.meta, req.ReplicaName+".json", meta, 0o644); err != nil {
			return err
		}

		if err := renameDirAt(pd.staging, filepath.Base(p.staging), pd.replicas, req.ReplicaName, final, p.isRoot); err != nil {
			return err
		}

		// Renaming may touch the moved dir; restore the image's root times.
		if err := p.setDirAttrs(pd.replicas, l.replicas, req.ReplicaName, man.RootEntry); err != nil {
			return err
		}

		if err := fsyncDirFd(pd.staging, l.staging); err != nil {
			return err
		}

		if err := fsyncDirFd(pd.replicas, l.replicas); err != nil {
			return err
		}

		if !req.Defer {
			if err := l.swapLinkAt(pd.root, final); err != nil {
				return err
			}
		}

		if req.Replaces != "" {
			return l.retireReplaced(req.Replaces, p.log)
		}

		return nil
	})
}

// publishAllowed is checked under the fence lock right before publishing.
func publishAllowed(ctx context.Context, fence *Fence, req PullRequest) error {
	if err := fence.check(req.Epoch); err != nil {
		return err
	}

	if !req.WriteDeadline.IsZero() && time.Now().After(req.WriteDeadline) {
		return fmt.Errorf("%w: write deadline passed (%s) before publish", ErrFenced, req.WriteDeadline.Format(time.RFC3339Nano))
	}

	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pull stopped before publish: %w", context.Cause(ctx))
	}

	return nil
}

// swapLinkAt points T/D at replica dir final: a temp symlink renamed over T/D
// in T/D's parent, opened beneath the root fd without following symlinks (and
// created if missing). rename(2) is atomic: readers see the old or the new
// replica, never a mix or nothing. Refuses if T/D is not ours (user data is
// never clobbered).
func (l layout) swapLinkAt(root int, final string) error {
	parent, err := l.linkParent(root, true)
	if err != nil {
		return err
	}
	defer unix.Close(parent) //nolint:errcheck

	if _, err := l.currentReplicaAt(parent); err != nil {
		return err
	}

	dir := filepath.Dir(l.link)

	target, err := filepath.Rel(dir, final)
	if err != nil {
		return err
	}

	return replaceLinkAt(parent, dir, filepath.Base(l.link), target, ".replctl-link-", "publishing")
}

// renameDirAt renames a staging dir (from in fromDir) into place (to in toDir;
// toPath names it in errors). Moving a directory to another parent updates its
// ".." entry, which needs write permission on it: a non-root agent lends
// itself u+w for the rename if the image's mode lacks it.
func renameDirAt(fromDir int, from string, toDir int, to, toPath string, isRoot bool) error {
	if existsAt(toDir, to) {
		return fmt.Errorf("%w: replica %s already exists", ErrBadInput, toPath)
	}

	fd, err := openBeneath(fromDir, from, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return fmt.Errorf("opening %s to move it to %s: %w", from, toPath, err)
	}
	defer unix.Close(fd) //nolint:errcheck

	var restore uint32

	if !isRoot {
		var st unix.Stat_t
		if unix.Fstat(fd, &st) == nil && st.Mode&0o200 == 0 {
			restore = st.Mode & 0o7777
			_ = unix.Fchmod(fd, restore|0o200)
		}
	}

	err = unix.Renameat(fromDir, from, toDir, to)

	if restore != 0 {
		_ = unix.Fchmod(fd, restore) // the same inode, wherever it now is
	}

	if err != nil {
		return fmt.Errorf("renaming %s to %s: %w", from, toPath, err)
	}

	return nil
}

// existsAt reports whether name exists in dirFd (not following a symlink).
func existsAt(dirFd int, name string) bool {
	var st unix.Stat_t

	return unix.Fstatat(dirFd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil
}
