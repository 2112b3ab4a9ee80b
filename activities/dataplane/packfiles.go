package dataplane

// Pack files kept open (issue 16). kopia's filesystem storage opens, seeks, reads and closes
// the pack file for every content it reads, and a pull reads one content per small file: in
// a full pull of 200,000 files (TestMeasurePushPull) about a quarter of the CPU went to
// those opens and closes and to the os.File each one allocates. A repository on a mounted
// filesystem is therefore connected as storage type replctl-filesystem: kopia's filesystem
// storage, whose reads of a range of a pack blob go through a few pack files kept open.
//
// kopia names pack blobs by session and counter and never writes one again under the same
// name, so an open pack file holds the blob's bytes for as long as it is open. A pack that
// maintenance deletes stays readable through it, and its space stays in use until it is
// closed: files are closed once unused for packIdle, and when the blob is deleted here.
// Anything unusual (a missing blob, a range past the end, an error) is read again through
// kopia's storage, which says what is wrong and retries what may pass.
//
// A repository reached over SFTP (remote.go) reads through the same cache of open remote
// files: there each open and close is a round trip to the host.

import (
	"context"
	"os"
	"sync"
	"time"

	"github.com/kopia/kopia/repo/blob"
	"github.com/kopia/kopia/repo/blob/filesystem"
	"golang.org/x/sys/unix"
)

// localStorageType is the kopia storage type of a repository on a mounted filesystem.
const localStorageType = "replctl-filesystem"

const (
	// packFilesOpen is how many pack files a repository keeps open: a pull's writers read
	// the packs of the files they write, mostly in the order the push wrote them.
	packFilesOpen = 16
	// packIdle is how long an unused pack file stays open.
	packIdle = 5 * time.Second
	// packReadChunk is the buffer a range is read through.
	packReadChunk = 64 << 10
)

func init() {
	blob.AddSupportedStorage(localStorageType, filesystem.Options{}, newLocalStorage)
}

// shardedPaths is what kopia's sharded storages (filesystem, ours over SFTP) tell of where
// a blob is.
type shardedPaths interface {
	GetShardedPathAndFilePath(ctx context.Context, id blob.ID) (shardPath, filePath string, err error)
}

// packHandle is an open pack blob: local file or SFTP handle.
type packHandle interface {
	// readRange writes length bytes at offset to out; a short read is an error.
	readRange(offset, length int64, out blob.OutputBuffer) error
	Close() error
}

// packOpener opens pack blob id for reading; an error sends the read through kopia.
type packOpener func(ctx context.Context, id blob.ID) (packHandle, error)

// newLocalStorage opens kopia's filesystem storage at opts.Path with pack reads through
// open files.
func newLocalStorage(ctx context.Context, opts *filesystem.Options, isCreate bool) (blob.Storage, error) {
	st, err := filesystem.New(ctx, opts, isCreate)
	if err != nil {
		return nil, err
	}

	paths, ok := st.(shardedPaths)
	if !ok { // another kopia version: no pack files kept open
		return st, nil
	}

	open := func(ctx context.Context, id blob.ID) (packHandle, error) {
		_, p, err := paths.GetShardedPathAndFilePath(ctx, id)
		if err != nil {
			return nil, err
		}

		f, err := os.Open(p) //nolint:gosec // a blob's path in the repository, from kopia
		if err != nil {
			return nil, err
		}

		return &localPack{osPack: osPack{f}}, nil
	}

	return withPackFiles(st, open, localStorageType), nil
}

// withPackFiles wraps st so that range reads of pack blobs go through handles from open;
// typ, if set, is the storage type its client configs name.
func withPackFiles(st blob.Storage, open packOpener, typ string) *packFiles {
	return &packFiles{Storage: st, open: open, typ: typ, files: map[blob.ID]*packFile{}}
}

