package dataplane

import (
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// Every flushEvery bytes of small files ask for one syncfs; asks while one waits to start
// are one ask.
func TestFlusherKicksEveryFlushEvery(t *testing.T) {
	f := &flusher{kicks: make(chan struct{}, 1)} // no goroutine: the asks stay queued
	f.add(flushEvery - 1)
	require.Empty(t, f.kicks)
	f.add(1)
	require.Len(t, f.kicks, 1)
	f.add(flushEvery)
	f.kick()
	require.Len(t, f.kicks, 1, "one syncfs waiting to start is enough")
	require.Zero(t, f.pending.Load())

	<-f.kicks
	f.add(flushRest - 1)
	f.finish()
	require.Empty(t, f.kicks, "the end of the writes leaves less than flushRest to the publish's syncfs")
	f.add(1)
	f.finish()
	require.Len(t, f.kicks, 1, "and starts a syncfs for flushRest or more")
	require.Zero(t, f.pending.Load())

	var none *flusher // no flusher (hook, or the dir could not be opened again): no-ops
	none.add(flushEvery)
	none.kick()
	none.finish()
	none.stop()
}

// A flusher syncs through an fd of its own and closes it when stopped.
func TestFlusherStops(t *testing.T) {
	dir, err := unix.Open(t.TempDir(), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	require.NoError(t, err)
	defer unix.Close(dir) //nolint:errcheck
	f := startFlusher(dir)
	require.NotNil(t, f)
	require.NotEqual(t, dir, f.fd)
	f.kick()
	f.stop()
	f.stop() // idempotent
	var st unix.Stat_t
	require.ErrorIs(t, unix.Fstat(f.fd, &st), unix.EBADF, "the flusher's fd is closed")
	require.NoError(t, unix.Fstat(dir, &st), "the staging dir's fd stays open")
}
