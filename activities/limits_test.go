package activities

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"
)

func TestSlotsBoundRunningStepsInOrder(t *testing.T) {
	var l limits
	r1, err := l.acquire(context.Background(), 2, func(int, int) { t.Fatal("first step waited") })
	require.NoError(t, err)
	r2, err := l.acquire(context.Background(), 2, func(int, int) { t.Fatal("second step waited") })
	require.NoError(t, err)

	acquired := make(chan int)
	var wg sync.WaitGroup
	waiting := make(chan [2]int, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rel, err := l.acquire(context.Background(), 2, func(running, ahead int) { waiting <- [2]int{running, ahead} })
			require.NoError(t, err)
			acquired <- i
			rel()
		}()
		require.Equal(t, [2]int{2, i}, <-waiting, "step %d waits behind 2 running and %d queued", i, i)
	}
	require.Equal(t, 2, l.inUse())
	r1()
	r1() // a second release is a no-op
	require.Equal(t, 0, <-acquired, "first come, first served")
	r2()
	require.Equal(t, 1, <-acquired)
	wg.Wait()
	require.Equal(t, 0, l.inUse())
}

func TestSlotWaitEndsWithContext(t *testing.T) {
	var l limits
	rel, err := l.acquire(context.Background(), 1, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancelCause(context.Background())
	done := make(chan error)
	go func() {
		_, err := l.acquire(ctx, 1, func(int, int) { cancel(errors.New("lease lost")) })
		done <- err
	}()
	require.EqualError(t, <-done, "lease lost")
	rel()
	require.Equal(t, 0, l.inUse(), "the cancelled waiter holds no slot")
	rel2, err := l.acquire(context.Background(), 1, func(int, int) { t.Fatal("waited for a free slot") })
	require.NoError(t, err)
	rel2()
}

func TestByteLimitsStricterWins(t *testing.T) {
	var l limits
	host := l.hostLimiter(1 << 20)
	require.Same(t, host, l.hostLimiter(1<<20), "one bucket per agent")
	require.Same(t, host, l.hostLimiter(2<<20), "a changed rate changes the bucket, not the sharing")
	require.Equal(t, rate.Limit(2<<20), host.Limit())
	require.Nil(t, l.hostLimiter(0))

	// Job 256 KiB/s, host 2 MiB/s: 512 KiB take about 2 s less the job bucket's burst.
	b := byteLimits{rate.NewLimiter(256<<10, burst(256<<10)), host}
	start := time.Now()
	require.NoError(t, b.WaitN(context.Background(), 512<<10))
	took := time.Since(start)
	floor := time.Duration(float64(512<<10-burst(256<<10)) / (256 << 10) * float64(time.Second))
	t.Logf("512 KiB through job 256KiB/s + host 2MiB/s took %s (floor %s)", took.Round(time.Millisecond), floor)
	require.GreaterOrEqual(t, took, floor)
}
