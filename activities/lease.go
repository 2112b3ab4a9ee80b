package activities

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
)

// Why an attempt stopped on its own: the workflow hands a step to the next agent once this
// agent's heartbeats stop arriving, so this agent must stop writing by then.
var (
	// ErrLeaseExpired: no heartbeat was acknowledged for a heartbeat timeout (cut off,
	// frozen): the server may already have handed the step to another agent.
	ErrLeaseExpired = errors.New("write lease expired: no heartbeat acknowledged within the heartbeat timeout")
	// ErrTakenOver: the server refused a heartbeat: the step timed out (and was handed on)
	// or was cancelled.
	ErrTakenOver = errors.New("heartbeat refused: the step was handed to another agent or cancelled")
)

// lease heartbeats an activity synchronously through the client, so it knows which
// heartbeats the server acknowledged. It keeps the time until which this attempt may write:
// the send time of the last acknowledged heartbeat plus the heartbeat timeout (less a
// margin). The server cannot time the attempt out, and so no other agent can start the step,
// before that instant; when it passes, or a heartbeat is refused, the lease cancels the
// attempt's context. The target's epoch fence covers whatever is in flight at that moment.
type lease struct {
	mu      sync.Mutex
	details Progress
	expiry  time.Time
	timer   *time.Timer
	cancel  context.CancelCauseFunc
	// beat sends the details now and waits for the server's answer (nil outside an
	// activity with a heartbeat timeout).
	beat func() error
	done chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

// heartbeatClient is the part of the Temporal client a lease needs.
type heartbeatClient interface {
	RecordActivityHeartbeat(ctx context.Context, taskToken []byte, details ...any) error
}

// startLease starts heartbeating with p as details and returns the context the attempt must
// do its work in. It returns once the first heartbeat was acknowledged. Outside an activity
// with a heartbeat timeout it does nothing.
func startLease(ctx context.Context, p Progress) (context.Context, *lease, error) {
	l := &lease{details: p, done: make(chan struct{})}
	if !activity.IsActivity(ctx) || activity.GetInfo(ctx).HeartbeatTimeout <= 0 {
		return ctx, l, nil
	}
	info := activity.GetInfo(ctx)
	return l.start(ctx, activity.GetClient(ctx), info.TaskToken, info.HeartbeatTimeout)
}

func (l *lease) start(ctx context.Context, c heartbeatClient, token []byte, hbTimeout time.Duration) (context.Context, *lease, error) {
	wctx, cancel := context.WithCancelCause(ctx)
	l.cancel = cancel
	margin := min(hbTimeout/10, 200*time.Millisecond)
	valid := hbTimeout - margin
	interval := min(max(hbTimeout/5, 50*time.Millisecond), time.Second)
	// One heartbeat at a time: a ticker's beat that read older details must not reach the
	// server after updateNow's, or the server's last details would go back a part.
	var sending sync.Mutex
	beat := func() error {
		sending.Lock()
		defer sending.Unlock()
		sent := time.Now()
		cctx, ccancel := context.WithTimeout(ctx, hbTimeout/2)
		err := c.RecordActivityHeartbeat(cctx, token, l.progress())
		ccancel()
		if err != nil {
			return err
		}
		l.mu.Lock()
		l.expiry = sent.Add(valid)
		if l.timer == nil {
			l.timer = time.AfterFunc(valid, func() { cancel(ErrLeaseExpired) })
		} else {
			l.timer.Reset(time.Until(l.expiry))
		}
		l.mu.Unlock()
		return nil
	}
	l.beat = beat
	if err := beat(); err != nil {
		cancel(err)
		return wctx, l, fmt.Errorf("first heartbeat: %w", refused(err))
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-l.done:
				return
			case <-wctx.Done():
				return
			case <-t.C:
			}
			if err := beat(); err != nil {
				if r := refused(err); errors.Is(r, ErrTakenOver) {
					cancel(r)
					return
				}
				// Unreachable server: keep trying until the lease runs out.
			}
		}
	}()
	return context.WithValue(wctx, leaseKey{}, l), l, nil
}

type leaseKey struct{}

// expireIfDue ends the lease of ctx now if its expiry has passed. A process that was
// frozen (SIGSTOP, a paused container) wakes with the expiry timer and its writers racing;
// a writer's error is then reported as what it is, a lost lease.
func expireIfDue(ctx context.Context) {
	l, ok := ctx.Value(leaseKey{}).(*lease)
	if !ok {
		return
	}
	l.mu.Lock()
	due := !l.expiry.IsZero() && time.Now().After(l.expiry)
	l.mu.Unlock()
	if due && l.cancel != nil {
		l.cancel(ErrLeaseExpired)
	}
}

// refused maps a heartbeat error that means "stop, this attempt is over" to ErrTakenOver.
func refused(err error) error {
	var nf *serviceerror.NotFound
	var canceled *temporal.CanceledError
	if errors.As(err, &nf) || errors.As(err, &canceled) {
		return fmt.Errorf("%w: %v", ErrTakenOver, err)
	}
	return err
}

func (l *lease) update(p Progress) {
	l.mu.Lock()
	l.details = p
	l.mu.Unlock()
}

// updateNow sets the details and sends them at once: for a change of part that a lost
// agent's last heartbeat must tell (a fused push's quiesce → push → resume). It returns
// the server's answer (nil outside an activity with a heartbeat timeout): once it is nil,
// the server holds these details or later ones. A caller that may go on without that
// leaves the heartbeat to the ticker and the lease's expiry, as any other.
func (l *lease) updateNow(p Progress) error {
	l.update(p)
	if l.beat == nil {
		return nil
	}
	return l.beat()
}

func (l *lease) progress() Progress {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.details
}

// stop ends heartbeating; the context given by startLease is cancelled too.
func (l *lease) stop() {
	l.once.Do(func() {
		close(l.done)
		l.wg.Wait()
		l.mu.Lock()
		if l.timer != nil {
			l.timer.Stop()
		}
		l.mu.Unlock()
		if l.cancel != nil {
			l.cancel(context.Canceled)
		}
	})
}

// cause is why the lease's context ended, if it did because of the lease.
func leaseCause(ctx context.Context) error {
	c := context.Cause(ctx)
	if errors.Is(c, ErrLeaseExpired) || errors.Is(c, ErrTakenOver) {
		return c
	}
	return nil
}
