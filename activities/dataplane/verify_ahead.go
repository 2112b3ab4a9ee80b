package dataplane

import (
	"context"
	"path"
	"sync"

	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/repo/object"
	"github.com/kopia/kopia/snapshot"
)

// Verification walks the image one directory at a time and needs each directory object
// decoded before it can compare the directory with the disk. A pull's plan keeps only
// dirCacheEntries entries decoded for it, so in a large tree the walk decodes most objects
// again, one after another on one core (about 1,000 objects of 1,000 entries on dataset C).
// As the plan does (pull_readahead.go), the walk reads the next subdirectories of the
// directory it is in ahead of descending into them, at most readAheadSlots at once.

// verifyAhead is a verification's pool of directory reads, by image path. With a window of
// 0 it reads nothing ahead: get reads each directory when the walk asks for it.
type verifyAhead struct {
	window int // subdirectories read ahead of the walk
	ctx    context.Context
	cancel context.CancelFunc
	dr     repo.DirectRepository
	read   func(ctx context.Context, dr repo.DirectRepository, oid object.ID, rel string) ([]*snapshot.DirEntry, error)
	hook   func(object.ID) // test hook: as a read ahead begins (may be nil)
	slots  chan struct{}
	wg     sync.WaitGroup

	mu      sync.Mutex
	pending map[string]*aheadRead
}

// aheadRead is one directory being read ahead of the walk.
type aheadRead struct {
	oid  object.ID
	done chan struct{}
	ents []*snapshot.DirEntry
	err  error
}

func newVerifyAhead(ctx context.Context, dr repo.DirectRepository, o *verifyOptions) *verifyAhead {
	a := &verifyAhead{window: o.aheadDirs, dr: dr, read: o.readDir, hook: o.dirRead, slots: make(chan struct{}, readAheadSlots), pending: map[string]*aheadRead{}}
	a.ctx, a.cancel = context.WithCancel(ctx)

	return a
}

// start begins reading directory oid at image path rel.
func (a *verifyAhead) start(oid object.ID, rel string) {
	r := &aheadRead{oid: oid, done: make(chan struct{})}

	a.mu.Lock()
	a.pending[rel] = r
	a.mu.Unlock()

	a.wg.Add(1)

	go func() {
		defer a.wg.Done()
		defer close(r.done)

		if r.err = takeSlot(a.ctx, a.slots); r.err != nil {
			return
		}
		defer func() { <-a.slots }()

		if a.hook != nil {
			a.hook(oid)
		}

		r.ents, r.err = a.read(a.ctx, a.dr, oid, rel)
	}()
}

// take removes the read of rel started ahead, if any.
func (a *verifyAhead) take(rel string) *aheadRead {
	a.mu.Lock()
	defer a.mu.Unlock()

	r := a.pending[rel]
	delete(a.pending, rel)

	return r
}

// get returns directory oid at rel: the read started ahead, or one made now.
func (a *verifyAhead) get(ctx context.Context, oid object.ID, rel string) ([]*snapshot.DirEntry, error) {
	if r := a.take(rel); r != nil && r.oid == oid {
		select {
		case <-r.done:
			return r.ents, r.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}

	return a.read(ctx, a.dr, oid, rel)
}

// stop ends the reads the walk did not take and waits for them.
func (a *verifyAhead) stop() {
	a.cancel()
	a.wg.Wait()
}

// subdirs starts reading ahead the first window subdirectories among ents (at image path
// rel) and returns a function to call as the walk reaches each entry of ents in order: at
// each subdirectory it starts the read of the one window places further on.
func (a *verifyAhead) subdirs(ents []*snapshot.DirEntry, rel string) func(de *snapshot.DirEntry) {
	var subs []*snapshot.DirEntry

	if a.window > 0 {
		for _, de := range ents {
			if de.Type == snapshot.EntryTypeDirectory {
				subs = append(subs, de)
			}
		}
	}

	startSub := func(k int) {
		if k < len(subs) {
			a.start(subs[k].ObjectID, path.Join(rel, subs[k].Name))
		}
	}

	for k := range a.window {
		startSub(k)
	}

	reached := 0

	return func(de *snapshot.DirEntry) {
		if len(subs) > 0 && de.Type == snapshot.EntryTypeDirectory {
			startSub(reached + a.window)
			reached++
		}
	}
}
