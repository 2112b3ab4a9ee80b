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

import (
	"context"
	"os"
	"sync"
	"time"

	"github.com/kopia/kopia/repo/blob"
	"github.com/kopia/kopia/repo/blob/filesystem"
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

// shardedPaths is what kopia's filesystem storage tells of where a blob is.
type shardedPaths interface {
	GetShardedPathAndFilePath(ctx context.Context, id blob.ID) (shardPath, filePath string, err error)
}

// newLocalStorage opens kopia's filesystem storage at opts.Path with pack reads through
// open files.
func newLocalStorage(ctx context.Context, opts *filesystem.Options, isCreate bool) (blob.Storage, error) {
	st, err := filesystem.New(ctx, opts, isCreate)
	if err != nil {
		return nil, err
	}

	return withPackFiles(st), nil
}

// withPackFiles wraps kopia's filesystem storage st. A storage that does not say where its
// blobs are (another kopia version) is returned as it is.
func withPackFiles(st blob.Storage) blob.Storage {
	paths, ok := st.(shardedPaths)
	if !ok {
		return st
	}

	return &packFiles{Storage: st, paths: paths, files: map[blob.ID]*packFile{}}
}

// packFiles is kopia's filesystem storage with pack reads through open files.
type packFiles struct {
	blob.Storage

	paths shardedPaths

	mu     sync.Mutex
	files  map[blob.ID]*packFile
	tick   uint64
	sweep  *time.Timer
	closed bool
}

type packFile struct {
	f    *os.File
	refs int
	used uint64    // tick of the last use, for eviction
	at   time.Time // time of the last release
}

// packBlob tells whether id names a pack blob (file contents 'p', metadata 'q').
func packBlob(id blob.ID) bool {
	return len(id) > 1 && (id[0] == 'p' || id[0] == 'q')
}

// ConnectionInfo is kopia's, under this storage type, so that the client config opens the
// repository through packFiles again.
func (s *packFiles) ConnectionInfo() blob.ConnectionInfo {
	ci := s.Storage.ConnectionInfo()
	ci.Type = localStorageType

	return ci
}

// GetBlob reads a range of a pack through its open file, anything else through kopia.
func (s *packFiles) GetBlob(ctx context.Context, id blob.ID, offset, length int64, output blob.OutputBuffer) error {
	if length <= 0 || offset < 0 || !packBlob(id) {
		return s.Storage.GetBlob(ctx, id, offset, length, output)
	}

	pf := s.acquire(ctx, id)
	if pf == nil {
		return s.Storage.GetBlob(ctx, id, offset, length, output)
	}

	err := readRange(pf.f, offset, length, output)
	s.release(id, pf)

	if err != nil {
		return s.Storage.GetBlob(ctx, id, offset, length, output)
	}

	return nil
}

// DeleteBlob deletes through kopia and closes the blob's file, so its space is freed.
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

// forget drops id's file from the cache; the last reader closes a file in use.
func (s *packFiles) forget(id blob.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()

	if pf := s.files[id]; pf != nil {
		delete(s.files, id)

		if pf.refs == 0 {
			_ = pf.f.Close()
		}
	}
}

// Close closes every pack file, then kopia's storage.
func (s *packFiles) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	for id, pf := range s.files {
		delete(s.files, id)

		if pf.refs == 0 {
			_ = pf.f.Close()
		}
	}
	if s.sweep != nil {
		s.sweep.Stop()
	}
	s.mu.Unlock()

	return s.Storage.Close(ctx)
}

// acquire returns id's open file (opening it), or nil: read it through kopia.
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

	_, p, err := s.paths.GetShardedPathAndFilePath(ctx, id)
	if err != nil {
		return nil
	}

	f, err := os.Open(p) //nolint:gosec // a blob's path in the repository, from kopia
	if err != nil {
		return nil
	}

	s.mu.Lock()
	defer s.mu.Unlock()

	if other := s.files[id]; other != nil { // opened meanwhile by another reader
		_ = f.Close()
		other.refs++
		other.used = s.tick

		return other
	}

	pf := &packFile{f: f, refs: 1, used: s.tick}
	if !s.closed && s.makeRoom() {
		s.files[id] = pf
	}

	return pf
}

// makeRoom closes the least recently used idle file when the cache is full; false: every
// file is in use, so the caller's is not kept. s.mu is held.
func (s *packFiles) makeRoom() bool {
	if len(s.files) < packFilesOpen {
		return true
	}

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
		return false
	}

	_ = s.files[oldest].f.Close()
	delete(s.files, oldest)

	return true
}

// release ends a read of id through pf; a file not (or no longer) kept is closed.
func (s *packFiles) release(id blob.ID, pf *packFile) {
	s.mu.Lock()
	defer s.mu.Unlock()

	pf.refs--
	if s.files[id] != pf {
		if pf.refs == 0 {
			_ = pf.f.Close()
		}

		return
	}

	pf.at = time.Now()
	if s.sweep == nil {
		s.sweep = time.AfterFunc(packIdle, s.closeIdle)
	}
}

// closeIdle closes the files unused for packIdle, and comes back while any are open.
func (s *packFiles) closeIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()

	now := time.Now()
	for id, pf := range s.files {
		if pf.refs == 0 && now.Sub(pf.at) >= packIdle {
			_ = pf.f.Close()
			delete(s.files, id)
		}
	}

	if len(s.files) > 0 && !s.closed {
		s.sweep.Reset(packIdle)
		return
	}

	s.sweep = nil
}

var packBufs = sync.Pool{New: func() any { b := make([]byte, packReadChunk); return &b }}

// readRange writes length bytes of f at offset to out; a short read is an error.
func readRange(f *os.File, offset, length int64, out blob.OutputBuffer) error {
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
