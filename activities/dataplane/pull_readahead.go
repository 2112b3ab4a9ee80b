package dataplane

import (
	"context"
	"path"
	"sync"

	"github.com/kopia/kopia/repo/object"
	"github.com/kopia/kopia/snapshot"
)

// The plan walks the image one directory at a time, and each directory needs its object
// and the previous image's at the same path decoded before its files can be handed to the
// workers. On a cold cache every object is a read of a pack file: one at a time, the walk
// waits for each. So the walk reads the next readAheadDirs subdirectories of the directory
// it is in ahead of descending into them, at most readAheadSlots objects at once.
const (
	readAheadDirs  = 8
	readAheadSlots = 8
)

// dirRead is one image directory, and the previous image's directory at the same path,
// being read ahead of the walk.
type dirRead struct {
	done chan struct{}
	ents []*snapshot.DirEntry
	// prev: the previous image's entries by name; nil when there is none, it is the same
	// object (nothing to compare) or it could not be read (nothing is linked from it).
	prev map[string]*snapshot.DirEntry
	err  error
}

// readAhead is the plan's pool of directory reads.
type readAhead struct {
	slots chan struct{}
	wg    sync.WaitGroup
}

func newReadAhead() *readAhead {
	return &readAhead{slots: make(chan struct{}, readAheadSlots)}
}

// start begins reading directory d of the image and, unless it is the same object, prev of
// the previous image. The read gives up when ctx ends.
func (ra *readAhead) start(ctx context.Context, p *puller, d object.ID, prev *object.ID) *dirRead {
	r := &dirRead{done: make(chan struct{})}

	ra.wg.Add(1)

	go func() {
		defer ra.wg.Done()
		defer close(r.done)

		if r.err = takeSlot(ctx, ra.slots); r.err != nil {
			return
		}
		defer func() { <-ra.slots }()

		if p.hooks.dirRead != nil {
			p.hooks.dirRead(d)
		}

		if r.ents, r.err = readImageDir(ctx, p.dr, d); r.err != nil || prev == nil || *prev == d {
			return
		}

		// Unreadable (e.g. pruned and garbage-collected): just link nothing.
		if pe, err := readImageDir(ctx, p.dr, *prev); err == nil {
			r.prev = make(map[string]*snapshot.DirEntry, len(pe))
			for _, e := range pe {
				r.prev[e.Name] = e
			}
		}
	}()

	return r
}

// takeSlot waits for a free slot in slots, or for ctx to end.
func takeSlot(ctx context.Context, slots chan struct{}) error {
	select {
	case slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// wait returns when every read started has ended.
func (ra *readAhead) wait() { ra.wg.Wait() }

// planSubdirs plans the subdirectories among ents in order, each read ahead of the walk.
func (p *puller) planSubdirs(ctx context.Context, jobs chan<- fileJob, ents []*snapshot.DirEntry, prevOf func(*snapshot.DirEntry) *snapshot.DirEntry, rel string, srcFd, dstFd int) error {
	var subs []*snapshot.DirEntry

	for _, de := range ents {
		if de.Type == snapshot.EntryTypeDirectory {
			subs = append(subs, de)
		}
	}

	reads := make([]*dirRead, len(subs))
	readSub := func(i int) {
		reads[i] = p.ahead.start(ctx, p, subs[i].ObjectID, prevDirID(prevOf(subs[i]), srcFd))
	}

	window := readAheadDirs
	if p.hooks.noReadAhead {
		window = 0
	}

	for i := range min(window, len(subs)) {
		readSub(i)
	}

	for i, de := range subs {
		if next := i + window; next < len(subs) {
			readSub(next)
		}

		if err := p.planDir(ctx, jobs, de, prevOf(de), reads[i], path.Join(rel, de.Name), srcFd, dstFd); err != nil {
			return err
		}

		reads[i] = nil
	}

	return nil
}

// prevDirID is the previous image's object of a subdirectory the plan compares with (and
// so reads ahead): prev must be a directory and the current replica's parent open (srcFd);
// nil otherwise.
func prevDirID(prev *snapshot.DirEntry, srcFd int) *object.ID {
	if prev == nil || prev.Type != snapshot.EntryTypeDirectory || srcFd < 0 {
		return nil
	}

	return &prev.ObjectID
}
