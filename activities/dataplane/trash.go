package dataplane

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Retired replicas and staging dirs are renamed into a trash dir on the same file system
// (T/.replctl/trash/<escaped dataset>) and deleted there in the background:
//   - a replica leaves the replicas dir in one rename, so nobody ever sees a half-deleted
//     replica under its name;
//   - a pull is done when its replica is published; deleting the old replica's files
//     (one unlink per file, ~2.6 s for 200,000 files here) no longer delays the run.
// A trash dir left by a crash is emptied by the next pull of the dataset on any agent.

// trashDir is where retired trees of the dataset wait for deletion.
func (l layout) trashDir() string {
	return filepath.Join(l.root, replctlDir, "trash", l.esc)
}

// moveToTrash renames name in dirFd into the trash dir trashFd (one rename on
// one file system, both dirs resolved beneath T).
func moveToTrash(dirFd int, name string, trashFd int) error {
	to := name + "." + strconv.FormatInt(time.Now().UnixNano(), 10)
	if err := unix.Renameat(dirFd, name, trashFd, to); err != nil {
		return fmt.Errorf("moving %s to the trash: %w", name, err)
	}

	return nil
}

// sweeper empties trash dirs in the background, one goroutine per dir at a time.
type sweeper struct {
	mu      sync.Mutex
	running map[string]bool
	again   map[string]bool
	wg      sync.WaitGroup
}

var trash = &sweeper{running: map[string]bool{}, again: map[string]bool{}}

// sweep starts emptying dir unless that is already going on, in which case the running
// sweep looks at dir once more when it is done.
func (s *sweeper) sweep(l layout, log func(string, ...any)) {
	dir := l.trashDir()

	s.mu.Lock()
	defer s.mu.Unlock()

	if s.running[dir] {
		s.again[dir] = true
		return
	}

	s.running[dir] = true
	s.wg.Add(1)

	go func() {
		defer s.wg.Done()

		for {
			emptyTrash(l, log)

			s.mu.Lock()
			if !s.again[dir] {
				delete(s.running, dir)
				s.mu.Unlock()

				return
			}

			delete(s.again, dir)
			s.mu.Unlock()
		}
	}()
}

// WaitTrash blocks until the background deletion of retired replicas is done (tests; an
// agent that stops mid-sweep leaves the rest to the dataset's next pull).
func WaitTrash() { trash.wg.Wait() }

// emptyTrash removes every entry of the dataset's trash dir (not the dir itself), resolved
// beneath T: an entry is removed by fds, no symlink in it followed.
func emptyTrash(l layout, log func(string, ...any)) {
	dir := l.trashDir()

	root, err := openRoot(l.root)
	if err != nil {
		log("trash: opening the target root failed", "dir", dir, "err", err)
		return
	}
	defer unix.Close(root) //nolint:errcheck

	fd, err := ctlDir(root, l.root, false, 0o700, "trash", l.esc)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			log("trash: opening failed", "dir", dir, "err", err)
		}

		return
	}
	defer unix.Close(fd) //nolint:errcheck

	names, err := dirNames(fd)
	if err != nil {
		log("trash: listing failed", "dir", dir, "err", err)
		return
	}

	j := &unlinkJournal{}

	for _, n := range names {
		if err := removeAllAtJ(fd, n, j); err != nil {
			log("trash: removing failed", "path", filepath.Join(dir, n), "err", err)
		}
	}

	// The current replica shares inodes with what was removed: its record
	// follows the ctimes these unlinks set.
	if len(j.carries) > 0 {
		if cur, err := l.currentReplica(); err == nil && cur != "" {
			l.carryTrust(cur, j.carries, log)
		}
	}
}

// reclaim removes, before a pull writes, the staging dirs that older attempts of the
// dataset left (a killed agent, a failed run, a fenced attempt), except resumeFrom, which
// this attempt reuses. Only an attempt holding the newest epoch calls it, so none of them
// can still publish. Whatever it moved, and whatever a killed agent left in the trash, is
// deleted before it returns; a trash that this process is already emptying is left to that.
func (l layout) reclaim(dirs *targetDirs, epoch int64, resumeFrom string, log func(string, ...any)) {
	names, err := dirNames(dirs.staging)
	if err != nil {
		log("reclaim: listing staging dirs failed", "dir", l.staging, "err", err)
		return
	}

	moved := 0

	for _, n := range names {
		_, ep, ok := parseStagingName(n)
		if !ok || ep >= epoch || (resumeFrom != "" && n == filepath.Base(resumeFrom)) {
			continue
		}

		if err := moveToTrash(dirs.staging, n, dirs.trash); err != nil && !errors.Is(err, fs.ErrNotExist) {
			log("reclaim: removing a stale staging dir failed", "dir", filepath.Join(l.staging, n), "err", err)
			continue
		}

		log("reclaim: removing the staging dir of an earlier attempt", "dir", filepath.Join(l.staging, n))
		moved++
	}

	left, err := dirNames(dirs.trash)
	if err != nil || len(left) == 0 || (moved == 0 && trash.busy(l.trashDir())) {
		return
	}

	emptyTrash(l, log)
}

// discard removes a failed attempt's staging dir and the earlier attempts' dirs it read
// from, at once (not in the background): the attempt failed because the storage is full,
// read-only or failing, and the space must be back when the step ends.
func (l layout) discard(dirs *targetDirs, staging string, resumed []string, log func(string, ...any)) {
	for _, n := range append([]string{staging}, resumed...) {
		n = filepath.Base(n)
		if err := moveToTrash(dirs.staging, n, dirs.trash); err != nil && !errors.Is(err, fs.ErrNotExist) {
			log("discarding the staging dir of a failed pull failed", "dir", filepath.Join(l.staging, n), "err", err)
		}
	}

	emptyTrash(l, log)
}

// busy tells whether a sweep of dir is running in this process.
func (s *sweeper) busy(dir string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()

	return s.running[dir]
}
