package dataplane

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// countingReaderAt counts the reads of a pack held in memory; gate, if set, holds each read
// until it is closed.
type countingReaderAt struct {
	data           []byte
	reads          atomic.Int64
	gate           chan struct{}
	inflight, peak atomic.Int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	c.reads.Add(1)
	in := c.inflight.Add(1)
	defer c.inflight.Add(-1)
	for {
		if old := c.peak.Load(); in <= old || c.peak.CompareAndSwap(old, in) {
			break
		}
	}
	if c.gate != nil {
		<-c.gate
	}
	if off >= int64(len(c.data)) {
		return 0, io.EOF
	}
	n := copy(p, c.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// spoolRead reads a range through the spool, remotely when it has no copy (as sftpPack does).
func spoolRead(t *testing.T, s *packSpool, remote *countingReaderAt, off, n int64) []byte {
	t.Helper()
	var out outBuf
	ok, err := s.spooledRange(off, n, &out)
	require.NoError(t, err)
	if ok {
		return out.Bytes()
	}
	b := make([]byte, n)
	_, err = remote.ReadAt(b, off)
	require.NoError(t, err)
	return b
}

// TestPackFilesSpool: a pack read often is copied whole into a file without a name, and later
// reads are served from it, byte for byte; large reads do not count, no directory copies
// nothing, and a copy that is closed half way leaves nothing behind.
func TestPackFilesSpool(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	data := randomData(rng, 5*spoolChunk+12344) // ends within a chunk
	dir := t.TempDir()

	remote := &countingReaderAt{data: data}
	s := newPackSpool(remote, dir)
	for range 10 { // large reads: the bytes cost more than the round trip
		spoolRead(t, s, remote, 0, spoolSmall)
	}
	require.Equal(t, spoolNone, stateOf(s))
	for i := range spoolAfter {
		off := rng.Int64N(int64(len(data)) - 4096)
		require.Equal(t, data[off:off+4096], spoolRead(t, s, remote, off, 4096), "read %d", i)
	}
	<-s.done
	require.Equal(t, spoolReady, s.state, "copied after %d small reads", spoolAfter)
	before := remote.reads.Load()
	for range 200 {
		off := rng.Int64N(int64(len(data)))
		n := 1 + rng.Int64N(min(int64(len(data))-off, spoolChunk/2))
		require.True(t, bytes.Equal(data[off:off+n], spoolRead(t, s, remote, off, n)), "%d+%d from the copy", off, n)
	}
	require.Equal(t, before, remote.reads.Load(), "reads after the copy went remote")
	var out outBuf
	ok, err := s.spooledRange(int64(len(data))-5, 10, &out)
	require.True(t, ok)
	require.Error(t, err, "a range past the pack's end")
	s.Close()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, entries, "the copy has no name")

	none := newPackSpool(remote, "")
	for range 2 * spoolAfter {
		spoolRead(t, none, remote, 0, 10)
	}
	require.Equal(t, spoolFailed, none.state, "no directory: never copied")

	// Closed while copying: the copy stops after the read under way.
	gated := &countingReaderAt{data: data, gate: make(chan struct{})}
	s = newPackSpool(gated, dir)
	for range spoolAfter {
		_, _ = s.spooledRange(0, 10, &out)
	}
	require.Equal(t, spoolCopying, stateOf(s))
	var wg sync.WaitGroup
	wg.Go(s.Close)
	require.Eventually(t, s.stopped, 5*time.Second, time.Millisecond)
	close(gated.gate)
	wg.Wait()
	require.Equal(t, spoolFailed, stateOf(s))
	require.LessOrEqual(t, gated.reads.Load(), int64(2), "the copy went on after Close")
	entries, err = os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, entries)

	// A failing remote: the copy is given up, reads stay remote.
	failing := newPackSpool(failingReaderAt{}, dir)
	for range spoolAfter {
		_, _ = failing.spooledRange(0, 10, &out)
	}
	<-failing.done
	require.Equal(t, spoolFailed, stateOf(failing))
	ok, _ = failing.spooledRange(0, 10, &out)
	require.False(t, ok)
}

type failingReaderAt struct{}

func (failingReaderAt) ReadAt([]byte, int64) (int, error) { return 0, errors.New("link down") }

func stateOf(s *packSpool) spoolState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// TestPackFilesSpoolCopiesBounded: at most spoolCopies copies read at once; the others wait
// for a slot and are made after them.
func TestPackFilesSpoolCopiesBounded(t *testing.T) {
	gated := &countingReaderAt{data: make([]byte, spoolChunk+100), gate: make(chan struct{})}
	dir := t.TempDir()
	var spools []*packSpool
	var out outBuf
	for range spoolCopies + 2 {
		s := newPackSpool(gated, dir)
		t.Cleanup(s.Close)
		for range spoolAfter {
			ok, err := s.spooledRange(0, 10, &out)
			require.False(t, ok)
			require.NoError(t, err)
		}
		spools = append(spools, s)
	}
	require.Eventually(t, func() bool { return gated.inflight.Load() == spoolCopies }, 5*time.Second, time.Millisecond)
	time.Sleep(100 * time.Millisecond)
	require.EqualValues(t, spoolCopies, gated.inflight.Load(), "more copies than slots")
	close(gated.gate)
	for _, s := range spools {
		<-s.done
		require.Equal(t, spoolReady, stateOf(s))
	}
	require.EqualValues(t, spoolCopies, gated.peak.Load())
}
