package dataplane

import (
	"errors"
	"fmt"
	"os"
	"path"
	"sort"
	"sync"
	"time"

	"github.com/kopia/kopia/snapshot"
	"golang.org/x/sys/unix"
)

// Recycling the replica retention retires (issue 16). A pull that links unchanged files
// from the current replica pays a linkat per file in the new tree, and the trash sweep
// then pays an unlink per file of the replica retention retires: both grow with the tree,
// not with the change. When this pull's retention is going to retire a replica anyway, the
// pull moves that replica's tree into its staging dir and brings it up to date there:
//   - an entry the image does not have (or has as another kind: a directory for a file)
//     is removed, a directory by moving it to the trash;
//   - a file that is already the current replica's trusted inode for the same path stays
//     (most unchanged files: replicas share them through links); any other file there is
//     unlinked, then linked, cloned or written as in a fresh staging dir;
//   - symlinks are written anew; directories are reused, their xattrs cleared (the image's
//     are set again) and their attributes set at the end as always.
// Nothing of the retired tree is trusted by itself: a kept file is the very inode the
// current replica's trust record vouches for, checked against the image's metadata as a
// link would be, and verification then walks the tree as after a fresh build (it reports
// any entry the image lacks). The retired replica leaves the replicas dir in one rename,
// before the pull writes; its meta and trust records go first, so a crash in between
// leaves a replica without records, which retention treats like any other.
//
// Not recycled: a repair, a resumed attempt, a consistency group's deferred publish (its
// retention runs later), a target without a linkable current replica, and a target that
// clones files (a clone is its own inode, so nothing would be kept).

// retiring returns the replica this pull's retention will remove once a new replica is
// published and current: the oldest such replica, never cur ("" when none).
func (l layout) retiring(pol Retention, cur string) (string, error) {
	reps, err := l.listReplicas()
	if err != nil {
		return "", err
	}

	items := replicaItems(reps)
	for i := range items {
		items[i].Pinned = false // the new replica will be the current one
	}

	const newName = "\x00new"
	items = append(items, retentionItem{Name: newName, Time: time.Now().UTC(), Pinned: true})
	kept := selectRetained(items, pol)

	sort.SliceStable(reps, func(i, j int) bool { return reps[i].ModTime.Before(reps[j].ModTime) })

	for _, ri := range reps {
		if !kept[ri.Name] && ri.Name != cur {
			return ri.Name, nil
		}
	}

	return "", nil
}

// recycle moves replica name into the staging dir as sname, its records removed first.
func (l layout) recycle(dirs *targetDirs, name, sname string) error {
	for _, f := range []string{name + ".json", name + trustExt} {
		if err := unix.Unlinkat(dirs.meta, f, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("removing the record %s of replica %s: %w", f, name, err)
		}
	}

	if err := unix.Renameat(dirs.replicas, name, dirs.staging, sname); err != nil {
		return fmt.Errorf("moving replica %s to staging: %w", name, err)
	}

	// Non-root agents need to write into the reused directories; setDirAttrs puts the
	// image's mode back at the end.
	if err := unix.Fchmodat(dirs.staging, sname, 0o700, 0); err != nil {
		return fmt.Errorf("staging %s: %w", sname, err)
	}

	return nil
}

// probeClone reports whether the filesystem of dirFd clones files (FICLONE), with two
// empty files it removes again.
func probeClone(dirFd int) bool {
	name := fmt.Sprintf(".clone-probe-%d-%d", os.Getpid(), time.Now().UnixNano())

	a, err := unix.Openat(dirFd, name+"a", unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return false
	}
	defer unix.Unlinkat(dirFd, name+"a", 0) //nolint:errcheck
	defer unix.Close(a)                     //nolint:errcheck

	b, err := unix.Openat(dirFd, name+"b", unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return false
	}
	defer unix.Unlinkat(dirFd, name+"b", 0) //nolint:errcheck
	defer unix.Close(b)                     //nolint:errcheck

	return unix.IoctlFileClone(b, a) == nil
}