// packFiles is a storage with pack reads through open handles.
type packFiles struct {
	blob.Storage

	open packOpener
	typ  string

	mu     sync.Mutex
	files  map[blob.ID]*packFile
	tick   uint64
	sweep  *time.Timer
	closed bool
}

type packFile struct {
	h    packHandle
	refs int
	used uint64    // tick of the last use, for eviction
	at   time.Time // time of the last release
}

// packBlob tells whether id names a pack blob (file contents 'p', metadata 'q').
func packBlob(id blob.ID) bool {
	return len(id) > 1 && (id[0] == 'p' || id[0] == 'q')
}

// ConnectionInfo is the wrapped storage's, under this storage's type if it has its own, so
// that the client config opens the repository through packFiles again.
func (s *packFiles) ConnectionInfo() blob.ConnectionInfo {
	ci := s.Storage.ConnectionInfo()
	if s.typ != "" {
		ci.Type = s.typ
	}

	return ci
}

// GetBlob reads a range of a pack through its open handle, anything else through kopia. A
// failed read drops the handle and is read again through kopia, which names the fault.
func (s *packFiles) GetBlob(ctx context.Context, id blob.ID, offset, length int64, output blob.OutputBuffer) error {
	if length <= 0 || offset < 0 || !packBlob(id) {
		return s.Storage.GetBlob(ctx, id, offset, length, output)
	}

	pf := s.acquire(ctx, id)
	if pf == nil {
		return s.Storage.GetBlob(ctx, id, offset, length, output)
	}

	err := pf.h.readRange(offset, length, output)
	s.release(id, pf, err != nil)

	if err != nil {
		return s.Storage.GetBlob(ctx, id, offset, length, output)
	}

	return nil
}

// DeleteBlob deletes through kopia and closes the blob's handle, so its space is freed.
func (s *packFiles) DeleteBlob(ctx context.Context, id blob.ID) error {
	s.forget(id)

	return s.Storage.DeleteBlob(ctx, id)
}

// PutBlob writes through kopia. kopia does not write a pack again under its name; should it,
// later reads open the new file.
func (s *packFiles) PutBlob(ctx context.Context, id blob.ID, data blob.Bytes, opts blob.PutOptions) error {
	s.forget(id)

	return s.Storage.PutBlob(ctx, id, data, opts)
}

// forget drops id's handle from the cache; the last reader closes a handle in use.
func (s *packFiles) forget(id blob.ID) {
	s.mu.Lock()
	h := s.dropLocked(id)
	s.mu.Unlock()

	closeHandles(h)
}

// dropLocked removes id from the cache and returns its handle to close, or nil when there is
// none or a reader still holds it (release closes it then). s.mu is held.
func (s *packFiles) dropLocked(id blob.ID) packHandle {
	pf := s.files[id]
	if pf == nil {
		return nil
	}

	delete(s.files, id)

	if pf.refs > 0 {
		return nil
	}

	return pf.h
}

// closeHandles closes hs outside the cache's lock: an SFTP close is a round trip.
func closeHandles(hs ...packHandle) {
	for _, h := range hs {
		if h != nil {
			_ = h.Close()
		}
	}
}

// Close closes every handle, then the wrapped storage.
func (s *packFiles) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	var hs []packHandle
	for id := range s.files {
		hs = append(hs, s.dropLocked(id))
	}
	if s.sweep != nil {
		s.sweep.Stop()
	}
	s.mu.Unlock()

	closeHandles(hs...)

	return s.Storage.Close(ctx)
}

