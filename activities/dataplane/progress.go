package dataplane

import (
	"sync"
	"sync/atomic"
	"time"
)

// Progress is a small progress report; callers heartbeat with it, so it must
// stay tiny. Phases: "scan", "upload" (push; totals are the previous image's,
// 0 for a first push); "link", "restore", "verify",
// "publish" (pull).
type Progress struct {
	Phase                 string
	BytesDone, BytesTotal int64
	FilesDone, FilesTotal int64
	Path                  string // a path currently worked on (relative), informational
}

const progressInterval = 200 * time.Millisecond

// reporter throttles progress callbacks to one per progressInterval and
// never calls the callback concurrently.
type reporter struct {
	cb func(Progress)

	phase      atomic.Value // string
	bytesDone  atomic.Int64
	bytesTotal atomic.Int64
	filesDone  atomic.Int64
	filesTotal atomic.Int64
	path       atomic.Value // string

	mu   sync.Mutex
	last time.Time
}

func newReporter(cb func(Progress)) *reporter {
	r := &reporter{cb: cb}
	r.phase.Store("")
	r.path.Store("")

	return r
}

func (r *reporter) snapshot() Progress {
	return Progress{
		Phase:      r.phase.Load().(string),
		BytesDone:  r.bytesDone.Load(),
		BytesTotal: r.bytesTotal.Load(),
		FilesDone:  r.filesDone.Load(),
		FilesTotal: r.filesTotal.Load(),
		Path:       r.path.Load().(string),
	}
}

// setPhase switches phase and resets the counters (reported when due).
func (r *reporter) setPhase(phase string, bytesTotal, filesTotal int64) {
	r.phase.Store(phase)
	r.bytesDone.Store(0)
	r.filesDone.Store(0)
	r.bytesTotal.Store(bytesTotal)
	r.filesTotal.Store(filesTotal)
	r.report(false)
}

// final reports the end state unconditionally (once per operation).
func (r *reporter) final() { r.report(true) }

func (r *reporter) setPath(p string) { r.path.Store(p) }

func (r *reporter) addBytes(n int64) {
	r.bytesDone.Add(n)
	r.report(false)
}

func (r *reporter) addFile(bytes int64) {
	r.filesDone.Add(1)
	r.bytesDone.Add(bytes)
	r.report(false)
}

// report calls the callback if force or the interval has passed.
func (r *reporter) report(force bool) {
	if r.cb == nil {
		return
	}

	if !force {
		// cheap pre-check without blocking other workers
		if !r.mu.TryLock() {
			return
		}
	} else {
		r.mu.Lock()
	}
	defer r.mu.Unlock()

	now := time.Now()
	if !force && now.Sub(r.last) < progressInterval {
		return
	}

	r.last = now
	r.cb(r.snapshot())
}
