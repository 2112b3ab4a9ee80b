package dataplane

import (
	"os"
	"runtime"
	"sync"
)

// Processors for the push's readers (issue 16). A reader of a cold file blocks in the
// kernel (open, read) and keeps its P, the runtime's right to run Go code, until the
// runtime's monitor takes it back; with one P per CPU the CPU work of the other readers,
// and the goroutine that kopia's write lock is handed to, wait meanwhile. While a push runs
// the process has one P more per push reader. Measured on 2 CPUs (TestMeasureParallel,
// 8 readers, cold, alternated; design.md "Issue 16"): a full push of B (200,000 small
// files) took 16.7–17.1 s with GOMAXPROCS 2, 12.8–13.2 s with 4, 11.6–11.7 s with 8 and
// 11.1–11.3 s with 16, with the same CPU time; A's push (2,048 files of 1 MiB) did not
// change, and A's pull was no faster with 10, which is why the raise lasts only as long as
// pushes run. A GOMAXPROCS set in the environment is left alone.

var pushProcs struct {
	mu     sync.Mutex
	active int // pushes running
}

// raiseProcs gives the process pushReaders() more Ps than the runtime's default while at
// least one push runs; the function it returns ends this push's share.
func raiseProcs() (release func()) {
	if os.Getenv("GOMAXPROCS") != "" {
		return func() {}
	}
	pushProcs.mu.Lock()
	defer pushProcs.mu.Unlock()
	if pushProcs.active == 0 {
		runtime.SetDefaultGOMAXPROCS()
		runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + pushReaders())
	}
	pushProcs.active++
	var once sync.Once
	return func() {
		once.Do(func() {
			pushProcs.mu.Lock()
			defer pushProcs.mu.Unlock()
			if pushProcs.active--; pushProcs.active == 0 {
				// Back to the runtime's own choice, which follows the CPU limit.
				runtime.SetDefaultGOMAXPROCS()
			}
		})
	}
}