// acquire returns id's open handle (opening it), or nil: read it through kopia.
func (s *packFiles) acquire(ctx context.Context, id blob.ID) *packFile {
	s.mu.Lock()
	s.tick++
	if pf := s.files[id]; pf != nil {
		pf.refs++
		pf.used = s.tick
		s.mu.Unlock()

		return pf
	}
	s.mu.Unlock()

	h, err := s.open(ctx, id)
	if err != nil {
		return nil
	}

	s.mu.Lock()
	if other := s.files[id]; other != nil { // opened meanwhile by another reader
		other.refs++
		other.used = s.tick
		s.mu.Unlock()
		closeHandles(h)

		return other
	}

	pf := &packFile{h: h, refs: 1, used: s.tick}
	var evicted packHandle
	keep := !s.closed
	if keep && len(s.files) >= packFilesOpen {
		evicted, keep = s.evictLocked()
	}
	if keep {
		s.files[id] = pf
	}
	s.mu.Unlock()
	closeHandles(evicted)

	return pf
}

// evictLocked drops the least recently used idle handle and returns it to close; false:
// every handle is in use, so the caller's is not kept. s.mu is held.
func (s *packFiles) evictLocked() (packHandle, bool) {
	var (
		oldest blob.ID
		found  bool
	)

	for id, pf := range s.files {
		if pf.refs == 0 && (!found || pf.used < s.files[oldest].used) {
			oldest, found = id, true
		}
	}

	if !found {
		return nil, false
	}

	return s.dropLocked(oldest), true
}

// release ends a read of id through pf; a handle not (or no longer) kept, or one that
// failed, is closed.
func (s *packFiles) release(id blob.ID, pf *packFile, failed bool) {
	s.mu.Lock()
	pf.refs--
	if failed && s.files[id] == pf {
		delete(s.files, id)
	}
	if s.files[id] != pf {
		last := pf.refs == 0 // read under the lock: another reader may release it too
		s.mu.Unlock()
		if last {
			closeHandles(pf.h)
		}

		return
	}

	pf.at = time.Now()
	if s.sweep == nil {
		s.sweep = time.AfterFunc(packIdle, s.closeIdle)
	}
	s.mu.Unlock()
}

// closeIdle closes the handles unused for packIdle, and comes back while any are open.
func (s *packFiles) closeIdle() {
	s.mu.Lock()
	now := time.Now()
	var hs []packHandle
	for id, pf := range s.files {
		if pf.refs == 0 && now.Sub(pf.at) >= packIdle {
			hs = append(hs, s.dropLocked(id))
		}
	}

	if len(s.files) > 0 && !s.closed {
		s.sweep.Reset(packIdle)
	} else {
		s.sweep = nil
	}
	s.mu.Unlock()

	closeHandles(hs...)
}

var packBufs = sync.Pool{New: func() any { b := make([]byte, packReadChunk); return &b }}

// osPack is a pack blob's local file.
type osPack struct{ *os.File }

// localPack is a pack blob's file in the repository. Once it has served spoolAfter small
// reads (as a remote pack's copy starts, pack_spool.go), the kernel is asked to read the
// whole pack ahead (FADV_WILLNEED): a pull's reads land all over a pack, which on a cold
// cache is a random read a file, and on NFS a round trip each.
type localPack struct {
	osPack
	reads smallReads
}

func (f *localPack) readRange(offset, length int64, out blob.OutputBuffer) error {
	if f.reads.often(length) {
		if rc, err := f.SyscallConn(); err == nil {
			_ = rc.Control(func(fd uintptr) {
				_ = unix.Fadvise(int(fd), 0, 0, unix.FADV_WILLNEED) // a hint: its failure changes nothing
			})
		}
	}
	return f.osPack.readRange(offset, length, out)
}

// readRange reads through a pooled buffer, packReadChunk at a time.
func (f osPack) readRange(offset, length int64, out blob.OutputBuffer) error {
	out.Reset()

	bp := packBufs.Get().(*[]byte) //nolint:forcetypeassert // the pool holds only these
	defer packBufs.Put(bp)

	buf := *bp
	for length > 0 {
		n := min(length, int64(len(buf)))
		if _, err := f.ReadAt(buf[:n], offset); err != nil {
			return err
		}

		if _, err := out.Write(buf[:n]); err != nil {
			return err
		}

		offset += n
		length -= n
	}

	return nil
}
