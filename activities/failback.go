package activities

// Failback's data side: the push reads the replica behind a target's dataset link, and the
// pull rebuilds the source dataset beside it, then switches it in with ONE atomic step.
//
// The pull builds and verifies the new tree under a private root on the same filesystem,
// S/.replctl/failback/<dataset>/build (its own staging, replica dir, meta record and fence),
// without touching S/<dataset>. The switch then exchanges the built tree and the dataset
// directory with renameat2(RENAME_EXCHANGE) and fsyncs both parents: S/<dataset> is the old
// tree until that instant and the new one after it, and never missing. The old tree, now at
// the built tree's path, is moved to S/.replctl/failback/<dataset>/<replica>.before.
//
// A switch record (<replica>.switch.json, written and fsynced before the exchange) holds the
// device and inode of the new tree: an attempt that finds S/<dataset> to be that inode knows
// an earlier attempt switched already and only finishes moving the old tree aside. The
// switch runs under an flock and re-reads the build fence, so an attempt overtaken by a
// newer one (a takeover) never switches back.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/replctl/replctl/activities/dataplane"
)

// replicaBehind resolves a target dataset link to its published replica directory.
func replicaBehind(link string) (string, error) {
	st, err := os.Lstat(link)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%s does not exist: the target has no replica to fail back; run a replication first", link)
	}
	if err != nil {
		return "", err
	}
	if st.Mode()&os.ModeSymlink == 0 {
		return "", fmt.Errorf("%s is not a replica link (it is a plain %s): failback copies the target's published replica", link, st.Mode().Type())
	}
	real, err := filepath.EvalSymlinks(link)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%s points to no replica: the target has no replica to fail back", link)
	}
	if err != nil {
		return "", fmt.Errorf("resolving %s: %w", link, err)
	}
	return real, nil
}

// failbackPaths are the paths of one dataset's failback on the source storage.
type failbackPaths struct {
	link   string // S/<dataset>: the dataset directory that is replaced
	build  string // the private root the new tree is built under
	built  string // the built (verified) tree, before the switch
	aside  string // where the old tree is kept
	record string // the switch record
	lock   string // serialises the switch between attempts
	root   string // S: every path above is beneath it
}

// renameBeneath renames from to to (both beneath root) with renameat2 relative to their
// parent directories, each opened beneath root without following a symlink: a parent
// swapped for a symlink since the pull checked it cannot redirect the switch. The parents
// inside .replctl are checked strictly (owned by the agent, closed to others).
func (p failbackPaths) renameBeneath(root, from, to string, flags uint) error {
	open := func(path string) (int, string, error) {
		rel, err := filepath.Rel(root, filepath.Dir(path))
		if err != nil || !filepath.IsLocal(rel) && rel != "." {
			return -1, "", fmt.Errorf("%w: %s is not beneath %s", dataplane.ErrBadInput, path, root)
		}
		strict := rel == ".replctl" || strings.HasPrefix(rel, ".replctl/")
		fd, err := dataplane.OpenDirBeneath(root, filepath.ToSlash(rel), strict)
		return fd, filepath.Base(path), err
	}
	fromFd, fromName, err := open(from)
	if err != nil {
		return err
	}
	defer unix.Close(fromFd) //nolint:errcheck
	toFd, toName, err := open(to)
	if err != nil {
		return err
	}
	defer unix.Close(toFd) //nolint:errcheck
	return unix.Renameat2(fromFd, fromName, toFd, toName, flags)
}

func newFailbackPaths(in PullInput) (failbackPaths, error) {
	dir := filepath.Join(in.TargetRoot, ".replctl", "failback", url.PathEscape(in.Dataset))
	build := filepath.Join(dir, "build")
	built, _, err := dataplane.ReplicaPaths(build, in.Dataset, in.ReplicaName)
	if err != nil {
		return failbackPaths{}, fmt.Errorf("%w: %v", dataplane.ErrBadInput, err)
	}
	return failbackPaths{
		link:   filepath.Join(in.TargetRoot, filepath.FromSlash(in.Dataset)),
		build:  build,
		built:  built,
		aside:  filepath.Join(dir, in.ReplicaName+".before"),
		record: filepath.Join(dir, in.ReplicaName+".switch.json"),
		lock:   filepath.Join(dir, "switch.lock"),
		root:   in.TargetRoot,
	}, nil
}

// fileID identifies a directory across renames.
type fileID struct {
	Dev uint64
	Ino uint64
}

