package dataplane

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/repo/blob"
	"github.com/kopia/kopia/repo/blob/filesystem"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// outBuf is a blob.OutputBuffer over a bytes.Buffer.
type outBuf struct{ bytes.Buffer }

func (b *outBuf) Length() int { return b.Len() }

// TestPackFilesReadLikeKopia reads ranges of a real repository's packs through the open pack
// files and through kopia's own filesystem storage: the same bytes, the same errors, at most
// packFilesOpen files open, and a deleted or closed storage's files closed.
func TestPackFilesReadLikeKopia(t *testing.T) {
	e := newEnv(t)
	makeManyFiles(t, e.src, 300, 3000)
	img := e.push().ImageID
	e.pull(img, "r1")
	requireSameTree(t, e.src, e.replicaDir())

	// The agent's client config names the storage type that reads through open files.
	lc, err := repo.LoadConfigFromFile(filepath.Join(e.cfg.clientDir(), "repository.config"))
	require.NoError(t, err)
	require.Equal(t, localStorageType, lc.Storage.Type)

	ctx := context.Background()
	plain, err := filesystem.New(ctx, &filesystem.Options{Path: e.cfg.Dir}, false)
	require.NoError(t, err)
	t.Cleanup(func() { _ = plain.Close(ctx) })
	st, err := newLocalStorage(ctx, &filesystem.Options{Path: e.cfg.Dir}, false)
	require.NoError(t, err)
	pf, ok := st.(*packFiles)
	require.True(t, ok, "kopia's filesystem storage no longer says where its blobs are: %T", st)

	packs := packsOf(t, plain)
	readRangesAlike(t, plain, pf, packs)

	pf.mu.Lock()
	open := len(pf.files)
	pf.mu.Unlock()
	require.Positive(t, open, "no pack file was kept open")
	require.LessOrEqual(t, open, packFilesOpen)

	// What kopia refuses is refused the same way: a missing pack, a range past the end.
	last := packs[len(packs)-1]
	_, err = readBlob(pf, "p0000000000000000000000000000000", 0, 10)
	require.ErrorIs(t, err, blob.ErrBlobNotFound)
	_, werr := readBlob(plain, last.BlobID, last.Length-5, 10)
	_, gerr := readBlob(pf, last.BlobID, last.Length-5, 10)
	require.Error(t, werr)
	require.Error(t, gerr)
	require.Equal(t, werr.Error(), gerr.Error())
	// A whole blob (length -1) is kopia's read.
	want, err := readBlob(plain, last.BlobID, 0, -1)
	require.NoError(t, err)
	got, err := readBlob(pf, last.BlobID, 0, -1)
	require.NoError(t, err)
	require.Equal(t, want, got)

	// A failed read dropped its file; the next read opens the pack again.
	pf.mu.Lock()
	require.Nil(t, pf.files[last.BlobID], "the file of a failed read was kept")
	pf.mu.Unlock()
	for _, m := range packs {
		b, err := readBlob(pf, m.BlobID, 0, 1)
		require.NoError(t, err)
		require.Len(t, b, 1)
	}
	pf.mu.Lock()
	require.NotNil(t, pf.files[last.BlobID])
	pf.mu.Unlock()

	// A deleted pack's file is closed (its space freed), and Close closes the rest.
	require.GreaterOrEqual(t, len(packs), 2)
	var kept blob.ID
	pf.mu.Lock()
	for id, f := range pf.files {
		if f.refs == 0 {
			kept = id
			break
		}
	}
	pf.mu.Unlock()
	require.NotEmpty(t, kept)
	pf.mu.Lock()
	fd := pf.files[kept].h.(*localPack).File
	pf.mu.Unlock()
	require.NoError(t, pf.DeleteBlob(ctx, kept))
	require.ErrorIs(t, fd.Close(), os.ErrClosed, "a deleted pack's file stayed open")
	pf.mu.Lock()
	var fds []*os.File
	for _, f := range pf.files {
		fds = append(fds, f.h.(*localPack).File)
	}
	pf.mu.Unlock()
	require.NotEmpty(t, fds)
	require.NoError(t, pf.Close(ctx))
	for _, f := range fds {
		require.ErrorIs(t, f.Close(), os.ErrClosed, "Close left a pack file open")
	}
}

