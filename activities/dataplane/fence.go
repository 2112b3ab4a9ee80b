package dataplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Fence keeps the highest pull epoch seen for one dataset on one target, in
// T/.replctl/fence/<esc(D)>.json. Writers take an exclusive flock on the
// sibling .lock file; readers just read the JSON (it is replaced atomically).
type Fence struct {
	root string // T
	path string // .json record
	lock string // .lock file for flock
	err  error  // from OpenFence input validation
}

type fenceRecord struct {
	Epoch int64     `json:"epoch"`
	Agent string    `json:"agent"`
	Time  time.Time `json:"time"`
}

// OpenFence returns the fence of dataset under targetRoot. It touches no
// files; invalid arguments are reported by the first method call.
func OpenFence(targetRoot, dataset string) *Fence {
	if err := checkAbs("TargetRoot", targetRoot); err != nil {
		return &Fence{err: err}
	}

	if err := checkDataset("Dataset", dataset); err != nil {
		return &Fence{err: err}
	}

	p := newLayout(targetRoot, dataset).fence

	return &Fence{root: targetRoot, path: p, lock: strings.TrimSuffix(p, ".json") + ".lock"}
}

// dir opens T/.replctl/fence beneath T (checked strictly; created with create).
func (f *Fence) dir(create bool) (int, error) {
	root, err := openRoot(f.root)
	if err != nil {
		return -1, err
	}
	defer unix.Close(root) //nolint:errcheck

	return ctlDir(root, f.root, create, dirMode, "fence")
}

func (f *Fence) read() (fenceRecord, error) {
	var r fenceRecord

	d, err := f.dir(false)
	if errors.Is(err, fs.ErrNotExist) {
		return r, nil
	}

	if err != nil {
		return r, err
	}
	defer unix.Close(d) //nolint:errcheck

	b, err := readFileAt(d, filepath.Dir(f.path), filepath.Base(f.path))
	if errors.Is(err, fs.ErrNotExist) {
		return r, nil
	}

	if err != nil {
		return r, fmt.Errorf("reading fence %s: %w", f.path, err)
	}

	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("parsing fence %s: %w", f.path, err)
	}

	return r, nil
}

// Current returns the highest epoch recorded (0 if none). Cheap: no lock.
func (f *Fence) Current() (int64, error) {
	if f.err != nil {
		return 0, f.err
	}

	r, err := f.read()

	return r.Epoch, err
}

// withLock runs fn under an exclusive flock of the fence's lock file.
func (f *Fence) withLock(fn func() error) error {
	d, err := f.dir(true)
	if err != nil {
		return err
	}
	defer unix.Close(d) //nolint:errcheck

	fd, err := unix.Openat(d, filepath.Base(f.lock), unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return fmt.Errorf("opening fence lock %s: %w", f.lock, err)
	}

	lf := os.NewFile(uintptr(fd), f.lock)
	defer lf.Close()

	for {
		err = unix.Flock(int(lf.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}

	if err != nil {
		return fmt.Errorf("locking fence %s: %w", f.lock, err)
	}

	defer unix.Flock(int(lf.Fd()), unix.LOCK_UN) //nolint:errcheck // closing releases it too

	return fn()
}

// Advance records epoch as the highest seen, unless a higher one is already
// recorded (then ErrFenced). Equal epochs are accepted (a retry of the same
// attempt). The record is replaced atomically and durably.
func (f *Fence) Advance(epoch int64, agent string) error {
	if f.err != nil {
		return f.err
	}

	return f.withLock(func() error {
		r, err := f.read()
		if err != nil {
			return err
		}

		if epoch < r.Epoch {
			return fmt.Errorf("%w: %s records epoch %d (agent %q), ours is %d", ErrFenced, f.path, r.Epoch, r.Agent, epoch)
		}

		b, err := json.Marshal(fenceRecord{Epoch: epoch, Agent: agent, Time: time.Now().UTC()})
		if err != nil {
			return err
		}

		d, err := f.dir(false)
		if err != nil {
			return err
		}
		defer unix.Close(d) //nolint:errcheck

		return writeFileAt(d, filepath.Dir(f.path), filepath.Base(f.path), b, 0o644)
	})
}

// check returns ErrFenced if a newer epoch than ours is recorded (no lock).
func (f *Fence) check(epoch int64) error {
	r, err := f.read()
	if err != nil {
		return err
	}

	if r.Epoch > epoch {
		return fmt.Errorf("%w: %s records epoch %d (agent %q), ours is %d", ErrFenced, f.path, r.Epoch, r.Agent, epoch)
	}

	return nil
}

// guard is consulted by every writer of a pull: it stops the pull on ctx
// cancellation, after the write deadline, and (re-reading the fence at most
// every 250 ms or 256 files) when a newer epoch is recorded. Once tripped it
// keeps returning the same error.
type guard struct {
	ctx      context.Context
	fence    *Fence
	epoch    int64
	deadline time.Time

	mu        sync.Mutex
	lastCheck time.Time
	files     int
	err       error
}

const (
	fenceCheckInterval = 250 * time.Millisecond
	fenceCheckFiles    = 256
)

func newGuard(ctx context.Context, f *Fence, epoch int64, deadline time.Time) *guard {
	return &guard{ctx: ctx, fence: f, epoch: epoch, deadline: deadline, lastCheck: time.Now()}
}

// check is called before each file (newFile=true) and between chunks of a file.
func (g *guard) check(newFile bool) error {
	g.mu.Lock()
	defer g.mu.Unlock()

	if g.err != nil {
		return g.err
	}

	if err := g.ctx.Err(); err != nil {
		g.err = fmt.Errorf("pull stopped: %w", context.Cause(g.ctx))
		return g.err
	}

	now := time.Now()
	if !g.deadline.IsZero() && now.After(g.deadline) {
		g.err = fmt.Errorf("%w: write deadline passed (%s)", ErrFenced, g.deadline.Format(time.RFC3339Nano))
		return g.err
	}

	if newFile {
		g.files++
	}

	if g.files >= fenceCheckFiles || now.Sub(g.lastCheck) >= fenceCheckInterval {
		g.files = 0
		g.lastCheck = now

		if g.fence != nil { // nil: a restore, which no epoch fences
			if err := g.fence.check(g.epoch); err != nil {
				g.err = err
				return err
			}
		}
	}

	return nil
}

// tripped returns the sticky error, if any, without checking anything new.
func (g *guard) tripped() error {
	g.mu.Lock()
	defer g.mu.Unlock()

	return g.err
}
