package fidelity

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// node is what Compare knows of one entry of a tree, all read without following symlinks.
type node struct {
	typ      uint32 // S_IFMT bits
	mode     uint32 // the 12 permission bits
	uid, gid uint32
	size     int64
	mtime    unix.Timespec
	rdev     uint64
	ino      uint64
	blocks   int64 // 512-byte blocks allocated
	target   string
	xattrs   map[string]string
	sum      [sha256.Size]byte // of the content, holes read as zeros
	data     []span            // data ranges (SEEK_DATA/SEEK_HOLE) of a regular file
}

// span is one data range [Off, End) of a file.
type span struct{ Off, End int64 }

// tree maps each relative path ("." for the root) to its node.
type tree map[string]*node

// keptXattr reports whether Compare compares xattr name: user., trusted., security. and
// the two POSIX ACLs; other system. names are filesystem internals.
func keptXattr(name string) bool {
	return strings.HasPrefix(name, "user.") || strings.HasPrefix(name, "trusted.") ||
		strings.HasPrefix(name, "security.") ||
		name == "system.posix_acl_access" || name == "system.posix_acl_default"
}

type scanner struct {
	root  string
	t     tree
	buf   []byte // reading content
	names []byte // llistxattr
}

// scan reads root and everything below it. root itself is resolved if it is a symlink (a
// replica is published through one); nothing below it is followed.
func scan(root string) (tree, error) {
	real, err := filepath.EvalSymlinks(root)
	if err != nil {
		return nil, fmt.Errorf("fidelity: %w", err)
	}
	s := &scanner{root: real, t: tree{}, buf: make([]byte, 1<<20), names: make([]byte, 4096)}
	if err := s.walk("."); err != nil {
		return nil, fmt.Errorf("fidelity: scan %s: %w", root, err)
	}
	return s.t, nil
}

func (s *scanner) walk(rel string) error {
	p := filepath.Join(s.root, rel)
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return fmt.Errorf("lstat %q: %w", rel, err)
	}
	n := &node{
		typ: st.Mode & unix.S_IFMT, mode: st.Mode & 0o7777, uid: st.Uid, gid: st.Gid,
		size: st.Size, mtime: st.Mtim, rdev: st.Rdev, ino: st.Ino, blocks: st.Blocks,
	}
	s.t[rel] = n
	var err error
	if n.xattrs, err = s.xattrs(p); err != nil {
		return fmt.Errorf("xattrs of %q: %w", rel, err)
	}
	switch n.typ {
	case unix.S_IFLNK:
		if n.target, err = os.Readlink(p); err != nil {
			return err
		}
	case unix.S_IFREG:
		if err := s.content(p, n); err != nil {
			return fmt.Errorf("content of %q: %w", rel, err)
		}
	case unix.S_IFDIR:
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		names, err := f.Readdirnames(-1)
		f.Close()
		if err != nil {
			return err
		}
		for _, name := range names {
			if err := s.walk(filepath.Join(rel, name)); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *scanner) xattrs(p string) (map[string]string, error) {
	var n int
	var err error
	for {
		n, err = unix.Llistxattr(p, s.names)
		if errors.Is(err, unix.ERANGE) {
			s.names = make([]byte, 2*len(s.names))
			continue
		}
		if errors.Is(err, unix.EOPNOTSUPP) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		break
	}
	var out map[string]string
	for _, name := range bytes.Split(s.names[:n], []byte{0}) {
		if len(name) == 0 || !keptXattr(string(name)) {
			continue
		}
		v, err := lgetxattr(p, string(name))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if out == nil {
			out = map[string]string{}
		}
		out[string(name)] = v
	}
	return out, nil
}

func lgetxattr(p, name string) (string, error) {
	size, err := unix.Lgetxattr(p, name, nil)
	for err == nil {
		b := make([]byte, size)
		var n int
		n, err = unix.Lgetxattr(p, name, b)
		if err == nil {
			return string(b[:n]), nil
		}
		if errors.Is(err, unix.ERANGE) { // grew in between
			size, err = unix.Lgetxattr(p, name, nil)
		}
	}
	return "", err
}

// hashBlock is the unit of the content hash: each block is hashed as 'Z' when it is all
// zeros (a hole, or zeros written out) and as 'D' and its bytes otherwise, so the hash
// does not depend on the layout and the holes of a large sparse file cost next to nothing.
const hashBlock = 4096

var zeroBlock [hashBlock]byte

// content records the data ranges of a regular file and hashes its bytes.
func (s *scanner) content(p string, n *node) error {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EPERM) { // O_NOATIME on a file we do not own without CAP_FOWNER
		f, err = os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fd := int(f.Fd())
	for off := int64(0); off < n.size; {
		d, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) { // no data after off
			break
		}
		if err != nil {
			return err
		}
		h, err := unix.Seek(fd, d, unix.SEEK_HOLE)
		if err != nil {
			return err
		}
		n.data = append(n.data, span{d, h})
		off = h
	}
	hash := sha256.New()
	fmt.Fprintf(hash, "%d\n", n.size)
	zeros := func(blocks int64) {
		for ; blocks > 0; blocks-- {
			hash.Write([]byte{'Z'})
		}
	}
	pos := int64(0) // always at a block boundary
	for _, sp := range n.data {
		if start := sp.Off / hashBlock * hashBlock; start > pos {
			zeros((start - pos) / hashBlock)
			pos = start
		}
		end := min((sp.End+hashBlock-1)/hashBlock*hashBlock, n.size)
		for pos < end {
			k := int(min(end-pos, int64(len(s.buf)))) // whole blocks but at the file's end
			if got, err := f.ReadAt(s.buf[:k], pos); got < k {
				return fmt.Errorf("short read at %d (changed while read?): %w", pos, err)
			}
			for b := 0; b < k; b += hashBlock {
				blk := s.buf[b:min(b+hashBlock, k)]
				if bytes.Equal(blk, zeroBlock[:len(blk)]) {
					hash.Write([]byte{'Z'})
				} else {
					hash.Write([]byte{'D'})
					hash.Write(blk)
				}
			}
			pos += int64(k)
		}
	}
	if pos < n.size {
		zeros((n.size - pos + hashBlock - 1) / hashBlock)
	}
	copy(n.sum[:], hash.Sum(nil))
	return nil
}