func idOf(fi fs.FileInfo) fileID {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return fileID{Dev: uint64(st.Dev), Ino: st.Ino}
	}
	return fileID{}
}

// switchRecord is written before the exchange: which inode is the new tree and which the
// old one, and their modes (a non-root agent lends them u+w for the move).
type switchRecord struct {
	Replica string
	Agent   string
	Epoch   int64
	New     fileID
	NewMode fs.FileMode
	// Old is zero when there was no dataset directory to replace.
	Old     fileID
	OldMode fs.FileMode
}

// failbackStart returns the result of an earlier attempt of this pull that switched the
// dataset already (finishing its move of the old tree aside), or nil after making the build
// root for this attempt's pull.
func failbackStart(in PullInput, p failbackPaths) (*PullResult, error) {
	// Nothing is created under a source storage that is not mounted.
	if st, err := os.Stat(in.TargetRoot); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("%w: TargetRoot: %s is not an existing directory", dataplane.ErrBadInput, in.TargetRoot)
	}
	// Everything below is created by path: first make sure S/.replctl and the failback dir,
	// where they exist, are real directories of the agent's user (no symlink on the way).
	if err := p.checkControl(); err != nil {
		return nil, err
	}
	var done *PullResult
	err := withSwitchLock(p.lock, func() error {
		rec, err := readSwitchRecord(p.record)
		if err != nil || rec == nil {
			return err
		}
		st, err := os.Lstat(p.link)
		if err != nil || idOf(st) != rec.New {
			return nil // not switched (an attempt stopped between record and exchange)
		}
		saved, err := finishSwitch(rec, p)
		if err != nil {
			return err
		}
		done = &PullResult{Agent: in.Agent, ReplicaName: in.ReplicaName, ReplicaPath: p.link, LinkPath: p.link, Verified: true, Epoch: rec.Epoch, SavedPrevious: saved}
		return nil
	})
	if err != nil || done != nil {
		return done, err
	}
	if err := os.MkdirAll(p.build, 0o755); err != nil {
		return nil, err
	}
	return nil, p.checkControl()
}

// checkControl refuses a S/.replctl or failback dir of this dataset that is a symlink (or has
// one on the way), is not the agent's, or is writable by others; missing ones are fine.
func (p failbackPaths) checkControl() error {
	rel, err := filepath.Rel(p.root, p.build)
	if err != nil {
		return err
	}
	parts := strings.Split(filepath.ToSlash(rel), "/")
	for i := 1; i <= len(parts); i++ {
		fd, err := dataplane.OpenDirBeneath(p.root, strings.Join(parts[:i], "/"), true)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		_ = unix.Close(fd)
	}
	return nil
}

// switchHook, when set (tests), runs right after the exchange: an error stops the switch
// there, as a crash would.
var switchHook func() error

// switchInPlace puts the built tree at the dataset path in one atomic step and keeps the old
// tree aside; it returns where the old tree is ("" when there was none).
func switchInPlace(in PullInput, p failbackPaths) (saved string, err error) {
	err = withSwitchLock(p.lock, func() error {
		cur, err := dataplane.OpenFence(p.build, in.Dataset).Current()
		if err != nil {
			return err
		}
		if cur > in.Epoch {
			return fmt.Errorf("%w: a newer failback attempt (epoch %d) owns %s; ours is %d", dataplane.ErrFenced, cur, p.link, in.Epoch)
		}
		rec, err := readSwitchRecord(p.record)
		if err != nil {
			return err
		}
		lst, lerr := os.Lstat(p.link)
		if rec != nil && lerr == nil && idOf(lst) == rec.New {
			saved, err = finishSwitch(rec, p)
			return err
		}
		bst, err := os.Lstat(p.built)
		if err != nil {
			return fmt.Errorf("the built tree %s is missing: %w", p.built, err)
		}
		rec = &switchRecord{Replica: in.ReplicaName, Agent: in.Agent, Epoch: in.Epoch, New: idOf(bst), NewMode: bst.Mode().Perm()}
		switch {
		case errors.Is(lerr, fs.ErrNotExist):
			// Nothing to replace: the built tree is renamed in (never over anything).
			if err := os.MkdirAll(filepath.Dir(p.link), 0o755); err != nil {
				return err
			}
			if err := writeSwitchRecord(p.record, rec); err != nil {
				return err
			}
			lendWrite(p.built, rec.NewMode)
			if err := p.renameBeneath(p.root, p.built, p.link, unix.RENAME_NOREPLACE); err != nil {
				return fmt.Errorf("renaming the built tree %s to %s: %w", p.built, p.link, err)
			}
		case lerr != nil:
			return lerr
		case lst.Mode().IsDir():
			rec.Old, rec.OldMode = idOf(lst), lst.Mode().Perm()
			if err := writeSwitchRecord(p.record, rec); err != nil {
				return err
			}
			// Moving a directory to another parent rewrites its "..": both need u+w.
			lendWrite(p.built, rec.NewMode)
			lendWrite(p.link, rec.OldMode)
			if err := p.renameBeneath(p.root, p.built, p.link, unix.RENAME_EXCHANGE); err != nil {
				hint := ""
				if errors.Is(err, unix.EINVAL) {
					hint = " (the source storage's filesystem does not support RENAME_EXCHANGE; nothing was switched)"
				}
				return fmt.Errorf("exchanging the built tree %s with %s: %w%s", p.built, p.link, err, hint)
			}
		default:
			return fmt.Errorf("%w: %s is a %s, not a directory: failback replaces a plain directory; move it away", dataplane.ErrBadInput, p.link, lst.Mode().Type())
		}
		if err := syncDirs(filepath.Dir(p.link), filepath.Dir(p.built)); err != nil {
			return err
		}
		if switchHook != nil {
			if err := switchHook(); err != nil {
				return err
			}
		}
		saved, err = finishSwitch(rec, p)
		return err
	})
	return saved, err
}

