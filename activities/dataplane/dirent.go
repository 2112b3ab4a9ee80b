package dataplane

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// dirent is one entry of a directory listing with the type getdents64 gives (d_type):
// unix.DT_UNKNOWN where the filesystem does not keep it, so the caller must stat.
type dirent struct {
	name string
	typ  uint8
	ino  uint64 // d_ino: st_ino on the filesystems of listedInoFS (recycle_ino.go), not across a mount
}

// direntReader lists an open directory with getdents64, keeping each entry's d_type, so a
// walk that needs only names and types does not stat every entry (os.File.ReadDir would
// lstat a DT_UNKNOWN entry by its path, which a walk beneath a directory fd must not do).
type direntReader struct {
	fd  int
	buf []byte
	eof bool
}

func newDirentReader(fd int) *direntReader {
	return &direntReader{fd: fd, buf: make([]byte, 32<<10)}
}

// next appends the entries of the next getdents64 call to out ("." and ".." left out) and
// reports false once the directory is exhausted.
func (r *direntReader) next(out []dirent) ([]dirent, bool, error) {
	if r.eof {
		return out, false, nil
	}
	n, err := unix.Getdents(r.fd, r.buf)
	if err != nil {
		return out, false, err
	}
	if n == 0 {
		r.eof = true
		return out, false, nil
	}
	return parseDirents(r.buf[:n], out)
}

// parseDirents decodes linux_dirent64 records: d_ino (8 bytes), d_off (8), d_reclen (2),
// d_type (1), then the name, NUL-terminated and padded to d_reclen.
func parseDirents(b []byte, out []dirent) ([]dirent, bool, error) {
	const header = 19
	for len(b) > 0 {
		if len(b) < header {
			return out, false, fmt.Errorf("getdents64: %d bytes left, shorter than a record", len(b))
		}
		reclen := int(binary.NativeEndian.Uint16(b[16:18]))
		if reclen < header || reclen > len(b) {
			return out, false, fmt.Errorf("getdents64: record length %d of %d bytes left", reclen, len(b))
		}
		name := b[header:reclen]
		for i, c := range name {
			if c == 0 {
				name = name[:i]
				break
			}
		}
		if s := string(name); s != "." && s != ".." && s != "" {
			out = append(out, dirent{name: s, typ: b[18], ino: binary.NativeEndian.Uint64(b[0:8])})
		}
		b = b[reclen:]
	}
	return out, true, nil
}
