// Package worecord is the record of a write-once copy (design.md "Write once: the plan",
// step 2): what a source agent wrote into a target's incoming staging, entry by entry, with
// each file's BLAKE3 hash and the metadata the replica must have, authenticated with a key
// that both hosts derive from the job's repository password, which each reads from its own
// password file (Temporal never carries it).
//
// The target agent trusts nothing in the staging that the record does not vouch for: Check
// verifies the record's MAC and header, removes what the record lacks, re-hashes every file,
// creates the symlinks (the writer cannot), and then sets owners, modes and times from the
// record, never from what the writer left.
//
// The format is binary so that any name (not only UTF-8) travels exactly:
//
//	magic "RPLWOR1\n"
//	uvarint length, header JSON {"job","dataset","run","epoch"}
//	entries: type byte ('d', 'f', 'l', 'h', 'p', 's', 'c', 'b'), uvarint length + path,
//	         uint32 mode, uid, gid, int64 mtime (ns); 'f': uvarint size + 32-byte BLAKE3;
//	         'l', 'h': uvarint length + target; 'c', 'b': uint64 rdev;
//	         then uvarint count of xattrs, each uvarint length + name, uvarint length + value
//	type byte 0
//	32-byte HMAC-SHA256 of everything before it
package worecord

import (
	"bufio"
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"path"
	"strings"
)

const magic = "RPLWOR1\n"

// maxPath bounds a path or symlink target in a record (PATH_MAX).
const maxPath = 4096

// Header names the copy a record belongs to; Check refuses a record of another.
type Header struct {
	Job     string `json:"job"`
	Dataset string `json:"dataset"`
	Run     string `json:"run"`
	Epoch   int64  `json:"epoch"`
}

// Type is an entry's kind.
type Type byte

// The entry types a record holds.
const (
	Dir     Type = 'd'
	File    Type = 'f'
	Symlink Type = 'l'
	// Hardlink is another name of a recorded File (Target is that file's path).
	Hardlink Type = 'h'
	Fifo     Type = 'p'
	Socket   Type = 's'
	Char     Type = 'c' // a character device (Rdev)
	Block    Type = 'b' // a block device (Rdev)
)

// special reports whether t is a FIFO, a socket or a device: entries the target creates.
func (t Type) special() bool { return t == Fifo || t == Socket || t == Char || t == Block }

// made reports whether the target creates entries of type t itself rather than finding them
// in the staging (the writer can only write directories and regular files).
func (t Type) made() bool { return t == Symlink || t == Hardlink || t.special() }

// Entry is one entry of the copied tree. Path is relative to the tree, slash-separated,
// "." for the tree's root.
type Entry struct {
	Type     Type
	Path     string
	Mode     uint32 // permission bits and setuid, setgid, sticky (07777)
	UID, GID uint32
	MtimeNs  int64
	Size     int64    // File
	Hash     [32]byte // File: BLAKE3 of the content
	Target   string   // Symlink: its target; Hardlink: the path of the recorded File
	Rdev     uint64   // Char, Block
	Xattrs   []Xattr  // every extended attribute (ACLs and capabilities are ones), in order
}

// Xattr is one extended attribute of an entry.
type Xattr struct {
	Name  string
	Value []byte
}

// Limits of extended attributes a record holds (the kernel's XATTR_NAME_MAX and
// XATTR_SIZE_MAX; at most maxXattrs per entry).
const (
	maxXattrName  = 255
	maxXattrValue = 64 << 10
	maxXattrs     = 4096
)

// Key derives the record key of one job's dataset from the repository password: a record
// cannot be moved to another job or dataset, and the password itself is never used as a key.
func Key(password []byte, job, dataset string) ([]byte, error) {
	if len(password) == 0 {
		return nil, errors.New("write-once record key: the repository password is empty")
	}
	return hkdf.Key(sha256.New, password, nil, "replctl write-once record\x00"+job+"\x00"+dataset, 32)
}

// Writer writes a record; Close appends the end marker and the MAC.
type Writer struct {
	w   *bufio.Writer
	mac hash.Hash
	buf []byte
	err error
}