// TestPackFilesCloseWhenIdle: files unused for packIdle are closed.
func TestPackFilesCloseWhenIdle(t *testing.T) {
	ctx := context.Background()
	pf := newEmptyPackFiles(t)
	for i := range 3 {
		require.NoError(t, pf.PutBlob(ctx, blob.ID(fmt.Sprintf("p%031d", i)), bytesOf(fmt.Sprintf("pack %d", i)), blob.PutOptions{}))
	}
	var b outBuf
	for i := range 3 {
		b.Reset()
		require.NoError(t, pf.GetBlob(ctx, blob.ID(fmt.Sprintf("p%031d", i)), 0, 6, &b))
		require.Equal(t, fmt.Sprintf("pack %d", i), b.String())
	}
	pf.mu.Lock()
	require.Len(t, pf.files, 3)
	for _, f := range pf.files {
		f.at = f.at.Add(-packIdle) // as if unused since then
	}
	pf.mu.Unlock()
	pf.closeIdle()
	pf.mu.Lock()
	defer pf.mu.Unlock()
	require.Empty(t, pf.files)
}

// packsOf lists st's pack blobs that hold something.
func packsOf(t *testing.T, st blob.Storage) []blob.Metadata {
	t.Helper()
	var packs []blob.Metadata
	require.NoError(t, st.ListBlobs(context.Background(), "", func(m blob.Metadata) error {
		if packBlob(m.BlobID) && m.Length > 0 {
			packs = append(packs, m)
		}
		return nil
	}))
	require.NotEmpty(t, packs)
	return packs
}

// readRangesAlike reads ranges of packs at random from four readers at once (run under
// -race in `make race`), through want and through got: the same bytes each time.
func readRangesAlike(t *testing.T, want, got blob.Storage, packs []blob.Metadata) {
	t.Helper()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for range 200 {
				m := packs[rng.IntN(len(packs))]
				off := rng.Int64N(m.Length)
				n := 1 + rng.Int64N(min(m.Length-off, 3*packReadChunk))
				wb, werr := readBlob(want, m.BlobID, off, n)
				gb, gerr := readBlob(got, m.BlobID, off, n)
				if werr != nil || gerr != nil || !bytes.Equal(wb, gb) {
					t.Errorf("%s at %d+%d: kopia %d bytes (%v), open file %d bytes (%v)", m.BlobID, off, n, len(wb), werr, len(gb), gerr)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// readBlob reads n bytes of id at off from s (n < 0: the whole blob).
func readBlob(s blob.Storage, id blob.ID, off, n int64) ([]byte, error) {
	var b outBuf
	err := s.GetBlob(context.Background(), id, off, n, &b)
	return b.Bytes(), err
}

// sliceBytes is a blob.Bytes of one slice.
type sliceBytes []byte

func (b sliceBytes) WriteTo(w io.Writer) (int64, error) {
	n, err := w.Write(b)
	return int64(n), err
}
func (b sliceBytes) Length() int { return len(b) }
func (b sliceBytes) Reader() io.ReadSeekCloser {
	return struct {
		*bytes.Reader
		io.Closer
	}{bytes.NewReader(b), io.NopCloser(nil)}
}

func bytesOf(s string) blob.Bytes { return sliceBytes(s) }

// TestPackFilesClientConfigMigrates: an agent's client config written before pack files were
// kept open (kopia's "filesystem" storage type) is connected again as localStorageType at the
// next open, and the repository reads as before.
func TestPackFilesClientConfigMigrates(t *testing.T) {
	e := newEnv(t)
	makeManyFiles(t, e.src, 50, 1000)
	img := e.push().ImageID
	require.NoError(t, e.repos.Close())

	ctx := context.Background()
	cfgFile := filepath.Join(e.cfg.clientDir(), "repository.config")
	require.NoError(t, repo.Disconnect(ctx, cfgFile))
	plain, err := filesystem.New(ctx, &filesystem.Options{Path: e.cfg.Dir}, false)
	require.NoError(t, err)
	require.NoError(t, writeClientConfig(ctx, plain, e.cfg, cfgFile))
	require.NoError(t, plain.Close(ctx))
	lc, err := repo.LoadConfigFromFile(cfgFile)
	require.NoError(t, err)
	require.Equal(t, "filesystem", lc.Storage.Type)

	e.pull(img, "r1")
	requireSameTree(t, e.src, e.replicaDir())
	lc, err = repo.LoadConfigFromFile(cfgFile)
	require.NoError(t, err)
	require.Equal(t, localStorageType, lc.Storage.Type)
}

// TestPackFilesAskReadAhead: a local pack that has served spoolAfter small reads is read
// ahead whole by the kernel (FADV_WILLNEED), so a pull's scattered reads of a cold pack
// stop being a disk read each.
func TestPackFilesAskReadAhead(t *testing.T) {
	ctx := context.Background()
	pf := newEmptyPackFiles(t)
	rng := rand.New(rand.NewPCG(5, 6))
	data := randomData(rng, 8<<20)
	id := blob.ID("p" + strings.Repeat("0", 31))
	require.NoError(t, pf.PutBlob(ctx, id, sliceBytes(data), blob.PutOptions{}))
	_, p, err := paths(pf).GetShardedPathAndFilePath(ctx, id)
	require.NoError(t, err)

	f, err := os.Open(p)
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, f.Sync())
	require.NoError(t, unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED))
	if r := resident(t, f, len(data)); r > 0.1 {
		t.Skipf("the pack's pages cannot be dropped on this filesystem (%.0f%% resident)", 100*r)
	}
	for i := range spoolAfter - 1 {
		off := rng.Int64N(int64(len(data)) - 4096)
		b, err := readBlob(pf, id, off, 4096)
		require.NoError(t, err)
		require.Equal(t, data[off:off+4096], b, "read %d", i)
	}
	require.Less(t, resident(t, f, len(data)), 0.5, "read ahead before %d small reads", spoolAfter)
	_, err = readBlob(pf, id, 0, 4096)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return resident(t, f, len(data)) > 0.9 }, 10*time.Second, 10*time.Millisecond,
		"the pack was not read ahead after %d small reads", spoolAfter)
}

