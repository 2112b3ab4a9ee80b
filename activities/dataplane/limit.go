package dataplane

import (
	"context"
	"os"

	"github.com/kopia/kopia/fs"
)

// Limiter bounds the bytes a step moves: WaitN blocks until n more bytes may pass (or ctx
// ends). The data plane knows nothing of where the limit comes from (a job's or a host's
// bandwidth in the config); nil means unlimited. A push waits for what it read from the
// source, a pull for what it writes to the target.
type Limiter interface {
	WaitN(ctx context.Context, n int) error
}

// limitedSource is a source file whose reads pass a Limiter. It wraps the *os.File rather
// than embedding it: an embedded file's WriteTo/ReadFrom would let io.Copy bypass Read.
type limitedSource struct {
	file *os.File
	f    sourceFile
	ctx  context.Context
	lim  Limiter
}

func (r *limitedSource) Read(p []byte) (int, error) {
	n, err := r.file.Read(p)
	if n > 0 {
		if werr := r.lim.WaitN(r.ctx, n); werr != nil && err == nil {
			err = werr
		}
	}
	return n, err
}

func (r *limitedSource) Seek(off int64, whence int) (int64, error) {
	return r.file.Seek(off, whence)
}

func (r *limitedSource) Close() error { return r.file.Close() }

// Entry is the file as listed, as for sourceReader.
func (r *limitedSource) Entry() (fs.Entry, error) { return r.f, nil }

// waitBytes passes n bytes through lim (nil: at once).
func waitBytes(ctx context.Context, lim Limiter, n int) error {
	if lim == nil || n <= 0 {
		return nil
	}
	return lim.WaitN(ctx, n)
}
