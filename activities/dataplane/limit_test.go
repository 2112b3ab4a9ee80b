package dataplane

import (
	"context"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"
)

// countingLimiter is a token bucket (rate.Limiter, waits split to its burst) that counts
// the bytes it let through.
type countingLimiter struct {
	l *rate.Limiter
	n atomic.Int64
}

func (c *countingLimiter) WaitN(ctx context.Context, n int) error {
	c.n.Add(int64(n))
	for n > 0 {
		chunk := min(n, c.l.Burst())
		if err := c.l.WaitN(ctx, chunk); err != nil {
			return err
		}
		n -= chunk
	}
	return nil
}

// TestBandwidthLimitsPushAndPull measures a push and a pull of 8 MiB under a 4 MiB/s
// limit. A limiter's correctness is a lower bound: moving N bytes at L bytes/s takes at
// least (N - burst) / L. No upper bound is asserted (the machine may be slow).
func TestBandwidthLimitsPushAndPull(t *testing.T) {
	const (
		size  = 8 << 20
		limit = 4 << 20
		burst = 512 << 10
	)
	e := newEnv(t)
	for i := range 4 {
		writeFile(t, filepath.Join(e.src, fmt.Sprintf("f%d", i)), randBytes(t, size/4), 0o644, time.Now().Add(-time.Hour))
	}
	floor := time.Duration(float64(size-burst) / limit * float64(time.Second))

	pushLim := &countingLimiter{l: rate.NewLimiter(limit, burst)}
	start := time.Now()
	res, err := e.repos.Push(context.Background(), PushRequest{Repo: e.cfg, Job: e.job, SourceDir: e.src, Dataset: e.ds, Limiter: pushLim}, nil)
	require.NoError(t, err)
	took := time.Since(start)
	t.Logf("push: %d bytes read through the limiter in %s: %.2f MiB/s (limit %d MiB/s, floor %s)", pushLim.n.Load(), took.Round(time.Millisecond), float64(pushLim.n.Load())/(1<<20)/took.Seconds(), limit>>20, floor.Round(time.Millisecond))
	require.GreaterOrEqual(t, pushLim.n.Load(), int64(size), "the push read every source byte through the limiter")
	require.GreaterOrEqual(t, took, floor, "the push read faster than the limit")

	pullLim := &countingLimiter{l: rate.NewLimiter(limit, burst)}
	req := e.pullReq(res.ImageID, "r1")
	req.Limiter = pullLim
	start = time.Now()
	_, err = e.repos.Pull(context.Background(), req, nil)
	require.NoError(t, err)
	took = time.Since(start)
	t.Logf("pull: %d bytes written through the limiter in %s: %.2f MiB/s (limit %d MiB/s, floor %s)", pullLim.n.Load(), took.Round(time.Millisecond), float64(pullLim.n.Load())/(1<<20)/took.Seconds(), limit>>20, floor.Round(time.Millisecond))
	require.GreaterOrEqual(t, pullLim.n.Load(), int64(size), "the pull wrote every byte through the limiter")
	require.GreaterOrEqual(t, took, floor, "the pull wrote faster than the limit")
	requireSameTree(t, e.src, e.replicaDir())
}

// TestBandwidthLimiterStopsWithContext: a push waiting on its limiter ends with its context.
func TestBandwidthLimiterStopsWithContext(t *testing.T) {
	e := newEnv(t)
	writeFile(t, filepath.Join(e.src, "big"), randBytes(t, 4<<20), 0o644, time.Now().Add(-time.Hour))
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := e.repos.Push(ctx, PushRequest{Repo: e.cfg, Job: e.job, SourceDir: e.src, Dataset: e.ds, Limiter: &countingLimiter{l: rate.NewLimiter(64<<10, 64<<10)}}, nil)
	require.Error(t, err)
	require.Less(t, time.Since(start), 30*time.Second)
}
