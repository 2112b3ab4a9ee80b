package dataplane

import (
	"encoding/binary"
	"errors"
	"io"
	"os"
	"sync"

	"github.com/kopia/kopia/repo/content"
	"golang.org/x/sys/unix"
)

// Sparse files: a pull never writes a block of zeros. Contents are written
// block by block (holeBlock, aligned to file offsets); an all-zero block is
// skipped, so it stays a hole of the new file, and the file's size is set by
// ftruncate at the end (trailing holes). A hole reads back as zeros, so the
// file's content is the image's. kopia stores a run of zeros as many
// references to one all-zero content: once a content is seen to be all zeros,
// its further references are neither read nor decompressed.

// holeBlock is the granularity of holes (the usual file system block size).
const holeBlock = 4096

// allZero reports whether b holds only zero bytes (8 bytes a step).
func allZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}

		b = b[8:]
	}

	for _, c := range b {
		if c != 0 {
			return false
		}
	}

	return true
}

// sparseFile is a new file being written once, with holes where its data is zeros.
type sparseFile struct {
	fd int
	// end is where the last byte written ends: the file's size, which is short of the
	// entry's size when the file ends in a hole.
	end int64
}

// write writes data at off except its all-zero blocks, which are left as holes. The file
// must read as zeros there (a new file, written once).
func (sf *sparseFile) write(data []byte, off int64) error {
	for len(data) > 0 {
		// Up to the next block boundary of the file.
		n := int(holeBlock - off%holeBlock)
		if n > len(data) {
			n = len(data)
		}

		if allZero(data[:n]) {
			data, off = data[n:], off+int64(n)
			continue
		}

		// A run of blocks with data, written at once.
		end := n
		for end < len(data) {
			m := min(holeBlock, len(data)-end)
			if allZero(data[end : end+m]) {
				break
			}

			end += m
		}

		if err := pwriteAll(sf.fd, data[:end], off); err != nil {
			return err
		}

		sf.end = max(sf.end, off+int64(end))

		data, off = data[end:], off+int64(end)
	}

	return nil
}

// pwriteAll writes all of data at off.
func pwriteAll(fd int, data []byte, off int64) error {
	for len(data) > 0 {
		n, err := unix.Pwrite(fd, data, off)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return err
		case n == 0:
			return io.ErrShortWrite
		}
		data, off = data[n:], off+int64(n)
	}
	return nil
}

// zeroContents remembers contents seen to be all zeros, with their lengths.
type zeroContents struct{ m sync.Map } // content.ID -> int64

func (z *zeroContents) add(cid content.ID, n int64) { z.m.Store(cid, n) }

// has reports whether cid is an all-zero content of n bytes.
func (z *zeroContents) has(cid content.ID, n int64) bool {
	v, ok := z.m.Load(cid)
	return ok && v.(int64) == n
}

// isHole reports whether f[start:start+length] is a hole (reads as zeros
// without data blocks), per SEEK_DATA; false when the file system cannot say.
func isHole(f *os.File, start, length int64) bool {
	d, err := unix.Seek(int(f.Fd()), start, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) {
		return true // no data at or after start
	}

	return err == nil && d >= start+length
}

// zeroIDs caches the content ID of n zero bytes by (prefix, n).
type zeroIDs struct {
	mu sync.Mutex
	m  map[zeroKey]content.ID
}

type zeroKey struct {
	prefix content.IDPrefix
	n      int64
}

// id returns the content ID that n zero bytes hash to (hash computed once per
// prefix and length).
func (z *zeroIDs) id(h func([]byte) []byte, prefix content.IDPrefix, n int64) (content.ID, error) {
	z.mu.Lock()
	defer z.mu.Unlock()

	if id, ok := z.m[zeroKey{prefix, n}]; ok {
		return id, nil
	}

	id, err := content.IDFromHash(prefix, h(make([]byte, n)))
	if err != nil {
		return content.ID{}, err
	}

	if z.m == nil {
		z.m = map[zeroKey]content.ID{}
	}

	z.m[zeroKey{prefix, n}] = id

	return id, nil
}