// finishSwitch runs once the dataset path holds the new tree: the old tree (at the built
// tree's path after the exchange) moves to its aside place, and both get their modes back.
func finishSwitch(rec *switchRecord, p failbackPaths) (saved string, err error) {
	if rec.Old != (fileID{}) {
		st, err := os.Lstat(p.built)
		switch {
		case err == nil && idOf(st) == rec.Old:
			if err := os.MkdirAll(filepath.Dir(p.aside), 0o755); err != nil {
				return "", err
			}
			lendWrite(p.built, rec.OldMode)
			if err := p.renameBeneath(p.root, p.built, p.aside, unix.RENAME_NOREPLACE); err != nil {
				return "", fmt.Errorf("keeping the replaced tree aside at %s: %w", p.aside, err)
			}
			if err := syncDirs(filepath.Dir(p.built), filepath.Dir(p.aside)); err != nil {
				return "", err
			}
		case err != nil && !errors.Is(err, fs.ErrNotExist):
			return "", err
		}
		if err := restoreMode(p.aside, rec.Old, rec.OldMode); err != nil {
			return "", err
		}
		if _, err := os.Lstat(p.aside); err == nil {
			saved = p.aside
		}
	}
	return saved, restoreMode(p.link, rec.New, rec.NewMode)
}

// lendWrite gives a non-root agent u+w on dir for a move to another parent; finishSwitch
// puts the recorded mode back.
func lendWrite(dir string, mode fs.FileMode) {
	if os.Geteuid() != 0 && mode&0o200 == 0 {
		_ = os.Chmod(dir, mode|0o200)
	}
}

// restoreMode sets dir's mode back if dir is still the tree id.
func restoreMode(dir string, id fileID, mode fs.FileMode) error {
	st, err := os.Lstat(dir)
	if err != nil || idOf(st) != id || st.Mode().Perm() == mode {
		return nil
	}
	return os.Chmod(dir, mode)
}

// withSwitchLock runs fn under an exclusive flock of lock (created with its directory).
func withSwitchLock(lock string, fn func() error) error {
	if err := os.MkdirAll(filepath.Dir(lock), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(lock, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer f.Close() // releases the lock
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("locking %s: %w", lock, err)
	}
	return fn()
}

func readSwitchRecord(path string) (*switchRecord, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r switchRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("switch record %s: %w", path, err)
	}
	return &r, nil
}

// writeSwitchRecord replaces the record durably: it must be on disk before the exchange.
func writeSwitchRecord(path string, r *switchRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("writing switch record %s: %w", path, err)
	}
	return syncDirs(filepath.Dir(path))
}

// syncDirs fsyncs directories so the renames in them are durable.
func syncDirs(dirs ...string) error {
	for _, d := range dirs {
		fd, err := unix.Open(d, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("opening %s to fsync it: %w", d, err)
		}
		err = unix.Fsync(fd)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("fsync %s: %w", d, err)
		}
	}
	return nil
}