// NewWriter starts a record of h on w.
func NewWriter(w io.Writer, key []byte, h Header) (*Writer, error) {
	hj, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	rw := &Writer{w: bufio.NewWriterSize(w, 256<<10), mac: hmac.New(sha256.New, key)}
	rw.put([]byte(magic))
	rw.buf = binary.AppendUvarint(rw.buf[:0], uint64(len(hj)))
	rw.put(rw.buf)
	rw.put(hj)
	return rw, rw.err
}

func (w *Writer) put(b []byte) {
	if w.err != nil {
		return
	}
	w.mac.Write(b)
	_, w.err = w.w.Write(b)
}

// Add appends e. It refuses a path or target a record cannot hold.
func (w *Writer) Add(e Entry) error {
	if err := checkPath(e.Path); err != nil {
		return err
	}
	b := append(w.buf[:0], byte(e.Type))
	b = binary.AppendUvarint(b, uint64(len(e.Path)))
	b = append(b, e.Path...)
	b = binary.LittleEndian.AppendUint32(b, e.Mode&0o7777)
	b = binary.LittleEndian.AppendUint32(b, e.UID)
	b = binary.LittleEndian.AppendUint32(b, e.GID)
	b = binary.LittleEndian.AppendUint64(b, uint64(e.MtimeNs))
	switch e.Type {
	case Dir:
	case File:
		if e.Size < 0 {
			return fmt.Errorf("record: %q: negative size %d", e.Path, e.Size)
		}
		b = binary.AppendUvarint(b, uint64(e.Size))
		b = append(b, e.Hash[:]...)
	case Symlink, Hardlink:
		if e.Target == "" || len(e.Target) > maxPath || strings.IndexByte(e.Target, 0) >= 0 {
			return fmt.Errorf("record: link %q: target of %d bytes cannot be recorded", e.Path, len(e.Target))
		}
		if e.Type == Hardlink {
			if err := checkPath(e.Target); err != nil || e.Target == "." {
				return fmt.Errorf("record: hard link %q: %q is not a path in the tree", e.Path, e.Target)
			}
		}
		b = binary.AppendUvarint(b, uint64(len(e.Target)))
		b = append(b, e.Target...)
	case Fifo, Socket:
	case Char, Block:
		b = binary.LittleEndian.AppendUint64(b, e.Rdev)
	default:
		return fmt.Errorf("record: %q: unknown type %q", e.Path, e.Type)
	}
	if len(e.Xattrs) > maxXattrs {
		return fmt.Errorf("record: %q has %d extended attributes, more than %d", e.Path, len(e.Xattrs), maxXattrs)
	}
	b = binary.AppendUvarint(b, uint64(len(e.Xattrs)))
	for _, x := range e.Xattrs {
		if x.Name == "" || len(x.Name) > maxXattrName || strings.IndexByte(x.Name, 0) >= 0 || len(x.Value) > maxXattrValue {
			return fmt.Errorf("record: %q: extended attribute %q (%d bytes) cannot be recorded", e.Path, x.Name, len(x.Value))
		}
		b = binary.AppendUvarint(b, uint64(len(x.Name)))
		b = append(b, x.Name...)
		b = binary.AppendUvarint(b, uint64(len(x.Value)))
		b = append(b, x.Value...)
	}
	w.buf = b
	w.put(b)
	return w.err
}

// Close ends the record with its MAC and flushes it.
func (w *Writer) Close() error {
	w.put([]byte{0})
	if w.err != nil {
		return w.err
	}
	if _, err := w.w.Write(w.mac.Sum(nil)); err != nil {
		return err
	}
	return w.w.Flush()
}

// checkPath refuses a path that is not relative, clean and free of NUL.
func checkPath(p string) error {
	if p == "." {
		return nil
	}
	if p == "" || len(p) > maxPath || strings.IndexByte(p, 0) >= 0 || path.IsAbs(p) || path.Clean(p) != p ||
		p == ".." || strings.HasPrefix(p, "../") {
		return fmt.Errorf("record: path %q is not a clean relative path", p)
	}
	return nil
}

// ErrRecord means a record is damaged, forged, or of another copy.
var ErrRecord = errors.New("write-once record refused")

