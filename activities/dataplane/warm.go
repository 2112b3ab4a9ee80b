package dataplane

import (
	"context"
	"errors"
	"fmt"
	"path"
	"runtime"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Warming a target before its pull (issue 16). A pull of a mostly unchanged dataset spends
// its time in the inode reads of the current replica (the trust check's fstatat of every
// file) and the listing of the replica it recycles; on a cold cache those are disk reads,
// one at a time per plan worker. The push before it runs on the source agent and takes
// seconds on a large tree, while the target agent waits. WarmReplica reads that metadata
// then: it lists every directory of the current replica and stats every entry, and lists
// the directories of the replica the pull will recycle, so that the pull finds them in the
// kernel's caches. It reads nothing else and writes nothing; it follows no symlink. Its
// threads run at the lowest CPU priority (nice 19), so it takes only CPU time that the
// push, on the same machine or not, leaves idle.

// warmWorkers is how many directories WarmReplica reads at once: cold reads wait on the
// disk, so more of them than CPUs keep the disk's queue full (as planQueueDepth).
const warmWorkers = 8

// WarmRequest names a target dataset whose replicas the next pull will read.
type WarmRequest struct {
	TargetRoot string
	Dataset    string
	// Keep is the job's replica retention: which replica the pull will recycle.
	Keep Retention
	// Recycle: the pull brings a retired replica up to date (the job's retire setting).
	Recycle bool
	// Workers overrides warmWorkers (tests).
	Workers int
}

// WarmResult is what WarmReplica read.
type WarmResult struct {
	// Replica is the current replica ("" when the dataset has none yet: nothing to read).
	Replica string
	// Retiring is the replica the pull will recycle ("" when none).
	Retiring string
	// Dirs and Entries count the directories listed and the entries stat'ed.
	Dirs, Entries int64
}

// WarmReplica reads the metadata the next pull of req's dataset will read (see above). A
// cancelled ctx ends it early with ctx's error.
func (r *Repos) WarmReplica(ctx context.Context, req WarmRequest) (WarmResult, error) {
	var res WarmResult
	l := newLayout(req.TargetRoot, req.Dataset)
	cur, err := l.currentReplica()
	if err != nil || cur == "" {
		return res, err
	}
	res.Replica = cur
	if req.Recycle {
		if res.Retiring, err = l.retiring(req.Keep, cur); err != nil {
			return res, err
		}
	}
	root, err := openRoot(l.root)
	if err != nil {
		return res, err
	}
	defer closeFd(root)
	reps, err := ctlDir(root, l.root, false, dirMode, "replicas", l.esc)
	if err != nil {
		return res, err
	}
	defer closeFd(reps)
	w := &warmer{ctx: ctx, workers: req.Workers}
	if w.workers <= 0 {
		w.workers = warmWorkers
	}
	if err := w.walk(reps, cur, true); err != nil {
		return res, fmt.Errorf("reading replica %s: %w", l.replicaDir(cur), err)
	}
	if res.Retiring != "" {
		if err := w.walk(reps, res.Retiring, false); err != nil {
			return res, fmt.Errorf("reading replica %s: %w", l.replicaDir(res.Retiring), err)
		}
	}
	res.Dirs, res.Entries = w.dirs.Load(), w.entries.Load()
	return res, ctx.Err()
}

// warmer walks trees beneath a directory fd with several low-priority threads.
type warmer struct {
	ctx     context.Context
	workers int
	dirs    atomic.Int64
	entries atomic.Int64
}

// walk reads the tree name beneath dirFd: every directory listed and, with stat, every entry
// stat'ed. Directories are opened by their path beneath dirFd with no symlink followed.
func (w *warmer) walk(dirFd int, name string, stat bool) error {
	var (
		mu      sync.Mutex
		cond    = sync.NewCond(&mu)
		pending = []string{name}
		busy    int
		first   error
		wg      sync.WaitGroup
	)
	// next hands out a directory, or "" once none is left and no worker can add one.
	next := func() string {
		mu.Lock()
		defer mu.Unlock()
		for len(pending) == 0 && busy > 0 && first == nil {
			cond.Wait()
		}
		if len(pending) == 0 || first != nil {
			cond.Broadcast()
			return ""
		}
		d := pending[len(pending)-1]
		pending = pending[:len(pending)-1]
		busy++
		return d
	}
	done := func(subdirs []string, err error) {
		mu.Lock()
		defer mu.Unlock()
		busy--
		pending = append(pending, subdirs...)
		if err != nil && first == nil {
			first = err
		}
		cond.Broadcast()
	}
	for range w.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// The thread is niced for good and dies with this goroutine (locked, never
			// unlocked), so no other goroutine runs on it at that priority.
			runtime.LockOSThread()
			_ = unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), 19)
			for d := next(); d != ""; d = next() {
				subdirs, err := w.dir(dirFd, d, stat)
				if err == nil {
					err = w.ctx.Err()
				}
				done(subdirs, err)
			}
		}()
	}
	wg.Wait()
	return first
}

// dir lists one directory (rel beneath dirFd), stats its entries with stat and returns its
// subdirectories. An entry that vanished meanwhile is skipped: the pull looks again.
func (w *warmer) dir(dirFd int, rel string, stat bool) ([]string, error) {
	fd, err := openBeneath(dirFd, rel, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", rel, err)
	}
	defer closeFd(fd)
	w.dirs.Add(1)
	var subdirs []string
	rd := newDirentReader(fd)
	ents := make([]dirent, 0, 256)
	for {
		var more bool
		ents, more, err = rd.next(ents[:0])
		if err != nil {
			return subdirs, fmt.Errorf("listing %s: %w", rel, err)
		}
		for _, e := range ents {
			typ := e.typ
			if stat || typ == unix.DT_UNKNOWN {
				var st unix.Stat_t
				if err := unix.Fstatat(fd, e.name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
					continue
				}
				w.entries.Add(1)
				if st.Mode&unix.S_IFMT == unix.S_IFDIR {
					typ = unix.DT_DIR
				}
			}
			if typ == unix.DT_DIR {
				subdirs = append(subdirs, path.Join(rel, e.name))
			}
		}
		if !more {
			return subdirs, nil
		}
	}
}
