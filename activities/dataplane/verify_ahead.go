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

// verifyAhead is a verification's pool of directory reads, by image path.
type verifyAhead struct {
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
	a := &verifyAhead{dr: dr, read: o.readDir, hook: o.dirRead, slots: make(chan struct{}, readAheadSlots), pending: map[string]*aheadRead{}}
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
// rel) and returns a function to call as the walk reaches the i-th entry of ents: it starts
// the next subdirectory's read, keeping window of them ahead.
func (a *verifyAhead) subdirs(ents []*snapshot.DirEntry, rel string, window int) func(i int) {
	if a == nil || window <= 0 {
		return func(int) {}
	}

	var subs []int

	at := make(map[int]int) // entry index → its place among subs

	for i, de := range ents {
		if de.Type == snapshot.EntryTypeDirectory {
			at[i] = len(subs)
			subs = append(subs, i)
		}
	}

	startSub := func(k int) {
		de := ents[subs[k]]
		a.start(de.ObjectID, path.Join(rel, de.Name))
	}

	for k := range min(window, len(subs)) {
		startSub(k)
	}

	return func(i int) {
		if k, ok := at[i]; ok && k+window < len(subs) {
			startSub(k + window)
		}
	}
}
