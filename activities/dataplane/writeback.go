package dataplane

import (
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Writeback during a pull. With the kernel's default dirty ratios a host with GiBs of
// memory starts no writeback while a pull writes a few GiB, so every byte waited for the
// syncfs before publish (1.1-1.2 s of an in-process pull of A, 1.7 s of B). A pull starts
// it as it goes instead: a file of writebackMin or more as soon as it is written
// (startWriteback); smaller files through a syncfs in the background once flushEvery of
// them are written and once every file is, if flushRest or more are left (flusher), where
// a syscall per file would cost more than the overlap gives.

// writebackMin is the size from which a written file's writeback starts at once.
const writebackMin = 256 << 10

// flushEvery is how many bytes of smaller files make the flusher start a syncfs.
const flushEvery = 64 << 20

// startWriteback asks the kernel to start writing fd's dirty pages now
// (sync_file_range(SYNC_FILE_RANGE_WRITE), which does not wait for them). It is a hint: an
// error is left to the syncfs before publish, which reports every writeback error of the
// filesystem since the staging dir was opened (sync_file_range without a wait flag does
// not consume it).
func startWriteback(fd int) {
	_ = unix.SyncFileRange(fd, 0, 0, unix.SYNC_FILE_RANGE_WRITE)
}

// flusher runs syncfs(2) on a goroutine of its own when asked, through an fd of its own:
// syncfs reports a writeback error once per open file, and the syncfs before publish must
// still see every error, so the flusher's results are dropped and never consume it.
type flusher struct {
	fd      int
	pending atomic.Int64
	kicks   chan struct{}
	stopped chan struct{}
	once    sync.Once
}

// startFlusher opens dirFd's directory again for a flusher; nil (no flusher) if it cannot.
func startFlusher(dirFd int) *flusher {
	fd, err := unix.Openat(dirFd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	f := &flusher{fd: fd, kicks: make(chan struct{}, 1), stopped: make(chan struct{})}
	go f.run()
	return f
}

func (f *flusher) run() {
	defer close(f.stopped)
	defer unix.Close(f.fd) //nolint:errcheck
	for range f.kicks {
		_ = unix.Syncfs(f.fd)
	}
}

// add counts n bytes written to a small file; every flushEvery of them start a syncfs.
func (f *flusher) add(n int64) {
	if f == nil {
		return
	}
	if f.pending.Add(n) >= flushEvery {
		f.pending.Store(0)
		f.kick()
	}
}

// flushRest is how many bytes of small files, written since the last syncfs, make the end
// of the writes start one: below it a pull's syncfs before publish is short anyway, and a
// syncfs more is a journal commit and a disk cache flush more (an empty run's pull).
const flushRest = 4 << 20

// finish starts a syncfs of what the writes left, unless that is less than flushRest.
func (f *flusher) finish() {
	if f == nil || f.pending.Load() < flushRest {
		return
	}
	f.pending.Store(0)
	f.kick()
}

// kick starts a syncfs unless one is already waiting to start.
func (f *flusher) kick() {
	if f == nil {
		return
	}
	select {
	case f.kicks <- struct{}{}:
	default:
	}
}

// stop waits for a syncfs under way and ends the flusher (idempotent).
func (f *flusher) stop() {
	if f == nil {
		return
	}
	f.once.Do(func() { close(f.kicks) })
	<-f.stopped
}
