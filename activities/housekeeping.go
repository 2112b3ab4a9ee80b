package activities

import (
	"context"
	"sync"
	"time"
)

// housekeepGrace is how long Agent.Close lets housekeeping that is under way finish before
// it cancels it: a cancelled prune deletes nothing, and the job's next pull prunes again.
const housekeepGrace = 5 * time.Second

// housekeeping runs work a step leaves behind once its result has been returned: image
// retention after a pull. The run does not wait for it (once a job has its images, every
// run deletes its oldest: two blob writes with their fsyncs, about half of a pull of an
// empty dataset), and a failure only leaves older images for the next pull.
// Tasks of one key (a job) run one after another in the order they were started, tasks
// of different keys at once.
type housekeeping struct {
	mu     sync.Mutex
	tails  map[string]chan struct{} // per key, closed when its newest task has ended
	wg     sync.WaitGroup
	ctx    context.Context
	cancel context.CancelFunc
	closed bool
}

// start runs fn after the tasks of key started before it. It reports false, and runs
// nothing, once the agent is closing.
func (h *housekeeping) start(key string, fn func(ctx context.Context)) bool {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return false
	}
	if h.ctx == nil {
		h.ctx, h.cancel = context.WithCancel(context.Background())
		h.tails = map[string]chan struct{}{}
	}
	prev, done, ctx := h.tails[key], make(chan struct{}), h.ctx
	h.tails[key] = done
	h.wg.Add(1)
	h.mu.Unlock()

	go func() {
		defer h.wg.Done()
		defer func() {
			h.mu.Lock()
			if h.tails[key] == done {
				delete(h.tails, key)
			}
			h.mu.Unlock()
			close(done)
		}()
		if prev != nil {
			select {
			case <-prev:
			case <-ctx.Done():
			}
		}
		if ctx.Err() == nil {
			fn(ctx)
		}
	}()
	return true
}

// wait waits for every task started so far (tests: what a pull left behind is done).
func (h *housekeeping) wait() { h.wg.Wait() }

// close refuses new tasks and waits for those started; after grace it cancels them and
// waits for them to return.
func (h *housekeeping) close(grace time.Duration) {
	h.mu.Lock()
	h.closed = true
	cancel := h.cancel
	h.mu.Unlock()
	if cancel == nil {
		return
	}
	done := make(chan struct{})
	go func() { h.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		cancel()
		<-done
	}
	cancel()
}
