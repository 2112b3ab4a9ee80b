package activities

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/api/serviceerror"
)

// fakeServer acknowledges heartbeats until told otherwise.
type fakeServer struct {
	mu    sync.Mutex
	err   error
	block time.Duration
	beats atomic.Int64
	last  atomic.Value
}

func (f *fakeServer) RecordActivityHeartbeat(ctx context.Context, _ []byte, details ...any) error {
	f.mu.Lock()
	err, block := f.err, f.block
	f.mu.Unlock()
	if block > 0 { // a cut-off connection: the call hangs until its deadline
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(block):
		}
	}
	if err == nil {
		f.beats.Add(1)
		f.last.Store(details[0])
	}
	return err
}

func (f *fakeServer) set(err error, block time.Duration) {
	f.mu.Lock()
	f.err, f.block = err, block
	f.mu.Unlock()
}

func TestLeaseKeepsContextWhileAcknowledged(t *testing.T) {
	srv := &fakeServer{}
	l := &lease{details: Progress{Step: "pull"}, done: make(chan struct{})}
	ctx, l, err := l.start(context.Background(), srv, nil, 500*time.Millisecond)
	require.NoError(t, err)
	l.update(Progress{Step: "pull", FilesDone: 7})
	time.Sleep(time.Second)
	require.NoError(t, ctx.Err(), "lease renewed by acknowledged heartbeats")
	assert.GreaterOrEqual(t, srv.beats.Load(), int64(5))
	assert.Equal(t, int64(7), srv.last.Load().(Progress).FilesDone, "heartbeats carry the latest progress")
	l.stop()
	assert.Error(t, ctx.Err(), "stop ends the attempt's context")
}

// Cut off from the server (heartbeats hang): the context ends by the heartbeat timeout
// after the last acknowledged heartbeat was sent, before the server can hand the step on.
func TestLeaseExpiresWhenCutOff(t *testing.T) {
	srv := &fakeServer{}
	hb := 500 * time.Millisecond
	l := &lease{done: make(chan struct{})}
	ctx, l, err := l.start(context.Background(), srv, nil, hb)
	require.NoError(t, err)
	defer l.stop()
	time.Sleep(200 * time.Millisecond)
	cut := time.Now()
	srv.set(errors.New("unavailable"), time.Hour)
	select {
	case <-ctx.Done():
	case <-time.After(3 * hb):
		t.Fatal("lease did not expire")
	}
	assert.ErrorIs(t, context.Cause(ctx), ErrLeaseExpired)
	assert.Less(t, time.Since(cut), hb, "expired within one heartbeat timeout of the cut")
	assert.ErrorIs(t, leaseCause(ctx), ErrLeaseExpired)
}

// A heartbeat refused with NotFound (the step timed out and was handed on) ends the
// attempt at once.
func TestLeaseEndsWhenHeartbeatRefused(t *testing.T) {
	srv := &fakeServer{}
	l := &lease{done: make(chan struct{})}
	ctx, l, err := l.start(context.Background(), srv, nil, 2*time.Second)
	require.NoError(t, err)
	defer l.stop()
	srv.set(serviceerror.NewNotFound("activity not found"), 0)
	select {
	case <-ctx.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("refused heartbeat did not end the attempt")
	}
	assert.ErrorIs(t, context.Cause(ctx), ErrTakenOver)
}

func TestLeaseFirstHeartbeatMustSucceed(t *testing.T) {
	srv := &fakeServer{err: serviceerror.NewNotFound("gone")}
	l := &lease{done: make(chan struct{})}
	_, _, err := l.start(context.Background(), srv, nil, time.Second)
	assert.ErrorIs(t, err, ErrTakenOver)
}

// A process that wakes after its lease ran out (SIGSTOP, a paused container) reports a
// writer's error as the lost lease, even before the expiry timer has fired.
func TestClassifyReportsLeaseDueOnWake(t *testing.T) {
	srv := &fakeServer{}
	l := &lease{details: Progress{Step: "pull"}, done: make(chan struct{})}
	ctx, l, err := l.start(context.Background(), srv, nil, 10*time.Second)
	require.NoError(t, err)
	defer l.stop()
	require.NoError(t, ctx.Err(), "lease valid")

	l.mu.Lock()
	l.expiry = time.Now().Add(-time.Millisecond) // as seen by a process that slept past it
	l.mu.Unlock()
	got := classify(ctx, "pull", errors.New("rename staging/x: no such file or directory"), Progress{})
	require.ErrorIs(t, got, ErrLeaseExpired)
	assert.Contains(t, got.Error(), "pull stopped")
}

// overlapServer counts heartbeats in flight at once; each takes a while.
type overlapServer struct {
	inFlight, most atomic.Int64
}

func (o *overlapServer) RecordActivityHeartbeat(context.Context, []byte, ...any) error {
	n := o.inFlight.Add(1)
	for m := o.most.Load(); n > m && !o.most.CompareAndSwap(m, n); m = o.most.Load() {
	}
	time.Sleep(5 * time.Millisecond)
	o.inFlight.Add(-1)
	return nil
}

// Heartbeats go one at a time, so a beat that read older details never reaches the server
// after updateNow's: once updateNow returned nil, the server's last details are its own or
// newer (what a fused push's thaw relies on).
func TestLeaseHeartbeatsOneAtATime(t *testing.T) {
	srv := &overlapServer{}
	l := &lease{details: Progress{Step: StepPush}, done: make(chan struct{})}
	_, l, err := l.start(context.Background(), srv, nil, 300*time.Millisecond)
	require.NoError(t, err)
	defer l.stop()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			assert.NoError(t, l.updateNow(Progress{Step: StepResume, FilesDone: int64(i)}))
		}()
	}
	wg.Wait()
	time.Sleep(100 * time.Millisecond) // and the ticker's beats beside them
	assert.EqualValues(t, 1, srv.most.Load(), "heartbeats in flight at once")
}
