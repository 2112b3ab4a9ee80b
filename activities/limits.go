package activities

// Limits per host and job (config hosts[].max_concurrent_steps, hosts[].bandwidth and
// jobs[].bandwidth). Both are enforced inside the agent, after the step has started: the
// takeover protocol takes a step that no agent starts within schedule_to_start for a lost
// agent, so a step waiting in the server's queue for a free slot would be handed to the next
// host of the order. A step waiting here has started, holds its write lease and heartbeats
// "waiting for a slot", which `replctl status` shows. Scripts (quiesce, resume, takeover)
// never take a slot.

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/replctl/replctl/activities/dataplane"
)

// PhaseWaitingForSlot begins the phase a data step heartbeats while it waits for a slot.
const PhaseWaitingForSlot = "waiting for a slot"

// limits are an agent's slots and its host-wide token bucket, shared by all its steps.
type limits struct {
	mu      sync.Mutex
	running int
	max     int             // the config's max_concurrent_steps when last read (0: none)
	queue   []chan struct{} // waiting steps, first come first served
	host    *rate.Limiter   // nil until a host bandwidth is configured
}

// acquire takes a slot of at most max (0: no limit) running data steps, waiting in order of
// arrival; waiting is called (with the number of steps running and ahead) when it must
// wait. release gives the slot back.
func (l *limits) acquire(ctx context.Context, max int, waiting func(running, ahead int)) (release func(), err error) {
	l.mu.Lock()
	l.max = max
	if len(l.queue) == 0 && (max <= 0 || l.running < max) {
		l.running++
		l.mu.Unlock()
		return l.releaser(), nil
	}
	ch := make(chan struct{})
	l.queue = append(l.queue, ch)
	running, ahead := l.running, len(l.queue)-1
	l.mu.Unlock()
	waiting(running, ahead)
	select {
	case <-ch:
		return l.releaser(), nil
	case <-ctx.Done():
		l.mu.Lock()
		for i, c := range l.queue {
			if c == ch {
				l.queue = append(l.queue[:i], l.queue[i+1:]...)
				l.mu.Unlock()
				return nil, context.Cause(ctx)
			}
		}
		l.mu.Unlock()
		// Granted meanwhile: hand the slot on.
		l.releaser()()
		return nil, context.Cause(ctx)
	}
}

func (l *limits) releaser() func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.running--
			for len(l.queue) > 0 && (l.max <= 0 || l.running < l.max) {
				l.running++
				close(l.queue[0])
				l.queue = l.queue[1:]
			}
		})
	}
}

// inUse is the number of data steps holding a slot (tests).
func (l *limits) inUse() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.running
}

// hostLimiter is the agent's token bucket set to bytesPerSec (nil for none). One bucket per
// agent: every step on the host shares it; a changed config changes its rate.
func (l *limits) hostLimiter(bytesPerSec int64) *rate.Limiter {
	if bytesPerSec <= 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.host == nil {
		l.host = rate.NewLimiter(rate.Limit(bytesPerSec), burst(bytesPerSec))
	} else if l.host.Limit() != rate.Limit(bytesPerSec) {
		l.host.SetLimit(rate.Limit(bytesPerSec))
		l.host.SetBurst(burst(bytesPerSec))
	}
	return l.host
}

// burst is a bucket's size: about 1/8 s of traffic, between 32 KiB and 8 MiB, so a step
// starting with a full bucket gets ahead of its rate by little.
func burst(bytesPerSec int64) int {
	return int(min(max(bytesPerSec/8, 32<<10), 8<<20))
}

// NewByteLimiter is a limiter of bytesPerSec (nil for 0: none).
func NewByteLimiter(bytesPerSec int64) dataplane.Limiter {
	if bytesPerSec <= 0 {
		return nil
	}
	return byteLimits{rate.NewLimiter(rate.Limit(bytesPerSec), burst(bytesPerSec))}
}

// byteLimits pass bytes through every one of their buckets: the stricter limit wins.
type byteLimits []*rate.Limiter

func (b byteLimits) WaitN(ctx context.Context, n int) error {
	for n > 0 {
		chunk := n
		for _, l := range b {
			chunk = min(chunk, l.Burst())
		}
		for _, l := range b {
			if err := l.WaitN(ctx, chunk); err != nil {
				return err
			}
		}
		n -= chunk
	}
	return nil
}

// stepLimits is what one data step of job on this agent is held to.
type stepLimits struct {
	maxSteps int
	limiter  dataplane.Limiter // nil: no bandwidth limit
}

// stepLimits reads the limits of job's data steps on this host from the agent's own config.
// A config that does not load has failed the step's authorization already; here it means
// no limit.
func (a *Agent) stepLimits(job string) stepLimits {
	cfg, err := a.loadConfig()
	if err != nil {
		return stepLimits{}
	}
	var out stepLimits
	var ls byteLimits
	if h, err := cfg.Host(a.Host); err == nil {
		out.maxSteps = h.MaxConcurrentSteps
		if hl := a.limits.hostLimiter(h.BandwidthBytes()); hl != nil {
			ls = append(ls, hl)
		}
	}
	if j, err := cfg.Job(job); err == nil {
		if n := j.BandwidthBytes(); n > 0 {
			// The job's bucket is the step's own: each push or pull of the job is held to it.
			ls = append(byteLimits{rate.NewLimiter(rate.Limit(n), burst(n))}, ls...)
		}
	}
	if len(ls) > 0 {
		out.limiter = ls
	}
	return out
}

// heldSlot is a data step's slot on this agent and what the step is held to.
type heldSlot struct {
	limiter dataplane.Limiter // nil: no bandwidth limit
	release func()
	waited  time.Duration // how long the step waited for the slot
}

// slot waits for a data step's slot on this agent, heartbeating "waiting for a slot"
// meanwhile (the step keeps its lease: a lost agent is still found by its heartbeat).
func (a *Agent) slot(ctx context.Context, l *lease, job string) (heldSlot, error) {
	sl := a.stepLimits(job)
	before := l.progress()
	start := time.Now()
	waited := false
	release, err := a.limits.acquire(ctx, sl.maxSteps, func(running, ahead int) {
		waited = true
		p := before
		p.Phase = fmt.Sprintf("%s on host %s: %d data steps running (max_concurrent_steps %d), %d waiting ahead", PhaseWaitingForSlot, a.Host, running, sl.maxSteps, ahead)
		l.update(p)
	})
	if err != nil {
		if c := leaseCause(ctx); c != nil {
			return heldSlot{}, c
		}
		return heldSlot{}, err
	}
	h := heldSlot{limiter: sl.limiter, release: release}
	if waited {
		h.waited = time.Since(start)
		l.update(before)
	}
	return h, nil
}

// WaitingForSlot tells whether a heartbeat phase says the step waits for a slot.
func WaitingForSlot(phase string) bool { return strings.HasPrefix(phase, PhaseWaitingForSlot) }
