package dataplane

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/kopia/kopia/fs"
	"golang.org/x/sys/unix"
)

// sourceReader reads a source file through the descriptor sourceFile.Open checked, up to
// the size it was listed with (and found with at the open), by pread(2). It is no *os.File:
// making one costs an fcntl and a finalizer a file, and clearing the open's O_NONBLOCK two
// more fcntls; with the EOF read that a size-blind reader needs, that was four of a small
// file's ten syscalls in a push. O_NONBLOCK does nothing to a regular file's reads (open(2));
// should a file system answer EAGAIN all the same, the flag is cleared then and the read
// retried.
//
// Reads stop at the listed size: the image's entry takes the file's size and mtime from the
// listing and its content from these reads, so a file that grows after the open is taken as
// it was listed. A file that shrinks ends early, as it would have before.
type sourceReader struct {
	fd        int
	off, size int64
	f         sourceFile
	// ctx and lim pass every read through the step's Limiter (nil: unlimited).
	ctx context.Context
	lim Limiter
	// blocking is set once O_NONBLOCK has been cleared.
	blocking bool
}

func (r *sourceReader) Read(p []byte) (int, error) {
	if r.fd < 0 {
		return 0, fmt.Errorf("source %s: read after close", ShowPath(r.f.rel))
	}
	if r.off >= r.size {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if rest := r.size - r.off; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := r.pread(p)
	if n > 0 {
		r.off += int64(n)
		if werr := waitBytes(r.ctx, r.lim, n); werr != nil {
			return n, werr
		}
	}
	switch {
	case err != nil:
		return n, fmt.Errorf("source %s: %w", ShowPath(r.f.rel), err)
	case n == 0 || r.off >= r.size:
		return n, io.EOF
	}
	return n, nil
}

func (r *sourceReader) pread(p []byte) (int, error) {
	for {
		n, err := unix.Pread(r.fd, p, r.off)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN) && !r.blocking:
			fl, ferr := unix.FcntlInt(uintptr(r.fd), unix.F_GETFL, 0)
			if ferr == nil {
				_, ferr = unix.FcntlInt(uintptr(r.fd), unix.F_SETFL, fl&^unix.O_NONBLOCK)
			}
			if ferr != nil {
				return 0, ferr
			}
			r.blocking = true
			continue
		}
		return max(n, 0), err
	}
}

// Seek moves where the next read starts (kopia seeks to the part of a large file it
// uploads in parallel).
func (r *sourceReader) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += r.off
	case io.SeekEnd:
		off += r.size
	default:
		return r.off, fmt.Errorf("source %s: seek whence %d", ShowPath(r.f.rel), whence)
	}
	if off < 0 {
		return r.off, fmt.Errorf("source %s: seek to %d", ShowPath(r.f.rel), off)
	}
	r.off = off
	return off, nil
}

func (r *sourceReader) Close() error {
	if r.fd < 0 {
		return nil
	}
	fd := r.fd
	r.fd = -1
	return unix.Close(fd)
}

// Entry is the file as listed (kopia's uploader takes metadata from the listing).
func (r *sourceReader) Entry() (fs.Entry, error) { return r.f, nil }