// recycler notes the ctime changes its unlinks make to inodes other replicas keep (the
// current replica's record follows them, as after a trash sweep); safe for the workers.
type recycler struct {
	trash int // the dataset's trash dir, for the directories it removes
	mu    sync.Mutex
	j     unlinkJournal
}

// remove removes entry name of staging directory dirFd: a directory by moving it to the
// trash, anything else at once (nothing there is not an error).
func (r *recycler) remove(dirFd int, name string) error {
	var j unlinkJournal

	done, err := j.unlinkShared(dirFd, name)
	if !done {
		err = unix.Unlinkat(dirFd, name, 0)
		if errors.Is(err, unix.ENOENT) {
			err = nil
		} else if errors.Is(err, unix.EISDIR) {
			return moveToTrash(dirFd, name, r.trash)
		}
	}

	if len(j.carries) > 0 {
		r.mu.Lock()
		r.j.carries = append(r.j.carries, j.carries...)
		r.mu.Unlock()
	}

	if err != nil {
		return fmt.Errorf("removing %s: %w", name, err)
	}

	return nil
}

// pruneDir readies reused staging directory rel (dstFd, O_PATH) for image entries ents:
// removes what the image does not hold there (or holds as the other of directory and
// non-directory) and clears the directory's own xattrs but an SELinux label. Where
// p.listedInos, it returns the inode numbers of the non-directories it kept (else nil).
func (p *puller) pruneDir(dstFd int, rel string, ents []*snapshot.DirEntry) (*stagedInos, error) {
	fd, err := openatRetry(dstFd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("staging %s: %w", rel, err)
	}
	defer unix.Close(fd) //nolint:errcheck

	var staged *stagedInos

	if p.listedInos {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return nil, fmt.Errorf("staging %s: %w", rel, err)
		}

		staged = &stagedInos{dev: st.Dev, inos: make(map[string]uint64, len(ents))}
	}

	want := make(map[string]bool, len(ents)) // name → is a directory
	for _, de := range ents {
		want[de.Name] = de.Type == snapshot.EntryTypeDirectory
	}

	var (
		list []dirent
		more = true
		rd   = newDirentReader(fd)
	)

	for more {
		if list, more, err = rd.next(list[:0]); err != nil {
			return nil, fmt.Errorf("listing staging %s: %w", rel, err)
		}

		for _, e := range list {
			isDir := e.typ == unix.DT_DIR
			if e.typ == unix.DT_UNKNOWN {
				isDir = isDirAt(fd, e.name)
			}

			if wantDir, ok := want[e.name]; ok && wantDir == isDir {
				if staged != nil && !isDir {
					staged.inos[e.name] = e.ino
				}

				continue
			}

			if err := p.recycling.remove(fd, e.name); err != nil {
				return nil, fmt.Errorf("staging %s: %w", path.Join(rel, e.name), err)
			}
		}
	}

	names, err := xattrNames(func(buf []byte) (int, error) { return unix.Flistxattr(fd, buf) })
	if err != nil {
		return nil, fmt.Errorf("staging %s: listing xattrs: %w", rel, err)
	}

	for _, n := range names {
		if targetLabel(n) {
			continue
		}

		if err := unix.Fremovexattr(fd, n); err != nil && !errors.Is(err, unix.ENODATA) {
			return nil, fmt.Errorf("staging %s: removing xattr %s: %w", rel, n, err)
		}
	}

	return staged, nil
}

// reuseDir makes existing staging subdirectory name of dstFd writable for this agent (a
// directory the pruning kept; setDirAttrs sets the image's mode at the end).
func reuseDir(dstFd int, name string) error {
	if !isDirAt(dstFd, name) {
		return fmt.Errorf("%s is not a directory", name)
	}

	return unix.Fchmodat(dstFd, name, 0o700, 0)
}

// carryRecycled carries the current replica's record over the unlinks recycling made.
func (p *puller) carryRecycled() {
	if p.recycling == nil || p.cur == "" {
		return
	}

	p.recycling.mu.Lock()
	cs := p.recycling.j.carries
	p.recycling.j.carries = nil
	p.recycling.mu.Unlock()

	if len(cs) > 0 {
		p.lay.carryTrust(p.cur, cs, p.log)
	}
}
