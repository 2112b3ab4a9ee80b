package dataplane

// Remote packs fetched whole (issue 16). A pull reads one content per small file, and over
// SFTP each read is a round trip: with a 2-ms round trip, 8 writers pulled 16,000 files of
// 4 KiB at a fifth of rsync's rate. The contents a pull reads next are not next in the pack:
// the push writes the files of many directories at once, the pull writes a directory at a
// time, so its reads land all over each pack (measured: median distance 2 MB between two
// reads of one 20-MiB pack). What a full or large pull does read is most of each pack. So
// once a remote pack handle has served spoolAfter small reads, it copies the whole pack in
// large reads (bandwidth, not round trips) into an unnamed file in the agent's client dir,
// and serves the later reads from there; reads go on over SFTP until the copy is done. A
// pull that reads a few contents of a pack (a small change) never gets there.

import (
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"github.com/kopia/kopia/repo/blob"
	"golang.org/x/sys/unix"
)

const (
	// spoolAfter is how many small reads of one pack handle start its copy: 1–3 % of the
	// contents of a 10- or 20-MiB pack of 4-KiB files.
	spoolAfter = 64
	// spoolSmall is a read whose round trip costs more than its bytes.
	spoolSmall = 64 << 10
	// spoolChunk is the copy's read size (pkg/sftp sends it as concurrent requests).
	spoolChunk = 2 << 20
	// spoolCopies is how many copies run at once in an agent: each holds a chunk, and
	// more would only share the link.
	spoolCopies = 4
)

// spoolSlots holds a place for each copy under way.
var spoolSlots = make(chan struct{}, spoolCopies)

// smallReads counts a pack handle's small reads: the rule by which a pack is read often
// enough to fetch whole, copied (remote, here) or read ahead by the kernel (local,
// packfiles.go).
type smallReads struct{ n atomic.Int32 }

// often counts a read of length and tells whether it is the one that makes the pack read
// often (true once).
func (c *smallReads) often(length int64) bool {
	return length < spoolSmall && c.n.Add(1) == spoolAfter
}

// packSpool is the local copy of one remote pack, made once the pack is read often.
type packSpool struct {
	remote io.ReaderAt
	dir    string // where the copy is made; "" never copies

	reads smallReads

	mu    sync.Mutex
	state spoolState
	local *os.File      // the copy, once state is spoolReady
	done  chan struct{} // closed when the copy ends (made or given up)

	stop     chan struct{} // closed by Close: the copy gives up
	stopOnce sync.Once
}

type spoolState int

const (
	spoolNone spoolState = iota
	spoolCopying
	spoolReady
	spoolFailed
)

func newPackSpool(remote io.ReaderAt, dir string) *packSpool {
	s := &packSpool{remote: remote, dir: dir, stop: make(chan struct{})}
	if dir == "" {
		s.state = spoolFailed
	}
	return s
}

// readLocal returns the copy to read length bytes from, or nil: read remotely. It counts the
// read and starts the copy once the pack has been read often enough.
func (s *packSpool) readLocal(length int64) *os.File {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case spoolReady:
		return s.local
	case spoolNone:
		if s.reads.often(length) {
			s.state = spoolCopying
			s.done = make(chan struct{})
			go s.copy()
		}
	}
	return nil
}

// copy copies the whole pack into an unnamed local file, once a slot is free.
func (s *packSpool) copy() {
	defer close(s.done)
	select {
	case spoolSlots <- struct{}{}:
		defer func() { <-spoolSlots }()
	case <-s.stop:
		s.setFailed()
		return
	}
	f, err := unnamedFile(s.dir)
	if err == nil {
		err = s.copyInto(f)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil || s.stopped() {
		s.state = spoolFailed
		if f != nil {
			_ = f.Close()
		}
		return
	}
	s.local, s.state = f, spoolReady
}

func (s *packSpool) copyInto(f *os.File) error {
	buf := make([]byte, spoolChunk)
	for off := int64(0); ; off += int64(len(buf)) {
		if s.stopped() {
			return errors.New("closed")
		}
		n, err := s.remote.ReadAt(buf, off)
		if n > 0 {
			if _, werr := f.WriteAt(buf[:n], off); werr != nil {
				return werr
			}
		}
		if n < len(buf) {
			if err == nil || errors.Is(err, io.EOF) {
				return nil // the pack ends here
			}
			return err
		}
	}
}

// Close ends a copy under way and closes the local copy; call it before closing the remote
// file.
func (s *packSpool) Close() {
	s.stopOnce.Do(func() { close(s.stop) })
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	if done != nil {
		<-done
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.local != nil {
		_ = s.local.Close()
		s.local = nil
	}
	s.state = spoolFailed
}

func (s *packSpool) stopped() bool {
	select {
	case <-s.stop:
		return true
	default:
		return false
	}
}

func (s *packSpool) setFailed() {
	s.mu.Lock()
	s.state = spoolFailed
	s.mu.Unlock()
}

// unnamedFile is a file in dir that has no name, so nothing is left behind whatever happens
// to the agent (O_TMPFILE; where the filesystem lacks it, a file removed at once).
func unnamedFile(dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err == nil {
		return os.NewFile(uintptr(fd), dir+"/(spooled pack)"), nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EISDIR) {
		return nil, &os.PathError{Op: "open O_TMPFILE", Path: dir, Err: err}
	}
	f, err := os.CreateTemp(dir, ".pack-spool-*")
	if err != nil {
		return nil, err
	}
	if err := os.Remove(f.Name()); err != nil {
		_ = f.Close()
		return nil, err
	}
	return f, nil
}

// spooledRange reads the range from the local copy when there is one; false: read it remotely.
func (s *packSpool) spooledRange(offset, length int64, out blob.OutputBuffer) (bool, error) {
	f := s.readLocal(length)
	if f == nil {
		return false, nil
	}
	return true, osPack{f}.readRange(offset, length, out)
}
