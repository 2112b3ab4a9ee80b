package dataplane

import "context"

// Limiter bounds the bytes a step moves: WaitN blocks until n more bytes may pass (or ctx
// ends). The data plane knows nothing of where the limit comes from (a job's or a host's
// bandwidth in the config); nil means unlimited. A push waits for what it read from the
// source, a pull for what it writes to the target.
type Limiter interface {
	WaitN(ctx context.Context, n int) error
}

// waitBytes passes n bytes through lim (nil: at once).
func waitBytes(ctx context.Context, lim Limiter, n int) error {
	if lim == nil || n <= 0 {
		return nil
	}
	return lim.WaitN(ctx, n)
}