// newEmptyPackFiles is a local storage in a new directory, read through open pack files.
func newEmptyPackFiles(t *testing.T) *packFiles {
	t.Helper()
	ctx := context.Background()
	st, err := newLocalStorage(ctx, &filesystem.Options{Path: t.TempDir()}, true)
	require.NoError(t, err)
	pf := st.(*packFiles) //nolint:forcetypeassert // TestPackFilesReadLikeKopia checks it
	t.Cleanup(func() { _ = pf.Close(ctx) })
	return pf
}

// randomData is n bytes from rng (n a multiple of 8).
func randomData(rng *rand.Rand, n int) []byte {
	data := make([]byte, n)
	fillRandom(rng, data)
	return data
}

// fillRandom fills buf with bytes from rng, 8 at a time (a tail shorter than 8 is left).
func fillRandom(rng *rand.Rand, buf []byte) {
	for i := 0; i+8 <= len(buf); i += 8 {
		binary.LittleEndian.PutUint64(buf[i:], rng.Uint64())
	}
}

// paths is the sharded layout of a local packFiles storage.
func paths(pf *packFiles) shardedPaths {
	return pf.Storage.(shardedPaths) //nolint:forcetypeassert // kopia's filesystem storage
}

// resident is the share of f's first n bytes in the page cache.
func resident(t *testing.T, f *os.File, n int) float64 {
	t.Helper()
	m, err := unix.Mmap(int(f.Fd()), 0, n, unix.PROT_READ, unix.MAP_SHARED)
	require.NoError(t, err)
	defer unix.Munmap(m) //nolint:errcheck
	vec := make([]byte, (n+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(n), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		require.NoError(t, errno, "mincore")
	}
	in := 0
	for _, v := range vec {
		in += int(v & 1)
	}
	return float64(in) / float64(len(vec))
}