// Read reads a whole record from b, checks its MAC with key and that its header is want,
// and returns its entries. A record with any flaw is refused as a whole.
func Read(b []byte, key []byte, want Header) ([]Entry, error) {
	if len(b) < len(magic)+1+sha256.Size || string(b[:len(magic)]) != magic {
		return nil, fmt.Errorf("%w: not a write-once record", ErrRecord)
	}
	body, sum := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	m := hmac.New(sha256.New, key)
	m.Write(body)
	if !hmac.Equal(m.Sum(nil), sum) {
		return nil, fmt.Errorf("%w: its MAC does not match (damaged, or not written with this job's repository password)", ErrRecord)
	}
	r := &reader{b: body[len(magic):]}
	var h Header
	if err := json.Unmarshal(r.bytes(), &h); r.err != nil || err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrRecord, errors.Join(r.err, err))
	}
	if h != want {
		return nil, fmt.Errorf("%w: it is the record of %+v, not of %+v", ErrRecord, h, want)
	}
	var out []Entry
	for {
		t := r.byte()
		if r.err != nil {
			return nil, fmt.Errorf("%w: %v", ErrRecord, r.err)
		}
		if t == 0 {
			break
		}
		e := Entry{Type: Type(t), Path: string(r.bytes())}
		e.Mode, e.UID, e.GID = r.u32(), r.u32(), r.u32()
		e.MtimeNs = int64(r.u64())
		switch e.Type {
		case Dir:
		case File:
			e.Size = int64(r.uvarint())
			copy(e.Hash[:], r.n(32))
		case Symlink, Hardlink:
			e.Target = string(r.bytes())
		case Fifo, Socket:
		case Char, Block:
			e.Rdev = r.u64()
		default:
			return nil, fmt.Errorf("%w: entry %d has unknown type %q", ErrRecord, len(out), t)
		}
		if n := r.uvarint(); n > maxXattrs {
			return nil, fmt.Errorf("%w: entry %d has %d extended attributes", ErrRecord, len(out), n)
		} else {
			for range n {
				x := Xattr{Name: string(r.bytes()), Value: r.bytes()}
				if x.Name == "" || len(x.Name) > maxXattrName || len(x.Value) > maxXattrValue {
					return nil, fmt.Errorf("%w: entry %d: extended attribute %q of %d bytes", ErrRecord, len(out), x.Name, len(x.Value))
				}
				e.Xattrs = append(e.Xattrs, x)
			}
		}
		if r.err != nil {
			return nil, fmt.Errorf("%w: entry %d: %v", ErrRecord, len(out), r.err)
		}
		if err := checkPath(e.Path); err != nil {
			return nil, fmt.Errorf("%w: entry %d: %v", ErrRecord, len(out), err)
		}
		if e.Size < 0 {
			return nil, fmt.Errorf("%w: entry %d: negative size", ErrRecord, len(out))
		}
		if e.Type == Hardlink {
			if err := checkPath(e.Target); err != nil || e.Target == "." {
				return nil, fmt.Errorf("%w: entry %d: hard link to %q", ErrRecord, len(out), e.Target)
			}
		}
		out = append(out, e)
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the end marker", ErrRecord, len(r.b))
	}
	return out, nil
}

// reader decodes a record's body; the first error sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) n(k int) []byte {
	if r.err != nil {
		return make([]byte, k)
	}
	if len(r.b) < k {
		r.err = io.ErrUnexpectedEOF
		return make([]byte, k)
	}
	out := r.b[:k]
	r.b = r.b[k:]
	return out
}

func (r *reader) byte() byte  { return r.n(1)[0] }
func (r *reader) u32() uint32 { return binary.LittleEndian.Uint32(r.n(4)) }
func (r *reader) u64() uint64 { return binary.LittleEndian.Uint64(r.n(8)) }

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, k := binary.Uvarint(r.b)
	if k <= 0 {
		r.err = errors.New("bad varint")
		return 0
	}
	r.b = r.b[k:]
	return v
}

func (r *reader) bytes() []byte {
	k := r.uvarint()
	if k > maxPath+1<<20 {
		r.err = fmt.Errorf("length %d is too long", k)
		return nil
	}
	return bytes.Clone(r.n(int(k)))
}
